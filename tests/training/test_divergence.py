"""Non-finite steps the host never looked at still stop the run.

On accelerators the trainer reads metrics only at log, save, evaluation and
callback steps. These tests run that schedule on CPU
(`trainer.sync_every_step` patched to False; one device, so no XLA:CPU
collective can deadlock) and poison one batch between two looks: a token id
outside the vocabulary, whose log-probability JAX's gather fills with NaN,
as corrupt data would.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from demix_jax.training import checkpointing
from demix_jax.training import config as train_config
from demix_jax.training import divergence
from demix_jax.training import optim
from demix_jax.training import synthetic
from demix_jax.training import trainer
from tests import kit

CFG = kit.tiny_model()
OPT = optim.OptimConfig(peak_lr=1e-2, warmup_steps=2)
B, T = 4, 32


class PoisonAt:
  """Synthetic batches; the batches of `steps` (1-based) carry a token id
  outside the vocabulary. Which batch is poisoned follows the iterator's
  own state, so a run restored from a checkpoint meets it again."""

  def __init__(self, steps=()):
    self.it = synthetic.SyntheticIterator(B, T, CFG.vocab_size)
    self.steps = set(steps)

  def __iter__(self):
    return self

  def __next__(self):
    b = dict(next(self.it))
    if self.it.get_state()["index"] in self.steps:
      b["tokens"] = b["tokens"].copy()
      b["tokens"][0, 1] = CFG.vocab_size + 7  # a counted target (seg 1)
    return b

  def get_state(self):
    return self.it.get_state()

  def set_state(self, state):
    self.it.set_state(state)


def _tc(**kw):
  kw.setdefault("log_every_steps", 4)
  kw.setdefault("checkpoint_every_steps", 4)
  return train_config.TrainConfig(
      global_batch_size=B,
      seq_len=T,
      total_tokens=B * T * 8,
      peak_flops=1e10,
      mesh_axes={"data": 1, "fsdp": 1, "tensor": 1},
      keep_last=5,
      **kw,
  )


def _train(run_dir, it, tc=None, **kw):
  return trainer.train(
      CFG, OPT, tc or _tc(), run_dir, it, devices=jax.devices()[:1], **kw
  )


def _saved_steps(run_dir):
  d = checkpointing.checkpoint_dir(run_dir)
  if not d.exists():
    return []
  return sorted(int(x) for x in os.listdir(d) if x.isdigit())


@pytest.fixture
def async_host(monkeypatch):
  monkeypatch.setattr(trainer, "sync_every_step", lambda: False)


def _assert_params_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_poisoned_step_between_looks_stops_before_the_next_save(
    tmp_path, async_host
):
  clean = _train(tmp_path / "clean", PoisonAt())
  assert _saved_steps(tmp_path / "clean") == [4, 8]
  # Looks at 4 and 8 only (log = save = every 4); step 6 is poisoned.
  msg = (
      r"step 6: non-finite loss/gradients in 1 step between steps 5 and 8;"
      r".* stopped at step 8, the host's first look since step 4\..*"
      r"last good checkpoint is step 4"
  )
  with pytest.raises(divergence.TrainingDivergedError, match=msg):
    _train(tmp_path / "bad", PoisonAt([6]))
  # Nothing after the poisoned step was saved; step 4 is the clean run's.
  assert _saved_steps(tmp_path / "bad") == [4]
  _assert_params_equal(
      checkpointing.load_params(tmp_path / "bad", step=4),
      checkpointing.load_params(tmp_path / "clean", step=4),
  )
  assert clean.steps == 8
  # A rerun restores step 4, replays the same batches and stops again.
  with pytest.raises(divergence.TrainingDivergedError, match=msg):
    _train(tmp_path / "bad", PoisonAt([6]))
  assert _saved_steps(tmp_path / "bad") == [4]


@pytest.mark.slow
def test_every_look_checks_and_the_message_names_the_range(
    tmp_path, async_host
):
  # An evaluation is a look: with logs and saves at 8 only, held-out
  # evaluation at step 4 finds steps 2 and 3 and stops before evaluating.
  seen = []
  tc = _tc(log_every_steps=8, checkpoint_every_steps=8, eval_every_steps=4)
  eval_data = {"syn": lambda: synthetic.SyntheticIterator(B, T, 64, seed=9)}
  with pytest.raises(
      divergence.TrainingDivergedError,
      match=r"steps 2-3: non-finite loss/gradients in 2 steps between steps "
      r"1 and 4;.*last good checkpoint is step 0",
  ):
    _train(
        tmp_path / "ev",
        PoisonAt([2, 3]),
        tc,
        eval_data=eval_data,
        progress=seen.append,
    )
  assert seen == [1, 2, 3]  # stopped at the look (step 4), no further
  assert _saved_steps(tmp_path / "ev") == []
  rows = (tmp_path / "ev" / "metrics.jsonl").read_text()
  assert "heldout/" not in rows
  # A step callback reads every step, so the poisoned step itself stops it,
  # with its own loss quoted.
  with pytest.raises(
      divergence.TrainingDivergedError,
      match=r"step 3: non-finite .* between steps 3 and 3 \(step 3: loss=nan",
  ):
    _train(tmp_path / "cb", PoisonAt([3]), step_callback=lambda s, m: None)


def test_track_counts_first_and_last_non_finite_step():
  oks = [True, False, True, False, False, True]
  steps = iter(oks)

  def fake_step(params, opt_state, batch):
    return params, opt_state, {"ok": jnp.asarray(next(steps))}

  tracked = divergence.track(fake_step)
  health = divergence.initial(10)
  for _ in oks:
    _, _, _, health = tracked(None, None, None, health)
  h = jax.device_get(health)
  assert (int(h["step"]), int(h["nonfinite"])) == (16, 3)
  assert (int(h["first"]), int(h["last"])) == (12, 15)
  with pytest.raises(
      divergence.TrainingDivergedError,
      match=r"^steps 12-15: non-finite loss/gradients in 3 steps between "
      r"steps 11 and 16;.*step 10 in /ck,",
  ):
    divergence.check(h, step=16, since=10, last_good=10, checkpoints="/ck")
  divergence.check(
      divergence.initial(3), step=4, since=3, last_good=0, checkpoints="/ck"
  )
  assert set(divergence.abstract()) == set(divergence.HEALTH_KEYS)
