"""Tests of Orbax checkpoints: round trip, iterator state, budgets, faults."""

import logging
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_corrupt_latest_falls_back_with_warning(tmp_path, caplog):
  c = ck.Checkpointer(tmp_path, ck.CheckpointConfig(every_steps=1))
  for s in (1, 2):
    params, opt = _state(s)
    c.save(s, params, opt, {"index": s}, _meta(s))
  c.close()
  # Damage step 2: its array data is gone (as after a half-copied upload).
  shutil.rmtree(tmp_path / "checkpoints" / "2" / "params" / "d")
  for f in (tmp_path / "checkpoints" / "2" / "params").glob("ocdbt.process_*"):
    shutil.rmtree(f)
  c = ck.Checkpointer(tmp_path, ck.CheckpointConfig(every_steps=1))
  with caplog.at_level(logging.WARNING):
    r = c.restore_latest(_abstract(_state(1)[0]), _abstract(_state(1)[1]))
  c.close()
  assert r.step == 1 and r.iter_state == {"index": 1}
  assert "checkpoints/2 is unreadable" in caplog.text


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
