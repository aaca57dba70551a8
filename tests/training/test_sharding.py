"""Tests of mesh creation, logical rules and batch placement."""

import jax
import numpy as np
import pytest

from demix_jax import models
from demix_jax.training import sharding
from tests import kit

RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("layers", None),
    ("length", None),
)


def test_create_mesh_infers_and_rejects():
  mesh = sharding.create_mesh({"data": -1, "fsdp": 2, "tensor": 1})
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 1}
  with pytest.raises(ValueError, match="needs 3 devices"):
    sharding.create_mesh({"data": 3, "fsdp": 1})
  with pytest.raises(ValueError, match="multiple of 3"):
    sharding.create_mesh({"data": -1, "fsdp": 3})
  with pytest.raises(ValueError, match="more than one -1"):
    sharding.create_mesh({"data": -1, "fsdp": -1})


def test_param_shardings_follow_rules_and_check_divisibility():
  mesh = sharding.create_mesh({"data": 1, "fsdp": 2, "tensor": 2})
  cfg = kit.tiny_model(n_heads=4, n_kv_heads=2, head_dim=8, d_ff=48)
  shapes = jax.eval_shape(lambda: models.init_params(cfg, jax.random.key(0)))
  sh = sharding.param_shardings(
      shapes, models.param_logical_axes(cfg), mesh, RULES
  )
  assert tuple(sh["embed"].spec) == ("tensor", "fsdp")
  assert tuple(sh["layers"]["mlp"]["down_proj"].spec) == (
      None,
      "tensor",
      "fsdp",
  )
  params = jax.jit(lambda k: models.init_params(cfg, k), out_shardings=sh)(
      jax.random.key(0)
  )
  assert params["embed"].sharding == sh["embed"]
  bad = kit.tiny_model(
      vocab_size=63, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=48
  )
  bshapes = jax.eval_shape(lambda: models.init_params(bad, jax.random.key(0)))
  with pytest.raises(ValueError, match=r"\['embed'\] dim 0 \(size 63"):
    sharding.param_shardings(
        bshapes, models.param_logical_axes(bad), mesh, RULES
    )
  with pytest.raises(ValueError, match="not one of the mesh axes"):
    sharding.check_rules((("batch", "dp"),), mesh)


def test_batch_checks_and_global_batch():
  mesh = sharding.create_mesh({"data": 2, "fsdp": 2, "tensor": 1})
  assert sharding.check_batch(8, mesh, RULES) == 8
  with pytest.raises(ValueError, match="does not divide by the 4 batch"):
    sharding.check_batch(6, mesh, RULES)
  with pytest.raises(ValueError, match="grad_accum_steps=3"):
    sharding.check_batch(8, mesh, RULES, grad_accum_steps=3)
  with pytest.raises(ValueError, match="micro-batch"):
    sharding.check_batch(8, mesh, RULES, grad_accum_steps=4)
  host = {"tokens": np.arange(8 * 5, dtype=np.int32).reshape(8, 5)}
  g = sharding.make_global_batch(host, mesh, RULES)
  assert g["tokens"].shape == (8, 5)
  np.testing.assert_array_equal(np.asarray(g["tokens"]), host["tokens"])
  assert len(g["tokens"].sharding.device_set) == 4
  assert g["tokens"].addressable_shards[0].data.shape == (2, 5)
