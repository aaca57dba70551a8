"""Component store: compatibility checks with clear errors, stacking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from demix_jax.merging import methods
from demix_jax.merging import store as store_lib


def test_stacking_layout(tiny):
  base, comps = tiny.components(k=2)
  s = store_lib.ComponentStore.from_params(
      comps, ["x", "y"], base=base, fingerprints=["f", "f"]
  )
  assert s.k == 2 and s.fingerprint == "f"
  assert s.stacked["embed"].shape == (2,) + comps[0]["embed"].shape
  q = comps[0]["layers"]["attn"]["q_proj"]
  assert s.stacked["layers"]["attn"]["q_proj"].shape == (
      (q.shape[0], 2) + q.shape[1:]
  )


def test_store_merge_equals_host_linear_merge(tiny):
  base, comps = tiny.components(k=3)
  s = store_lib.ComponentStore.from_params(comps, base=base)
  a = np.array([0.2, 0.5, 0.3])
  got = s.merge(a)
  want = store_lib.host_linear_merge(comps, a)
  for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="needs the base"):
    store_lib.ComponentStore.from_params(comps).merge(
        a, methods.MergeSpec("ties")
    )


def test_mismatched_shape_names_leaf_and_component(tiny):
  _, comps = tiny.components(k=2)
  bad = jax.tree.map(lambda x: x, comps[1])
  bad["layers"]["mlp"]["up_proj"] = jnp.zeros((2, 32, 65))
  with pytest.raises(
      store_lib.ComponentMismatchError,
      match=r"'code'.*\['layers'\]\['mlp'\]\['up_proj'\].*" r"shape",
  ):
    store_lib.ComponentStore.from_params([comps[0], bad], ["gen", "code"])


def test_mismatched_dtype_and_structure(tiny):
  base, comps = tiny.components(k=2)
  bad = jax.tree.map(lambda x: x, comps[1])
  bad["embed"] = bad["embed"].astype(jnp.bfloat16)
  with pytest.raises(
      store_lib.ComponentMismatchError, match=r"\['embed'\].*dtype bfloat16"
  ):
    store_lib.ComponentStore.from_params([comps[0], bad])
  extra = dict(comps[1], lm_head=jnp.zeros((32, 128)))
  with pytest.raises(
      store_lib.ComponentMismatchError,
      match="tree structure.*first mismatching leaf",
  ):
    store_lib.ComponentStore.from_params([comps[0], extra])
  bad_base = dict(base)
  bad_base["final_norm"] = {"scale": jnp.ones(31)}
  with pytest.raises(
      store_lib.ComponentMismatchError,
      match=r"'base' leaf \['final_norm'\]\['scale'\]",
  ):
    store_lib.ComponentStore.from_params(comps, base=bad_base)


def test_mismatched_tokenizer(tiny):
  _, comps = tiny.components(k=2)
  with pytest.raises(store_lib.ComponentMismatchError, match="tokenizer"):
    store_lib.ComponentStore.from_params(
        comps, ["a", "b"], fingerprints=["abc", "abd"]
    )


def test_abstract_store_has_the_layout_of_real_components(tiny):
  from demix_jax.models import transformer  # pylint: disable=g-import-not-at-top
  from demix_jax.training import sharding  # pylint: disable=g-import-not-at-top

  mesh = sharding.create_mesh({"fsdp": 2, "tensor": 2})
  rules = (("embed", "fsdp"), ("mlp", "tensor"), ("vocab", "tensor"))
  axes = transformer.param_logical_axes(tiny.cfg)
  base, comps = tiny.components(k=2)
  real = store_lib.ComponentStore.from_params(
      comps, ["a", "b"], base=base, mesh=mesh, rules=rules, logical_axes=axes
  )
  shapes = jax.eval_shape(lambda: comps[0])
  abstract = store_lib.ComponentStore.abstract(
      shapes, ["a", "b"], mesh=mesh, rules=rules, logical_axes=axes
  )
  assert abstract.names == real.names
  for got, want in (
      (abstract.stacked, real.stacked),
      (abstract.base, real.base),
  ):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      assert isinstance(g, jax.ShapeDtypeStruct)
      assert (g.shape, g.dtype) == (w.shape, w.dtype)
      assert g.sharding == w.sharding
  # The rules do shard something, so the comparison is not vacuous.
  specs = {tuple(x.sharding.spec) for x in jax.tree.leaves(real.stacked)}
  assert any(any(e is not None for e in s) for s in specs)
  assert (
      store_lib.ComponentStore.abstract(shapes, ["a"], with_base=False).base
      is None
  )
