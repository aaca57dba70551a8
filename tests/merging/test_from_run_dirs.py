"""runs.from_run_dirs: checkpoints you trained, scored directly.

The slow tests train a tiny base and two components with the real trainer
(so the model config, sequence length and tokenizer fingerprint are the
ones it records) and check the constructor against an evaluator assembled
by hand. The fast ones save checkpoints the way the trainer does, without
training, and check the same equality and that a wrong tokenizer, a
component of another model or an unknown sequence length is refused.
"""

import dataclasses
import inspect
import textwrap

import jax
import numpy as np
import pytest

from demix_jax import models
from demix_jax.data import tokenizer
from demix_jax.evals import benchmarks
from demix_jax.merging import engine as engine_lib
from demix_jax.merging import methods
from demix_jax.merging import runs as runs_lib
from demix_jax.merging import store as store_lib
from demix_jax.training import checkpointing
from demix_jax.training import config as train_config
from demix_jax.training import optim
from demix_jax.training import synthetic
from demix_jax.training import trainer
from tests import kit

CFG = kit.tiny_model(vocab_size=512)
B, T = 4, 64
BENCH = ("piqa", "gsm8k", "mbpp")
ALPHAS = np.array([[0.5, 0.5], [0.9, 0.1], [0.0, 1.0]], np.float32)


def _vocab(path, module):
  # Text of a standard-library module: plenty for 512 pieces, offline.
  return tokenizer.train_vocab(
      {"src": inspect.getsource(module).splitlines()}, 512, str(path)
  )


def _train(run_dir, vocab, steps, seed, init_from=""):
  tc = train_config.TrainConfig(
      global_batch_size=B,
      seq_len=T,
      total_tokens=B * T * steps,
      log_every_steps=steps,
      checkpoint_every_steps=steps,
      peak_flops=1e10,
      seed=seed,
      mesh_axes={"data": 1, "fsdp": 1, "tensor": 1},
      init_from=init_from,
      tokenizer_fingerprint=vocab.fingerprint,
  )
  it = synthetic.SyntheticIterator(B, T, CFG.vocab_size, seed=seed)
  trainer.train(
      CFG,
      optim.OptimConfig(peak_lr=1e-2, warmup_steps=1),
      tc,
      str(run_dir),
      it,
      devices=jax.devices()[:1],
  )
  return str(run_dir)


def _save(run_dir, cfg, vocab, seed, seq_len=T):
  """A checkpoint with the trainer's metadata keys, of random params."""
  params = models.init_params(cfg, jax.random.key(seed))
  ckpt = checkpointing.Checkpointer(
      run_dir, checkpointing.CheckpointConfig(every_steps=1, async_save=False)
  )
  meta = {
      "step": 1,
      "tokens_seen": B * T,
      "budget_tokens": [],
      "tokenizer_fingerprint": vocab.fingerprint,
      "model": cfg.to_dict(),
  }
  if seq_len:
    meta["seq_len"] = seq_len
  ckpt.save(1, params, params, {}, meta)
  ckpt.close()
  return str(run_dir)


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  return root, _vocab(root / "tok.model", textwrap)


@pytest.fixture(scope="module")
def saved(vocab_dir):
  root, vocab = vocab_dir
  base = _save(root / "s_base", CFG, vocab, 0)
  comps = {
      "general": _save(root / "s_general", CFG, vocab, 1),
      "code": _save(root / "s_code", CFG, vocab, 2),
  }
  return root, vocab, base, comps


@pytest.fixture(scope="module")
def trained(vocab_dir):
  root, vocab = vocab_dir
  base = _train(root / "base", vocab, 2, seed=0)
  comps = {
      "general": _train(root / "general", vocab, 1, seed=1, init_from=base),
      "code": _train(root / "code", vocab, 1, seed=2, init_from=base),
  }
  return root, vocab, base, comps


def _check_equals_by_hand(runs):
  root, vocab, base, comps = runs
  rng = np.random.default_rng(0)
  heldout = {
      "code": {
          "tokens": rng.integers(3, CFG.vocab_size, (6, T)).astype(np.int32),
          "n_bytes": np.full(6, 200.0),
      }
  }
  ev = runs_lib.from_run_dirs(
      base,
      comps,
      tokenizer=str(root / "tok.model"),
      benchmarks=BENCH,
      max_items=4,
      batch_size=8,
      heldout=heldout,
      chunk_size=2,
  )
  # By hand, as the pipeline's workspace assembles it.
  store = store_lib.ComponentStore.from_checkpoints(
      comps, base_dir=base, logical_axes=models.param_logical_axes(CFG)
  )
  suite = benchmarks.build_suite(
      BENCH,
      vocab.encode,
      vocab.fingerprint,
      T,
      8,
      max_items=4,
      seed=0,
      heldout=heldout,
      token_bytes=vocab.token_byte_lengths(),
  )
  by_hand = engine_lib.MixtureEvaluator(
      CFG, store, suite, spec=methods.LINEAR, chunk_size=2
  )
  assert ev.cfg == CFG and ev.store.names == ("general", "code")
  assert ev.suite.n_rows == suite.n_rows and ev.targets == by_hand.targets
  got, want = ev.evaluate(ALPHAS), by_hand.evaluate(ALPHAS)
  assert {"domain/code", "domain/math", "heldout/code/bpb"} <= set(got)
  for t in want:
    np.testing.assert_array_equal(got[t], want[t], err_msg=t)
  # The two components differ, so the mixtures do too: not a vacuous match.
  assert got["heldout/bpb"][1] != got["heldout/bpb"][2]


def test_from_run_dirs_equals_the_evaluator_built_by_hand(saved):
  _check_equals_by_hand(saved)


@pytest.mark.slow
def test_trained_runs_from_run_dirs_equals_by_hand(trained):
  _, _, base, comps = trained
  assert checkpointing.read_model_config(base) == CFG
  assert checkpointing.read_model_config(comps["code"]) == CFG
  assert checkpointing.read_metadata(base)["seq_len"] == T
  _check_equals_by_hand(trained)


def test_a_vocab_object_and_another_method_are_accepted(saved):
  _, vocab, base, comps = saved
  ev = runs_lib.from_run_dirs(
      base,
      comps,
      tokenizer=vocab,
      benchmarks=("piqa",),
      max_items=2,
      batch_size=4,
      method="task_arithmetic",
  )
  assert ev.spec == methods.MergeSpec("task_arithmetic")
  assert ev.suite.tokens.shape[1] == T


def test_wrong_tokenizer_is_refused_naming_the_run(saved):
  root, _, base, comps = saved
  other = _vocab(root / "other.model", dataclasses)
  with pytest.raises(ValueError, match=r"run 'base'.*trained with tokenizer"):
    runs_lib.from_run_dirs(base, comps, tokenizer=other, benchmarks=("piqa",))
  assert isinstance(
      pytest.raises(
          tokenizer.TokenizerMismatchError,
          runs_lib.from_run_dirs,
          base,
          comps,
          tokenizer=str(root / "other.model"),
      ).value,
      ValueError,
  )


def test_component_of_another_model_is_refused(saved):
  root, vocab, base, comps = saved
  odd = _save(root / "odd", dataclasses.replace(CFG, d_ff=96), vocab, 3)
  with pytest.raises(ValueError, match=r"run 'odd'.*different model"):
    runs_lib.from_run_dirs(base, {**comps, "odd": odd}, tokenizer=vocab)


def test_unknown_seq_len_must_be_given(saved):
  root, vocab, _, comps = saved
  base = _save(root / "no_len", CFG, vocab, 0, seq_len=None)
  with pytest.raises(ValueError, match="seq_len="):
    runs_lib.from_run_dirs(base, comps, tokenizer=vocab)
  ev = runs_lib.from_run_dirs(
      base,
      comps,
      tokenizer=vocab,
      seq_len=32,
      benchmarks=("piqa",),
      max_items=2,
      batch_size=4,
  )
  assert ev.suite.tokens.shape[1] == 32
