"""Tests of Orbax checkpoints: round trip, iterator state, budgets, faults.

Faults are injected: a damaged step (files removed or cut short) and I/O
errors on the first N reads of an item (the JSON handler's restore raises).
"""

import errno
import json
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from orbax.checkpoint._src.handlers import json_checkpoint_handler as jch
import pytest

from demix_jax.training import checkpoint_reads
from demix_jax.training import checkpoint_reads as reads
from demix_jax.training import checkpointing as ck


def _state(seed):
  k = jax.random.key(seed)
  params = {"w": jax.random.normal(k, (4, 3)), "b": {"c": jnp.arange(5.0)}}
  opt = {"mu": jax.tree.map(jnp.zeros_like, params), "count": jnp.int32(seed)}
  return params, opt


def _abstract(tree):
  dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev), tree
  )


def _meta(step, budgets=()):
  return {
      "step": step,
      "tokens_seen": step * 100,
      "budget_tokens": list(budgets),
      "config_hash": "abc",
      "data_mixture": {"g": 1.0},
      "tokenizer_fingerprint": "ff",
  }


@pytest.mark.parametrize(
    "iter_state",
    [{"index": 7, "nested": {"a": [1, 2]}}, b"\x00\x01grain-state\xff"],
)
def test_round_trip_with_iterator_state(tmp_path, iter_state):
  c = ck.Checkpointer(tmp_path, ck.CheckpointConfig(every_steps=1))
  params, opt = _state(3)
  c.save(3, params, opt, iter_state, _meta(3))
  c.wait()
  r = c.restore_latest(_abstract(params), _abstract(opt))
  c.close()
  assert r.step == 3 and r.iter_state == iter_state
  assert r.meta["config_hash"] == "abc" and r.meta["tokens_seen"] == 300
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(r.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(r.opt_state["count"]) == 3


def test_keep_last_and_budgets_and_lookup(tmp_path):
  c = ck.Checkpointer(
      tmp_path,
      ck.CheckpointConfig(every_steps=1, keep_last=2, budget_steps=(2,)),
  )
  for s in range(1, 7):
    params, opt = _state(s)
    c.save(s, params, opt, {"index": s}, _meta(s, [200] if s == 2 else []))
  c.close()
  assert c.all_steps() == [2, 5, 6]
  assert ck.find_step(tmp_path) == 6
  assert ck.find_step(tmp_path, tokens=200) == 2
  assert ck.read_metadata(tmp_path, tokens=200)["step"] == 2
  with pytest.raises(ValueError, match="no checkpoint at 300 tokens"):
    ck.find_step(tmp_path, tokens=300)
  p2 = ck.load_params(tmp_path, tokens=200)
  np.testing.assert_array_equal(
      np.asarray(p2["w"]), np.asarray(_state(2)[0]["w"])
  )
  with pytest.raises(ValueError, match="no checkpoints/"):
    ck.find_step(tmp_path / "nothing")


def _two_steps(tmp_path):
  c = ck.Checkpointer(tmp_path, ck.CheckpointConfig(every_steps=1))
  for s in (1, 2):
    params, opt = _state(s)
    c.save(s, params, opt, {"index": s}, _meta(s))
  c.close()


def _restore(tmp_path, **cfg):
  c = ck.Checkpointer(tmp_path, ck.CheckpointConfig(every_steps=1, **cfg))
  try:
    return c.restore_latest(_abstract(_state(0)[0]), _abstract(_state(0)[1]))
  finally:
    c.close()


def test_corrupt_latest_is_named_skipped_and_recorded(tmp_path, caplog):
  _two_steps(tmp_path)
  # Damage step 2: its array data is gone (as after a half-copied upload).
  shutil.rmtree(tmp_path / "checkpoints" / "2" / "params" / "d")
  for f in (tmp_path / "checkpoints" / "2" / "params").glob("ocdbt.process_*"):
    shutil.rmtree(f)
  with caplog.at_level(logging.WARNING):
    r = _restore(tmp_path)
  assert r.step == 1 and r.iter_state == {"index": 1}
  assert [s for s, _ in r.skipped] == [2]
  errors = [x.getMessage() for x in caplog.records if x.levelname == "ERROR"]
  assert any("checkpoints/2 is unreadable" in m for m in errors), errors
  # Kept under another name, and recorded in the run directory.
  assert (tmp_path / "checkpoints" / "2.unreadable-0").is_dir()
  record = json.loads((tmp_path / reads.RECORD).read_text())
  assert [e["step"] for e in record] == [2]
  assert record[0]["moved_to"].endswith("2.unreadable-0")
  assert "NOT_FOUND" in record[0]["error"]


def test_all_corrupt_stops_instead_of_starting_over(tmp_path):
  _two_steps(tmp_path)
  for step in ("1", "2"):
    meta = tmp_path / "checkpoints" / step / "meta" / "metadata"
    meta.write_text('{"step": ')  # cut short
  with pytest.raises(
      checkpoint_reads.CheckpointError, match="no checkpoint is readable"
  ):
    _restore(tmp_path)
  # Nothing was set aside: the files stay for the user to look at.
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]


def _failing_meta_reads(monkeypatch, n, error=None):
  """The first `n` reads of a `meta` item raise an I/O error."""
  real = jch.JsonCheckpointHandler.restore
  calls = {"failed": 0}

  def restore(self, directory, *a, **kw):
    if directory.name == "meta" and calls["failed"] < n:
      calls["failed"] += 1
      raise error or OSError(errno.EIO, "Input/output error (injected)")
    return real(self, directory, *a, **kw)

  monkeypatch.setattr(jch.JsonCheckpointHandler, "restore", restore)
  return calls


@pytest.fixture
def waits(monkeypatch):
  out = []
  monkeypatch.setattr(reads, "wait", out.append)
  return out


@pytest.mark.parametrize("n", [1, 3])
def test_transient_errors_are_retried_with_backoff(
    tmp_path, monkeypatch, waits, n
):
  _two_steps(tmp_path)
  want = _restore(tmp_path)
  calls = _failing_meta_reads(monkeypatch, n)
  r = _restore(tmp_path, retry_delays=(1.0, 2.0, 4.0))
  assert calls["failed"] == n and waits == [1.0, 2.0, 4.0][:n]
  assert r.step == 2 and not r.skipped and r.iter_state == {"index": 2}
  assert r.meta == want.meta
  for a, b in zip(
      jax.tree.leaves((want.params, want.opt_state)),
      jax.tree.leaves((r.params, r.opt_state)),
      strict=True,
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.EIO, "Input/output error (injected)"),
        ValueError("UNAVAILABLE: gs://bucket/run: 503 (injected)"),
    ],
    ids=["oserror", "tensorstore-unavailable"],
)
def test_transient_errors_that_persist_stop_the_run(
    tmp_path, monkeypatch, waits, error
):
  _two_steps(tmp_path)
  _failing_meta_reads(monkeypatch, 4, error)
  with pytest.raises(reads.UnreachableCheckpointError) as e:
    _restore(tmp_path, retry_delays=(1.0, 2.0, 4.0))
  assert waits == [1.0, 2.0, 4.0]
  msg = str(e.value)
  assert f"{tmp_path}/checkpoints/2 could not be read: 4 tries" in msg
  assert "Nothing was restarted or skipped" in msg and "Fix:" in msg
  # Not taken for damage: no step was set aside or recorded.
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]
  assert not (tmp_path / reads.RECORD).exists()


@pytest.mark.parametrize(
    "error,kind",
    [
        (OSError(errno.EIO, "I/O error"), reads.TRANSIENT),
        (ConnectionResetError("reset"), reads.TRANSIENT),
        (TimeoutError("timed out"), reads.TRANSIENT),
        (ValueError("DEADLINE_EXCEEDED: reading gs://b/x"), reads.TRANSIENT),
        (type("ServiceUnavailable", (Exception,), {})("503"), reads.TRANSIENT),
        (FileNotFoundError("gone"), reads.CORRUPT),
        (ValueError("DATA_LOSS: Error reading manifest"), reads.CORRUPT),
        (ValueError("OUT_OF_RANGE: Error reading byte range"), reads.CORRUPT),
        (json.JSONDecodeError("Expecting value", "", 0), reads.CORRUPT),
        (KeyError("Item 'meta' was not found"), reads.CORRUPT),
        (PermissionError("denied"), None),
        (ValueError("PERMISSION_DENIED: gs://b/x"), None),
        (RuntimeError("a bug"), None),
    ],
    ids=lambda x: type(x).__name__ if isinstance(x, Exception) else str(x),
)
def test_classify(error, kind):
  assert reads.classify(error) == kind


def test_classify_looks_at_causes():
  try:
    try:
      raise OSError(errno.ECONNRESET, "reset by peer")
    except OSError as inner:
      raise RuntimeError("orbax wrapped it") from inner
  except RuntimeError as e:
    assert reads.classify(e) == reads.TRANSIENT


def test_structure_mismatch_is_named(tmp_path):
  c = ck.Checkpointer(tmp_path, ck.CheckpointConfig(every_steps=1))
  params, opt = _state(1)
  c.save(1, params, opt, {"index": 1}, _meta(1))
  c.close()
  want = {
      "w": jax.ShapeDtypeStruct((4, 4), jnp.float32),
      "b": {"c": jax.ShapeDtypeStruct((5,), jnp.float32)},
      "extra": jax.ShapeDtypeStruct((2,), jnp.float32),
  }
  with pytest.raises(ValueError) as e:
    ck.load_params(tmp_path, target=want)
  msg = str(e.value)
  assert "missing ['extra']" in msg and "(4, 3) != model shape (4, 4)" in msg
