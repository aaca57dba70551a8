"""Tests of the trainer: sharding invariance, init-from-base, metrics, NaN."""

import dataclasses
import json
import os

import jax
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


def _tc(steps, data=1, **kw):
  kw.setdefault("log_every_steps", 2)
  kw.setdefault("checkpoint_every_steps", 100)
  return train_config.TrainConfig(
      global_batch_size=B,
      seq_len=T,
      total_tokens=B * T * steps,
      peak_flops=1e10,
      mesh_axes={"data": data, "fsdp": 1, "tensor": 1},
      **kw,
  )


def _it(seed=0, **kw):
  return synthetic.SyntheticIterator(B, T, CFG.vocab_size, seed=seed, **kw)


@pytest.mark.slow
def test_two_device_mesh_matches_one_device(tmp_path):
  r1 = trainer.train(
      CFG,
      OPT,
      _tc(5, data=1),
      tmp_path / "one",
      _it(),
      devices=jax.devices()[:1],
  )
  r2 = trainer.train(
      CFG,
      OPT,
      _tc(5, data=2),
      tmp_path / "two",
      _it(),
      devices=jax.devices()[:2],
  )
  l1, l2 = np.array(r1.losses), np.array(r2.losses)
  assert l1.shape == (5, 2) and l1[-1, 1] < l1[0, 1]
  np.testing.assert_allclose(l2, l1, rtol=0, atol=1e-5)
  # Gradient accumulation over 2 micro-batches equals the full batch.
  r3 = trainer.train(
      CFG,
      OPT,
      _tc(5, data=2, grad_accum_steps=2),
      tmp_path / "acc",
      _it(),
      devices=jax.devices()[:2],
  )
  np.testing.assert_allclose(np.array(r3.losses), l1, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_init_from_base_params_only(tmp_path):
  base = trainer.train(
      CFG,
      OPT,
      _tc(3, budgets=(B * T * 2,)),
      tmp_path / "base",
      _it(),
      devices=jax.devices()[:1],
  )
  assert base.budget_checkpoints == {
      B * T * 2: str(tmp_path / "base" / "checkpoints" / "2")
  }
  # Zero learning rate: the component's params must stay exactly the base's.
  comp = trainer.train(
      CFG,
      dataclasses.replace(OPT, peak_lr=0.0),
      _tc(2, init_from=str(tmp_path / "base")),
      tmp_path / "comp",
      _it(5),
      devices=jax.devices()[:1],
  )
  assert comp.restored_from == "init_from"
  for a, b in zip(jax.tree.leaves(base.params), jax.tree.leaves(comp.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Fresh optimizer: Adam's step count is the component's own 2 steps.
  counts = [int(x) for x in jax.tree.leaves(comp.opt_state) if np.ndim(x) == 0]
  assert counts and all(c == 2 for c in counts)
  meta = checkpointing.read_metadata(tmp_path / "comp")
  assert meta["step"] == 2 and meta["init_from"] == str(tmp_path / "base")
  # From the budget checkpoint (step 2) instead of the latest.
  comp2 = trainer.train(
      CFG,
      dataclasses.replace(OPT, peak_lr=0.0),
      _tc(1, init_from=str(tmp_path / "base"), init_from_tokens=B * T * 2),
      tmp_path / "comp2",
      _it(5),
      devices=jax.devices()[:1],
  )
  at2 = checkpointing.load_params(tmp_path / "base", tokens=B * T * 2)
  np.testing.assert_array_equal(
      np.asarray(comp2.params["embed"]), np.asarray(at2["embed"])
  )
  assert (
      np.abs(np.asarray(at2["embed"]) - np.asarray(base.params["embed"])).max()
      > 0
  )
  # A component with another model shape: a clear error, before compiling.
  wide = dataclasses.replace(CFG, d_ff=96)
  with pytest.raises(
      ValueError,
      match=r"down_proj.*\(2, 64, 32\) != model " r"shape \(2, 96, 32\)",
  ):
    trainer.train(
        wide,
        OPT,
        _tc(1, init_from=str(tmp_path / "base")),
        tmp_path / "bad",
        _it(),
        devices=jax.devices()[:1],
    )


def test_metrics_eval_and_bad_batches(tmp_path):
  ev = {
      "syn": [next(_it(9, with_bytes=True))],
      "nobytes": lambda: iter([next(_it(8))]),
  }
  r = trainer.train(
      CFG,
      OPT,
      _tc(4, eval_every_steps=2),
      tmp_path / "m",
      _it(),
      eval_data=ev,
      devices=jax.devices()[:1],
  )
  assert set(r.eval_metrics) == {
      "heldout/syn/loss",
      "heldout/syn/bpb",
      "heldout/nobytes/loss",
  }
  with open(tmp_path / "m" / "metrics.jsonl") as f:
    rows = [json.loads(x) for x in f]
  train_rows = [x for x in rows if "train/loss" in x]
  assert [x["step"] for x in train_rows] == [2, 4]
  for key in (
      "train/lr",
      "train/grad_norm",
      "train/tokens_per_s",
      "train/tokens_seen",
      "train/mfu",
  ):
    assert key in train_rows[-1]
  assert train_rows[-1]["train/tokens_seen"] == 4 * B * T
  assert sum("heldout/syn/bpb" in x for x in rows) == 2
  assert any(
      f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "m")
  )
  with pytest.raises(ValueError, match="does not divide by the 2 batch"):
    trainer.train(
        CFG,
        OPT,
        dataclasses.replace(_tc(1, data=2), global_batch_size=3),
        tmp_path / "b3",
        _it(),
        devices=jax.devices()[:2],
    )
  wrong = synthetic.SyntheticIterator(2, T, CFG.vocab_size)
  with pytest.raises(ValueError, match=r"shape \(2, 32\), expected"):
    trainer.train(
        CFG, OPT, _tc(1), tmp_path / "b2", wrong, devices=jax.devices()[:1]
    )


@pytest.mark.slow
def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
  tc = _tc(2, checkpoint_every_steps=1)
  trainer.train(CFG, OPT, tc, tmp_path / "r", _it(), devices=jax.devices()[:1])
  good = checkpointing.load_params(tmp_path / "r")
  # Continue the same run to 4 steps with an absurd learning rate.
  with pytest.raises(divergence.TrainingDivergedError, match="step 3: non-fin"):
    trainer.train(
        CFG,
        dataclasses.replace(OPT, peak_lr=1e35),
        dataclasses.replace(tc, total_tokens=4 * B * T),
        tmp_path / "r",
        _it(),
        devices=jax.devices()[:1],
    )
  assert checkpointing.find_step(tmp_path / "r") == 2
  after = checkpointing.load_params(tmp_path / "r")
  for a, b in zip(jax.tree.leaves(good), jax.tree.leaves(after)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.isfinite(np.asarray(b)).all()
