"""Checkpoint faults: a failed save, a damaged checkpoint, failing reads.

A full disk (ENOSPC) while Orbax writes a checkpoint's files makes `train`
raise, leaves the previous checkpoint as the newest complete one, and a
rerun resumes from it to exactly the parameters of an uninterrupted run. A
checkpoint whose array data was truncated is named (an error with its
step, and a record) and skipped by the run that owns it, which goes back to
the previous step, trains again and ends where the uninterrupted run ended;
a reader of that run (`load_params`, used by the later stages) gets a
CheckpointError naming the run and step, never silently another step's
parameters. Reads that fail with I/O errors are retried; when they keep
failing the run stops naming the checkpoint, and trains nothing.
"""

import errno
import json
import logging
import os
import shutil
import threading

import jax
import numpy as np
from orbax.checkpoint._src.handlers import json_checkpoint_handler as jch
import pytest

from demix_jax.training import checkpoint_reads
from demix_jax.training import checkpointing
from demix_jax.training import config as train_config
from demix_jax.training import optim
from demix_jax.training import synthetic
from demix_jax.training import trainer
from tests import kit

CFG = kit.tiny_model()
OPT = optim.OptimConfig(peak_lr=1e-2, warmup_steps=2)
B, T, STEPS = 4, 32, 6


def _train(run_dir, steps=STEPS):
  cfg = train_config.TrainConfig(
      global_batch_size=B,
      seq_len=T,
      total_tokens=B * T * steps,
      peak_flops=1e10,
      log_every_steps=2,
      checkpoint_every_steps=2,
      keep_last=2,
      mesh_axes={"data": 1, "fsdp": 1, "tensor": 1},
  )
  it = synthetic.SyntheticIterator(B, T, CFG.vocab_size, seed=0)
  return trainer.train(
      CFG, OPT, cfg, str(run_dir), it, devices=jax.devices()[:1]
  )


def _params(run_dir, **kw):
  return jax.tree.map(np.asarray, checkpointing.load_params(run_dir, **kw))


def _assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def _steps(run_dir):
  return sorted(
      int(d) for d in os.listdir(run_dir / "checkpoints") if d.isdigit()
  )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  run_dir = tmp_path_factory.mktemp("ref") / "run"
  r = _train(run_dir)
  assert r.steps == STEPS and _steps(run_dir) == [4, 6]
  return run_dir, _params(run_dir)


def _restored_step(caplog):
  lines = [r.getMessage() for r in caplog.records]
  restored = [m for m in lines if m.startswith("restored step")]
  assert restored, lines
  return int(restored[-1].split()[2])


def test_failed_checkpoint_write_keeps_the_previous(
    reference, tmp_path, monkeypatch, caplog
):
  _, want = reference
  run_dir = tmp_path / "run"
  real_save = jch.JsonCheckpointHandler._save_fn  # pylint: disable=protected-access
  saves = {"meta": 0}

  async def save_fn(self, x, directory):
    # Item directories are "<item>.orbax-checkpoint-tmp" while written.
    if directory.name.split(".")[0] == "meta":
      saves["meta"] += 1
      if saves["meta"] == 2:  # step 4: half the file, then a full disk
        (directory / self._filename).write_text(str(x)[:20])  # pylint: disable=protected-access
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")
    return await real_save(self, x, directory)

  monkeypatch.setattr(jch.JsonCheckpointHandler, "_save_fn", save_fn)
  before = set(threading.enumerate())
  with pytest.raises(OSError, match="No space left"):
    _train(run_dir)
  monkeypatch.undo()
  # The failed save's other items may still be writing on Orbax's threads
  # (a real failure ends the process, and them with it): let them finish
  # before the "restarted" run cleans the half-written step up.
  for t in set(threading.enumerate()) - before:
    t.join(timeout=60)
  # Step 4 never became a checkpoint; step 2 is the newest complete one.
  assert _steps(run_dir) == [2]
  assert checkpointing.find_step(run_dir) == 2
  with caplog.at_level(logging.INFO):
    r = _train(run_dir)
  assert r.restored_from == "own" and _restored_step(caplog) == 2
  assert r.steps == STEPS and _steps(run_dir) == [4, 6]
  _assert_same(_params(run_dir), want)


def _truncate_arrays(step_dir):
  """Cuts every array data file of a checkpoint's params to half."""
  files = [
      os.path.join(d, f)
      for d, _, names in os.walk(step_dir / "params")
      for f in names
      if os.path.basename(d) == "d"
  ]
  assert files, sorted(os.walk(step_dir))
  for f in files:
    with open(f, "r+b") as fh:
      fh.truncate(os.path.getsize(f) // 2)


def test_damaged_checkpoint_is_named_and_redone(reference, tmp_path, caplog):
  ref_dir, want = reference
  run_dir = tmp_path / "run"
  shutil.copytree(ref_dir, run_dir)
  step4 = _params(run_dir, step=4)
  _truncate_arrays(run_dir / "checkpoints" / "6")
  # A reader is told which checkpoint is damaged, and gets no other step.
  with pytest.raises(checkpoint_reads.CheckpointError) as err:
    checkpointing.load_params(run_dir)
  assert f"{run_dir} step 6: params metadata is unreadable" in str(err.value)
  # The run itself skips it (named), resumes from step 4 and redoes 5..6.
  with caplog.at_level(logging.INFO):
    r = _train(run_dir)
  errors = [x.getMessage() for x in caplog.records if x.levelname == "ERROR"]
  assert any(
      f"{run_dir} step 6: params metadata is unreadable" in m for m in errors
  ), errors
  assert any(f"{run_dir}/checkpoints/6 is unreadable" in m for m in errors)
  record = json.loads((run_dir / checkpoint_reads.RECORD).read_text())
  assert [e["step"] for e in record] == [6]
  assert r.restored_from == "own" and _restored_step(caplog) == 4
  assert _steps(run_dir) == [4, 6]
  _assert_same(_params(run_dir, step=4), step4)
  _assert_same(_params(run_dir), want)


def _failing_reads(monkeypatch, n, only=None):
  """The first `n` reads of JSON items (named `only`) raise EIO."""
  real = jch.JsonCheckpointHandler.restore
  failed = []

  def restore(self, directory, *a, **kw):
    if (only is None or directory.name == only) and len(failed) < n:
      failed.append(str(directory))
      raise OSError(errno.EIO, "Input/output error (injected)")
    return real(self, directory, *a, **kw)

  monkeypatch.setattr(jch.JsonCheckpointHandler, "restore", restore)
  return failed


def test_a_few_failing_reads_are_retried(
    reference, tmp_path, monkeypatch, caplog
):
  ref_dir, want = reference
  run_dir = tmp_path / "run"
  shutil.copytree(ref_dir, run_dir)
  waits = []
  monkeypatch.setattr(checkpoint_reads, "wait", waits.append)
  failed = _failing_reads(monkeypatch, 3, only="meta")
  with caplog.at_level(logging.INFO):
    r = _train(run_dir)
  assert len(failed) == 3 and waits == list(checkpoint_reads.RETRY_DELAYS)
  assert r.restored_from == "own" and _restored_step(caplog) == STEPS
  _assert_same(_params(run_dir), want)


@pytest.mark.parametrize("only", ["meta", None], ids=["restore", "open"])
def test_failing_reads_stop_the_run_and_train_nothing(
    reference, tmp_path, monkeypatch, only
):
  ref_dir, _ = reference
  run_dir = tmp_path / "run"
  shutil.copytree(ref_dir, run_dir)
  # Continue the finished run for two more steps, while the storage stops
  # answering: reads of the step's meta item, or of every JSON item (then
  # already opening the checkpoints fails).
  waits = []
  monkeypatch.setattr(checkpoint_reads, "wait", waits.append)
  _failing_reads(monkeypatch, 10**6, only=only)
  before = sorted(os.listdir(run_dir / "checkpoints"))
  with pytest.raises(checkpoint_reads.UnreachableCheckpointError) as err:
    _train(run_dir, steps=STEPS + 2)
  where = f"{run_dir}/checkpoints/{STEPS}" if only else f"{run_dir}/checkpoints"
  assert f"{where} could not be read: 4 tries" in str(err.value)
  assert waits == list(checkpoint_reads.RETRY_DELAYS)
  # Nothing trained, nothing set aside: the same checkpoints as before.
  monkeypatch.undo()
  assert sorted(os.listdir(run_dir / "checkpoints")) == before
  assert checkpointing.read_metadata(run_dir)["step"] == STEPS
