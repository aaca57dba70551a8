"""Splash under `attention.shard_rows`: the merge evaluator's layout.

The evaluator vmaps the model over a chunk of mixtures and sets no mesh;
`shard_rows` names one, and splash folds the vmapped axes into the kernel's
rows inside a `shard_map` over it. Checked on 4 fake CPU devices with the
kernel in Pallas interpret mode: values equal the XLA path's (tolerance as
in test_attention.py: online softmax, float32), the kernel's `shard_map`
sees the folded rows, and gradients still work where folding is off.
"""

import jax
from jax.extend import core as jex_core
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P
import numpy as np

from demix_jax import models
from demix_jax.models import attention

ATOL = 2e-5
T, H, KV, D = 128, 4, 2, 32


def _mesh(shape, names):
  n = int(np.prod(shape))
  return jax.make_mesh(
      shape,
      names,
      axis_types=(AxisType.Auto,) * len(shape),
      devices=jax.devices()[:n],
  )


def _segments(b, seed=0):
  rng = np.random.default_rng(seed)
  seg = np.zeros((b, T), np.int32)
  for r in range(b):
    cuts = np.sort(rng.choice(np.arange(8, T - 8), 2, replace=False))
    seg[r, : cuts[0]] = 1
    seg[r, cuts[0] : cuts[1]] = 2  # the rest stays padding (0)
  return jnp.asarray(seg)


def _qkv(lead, seed=1):
  ks = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(ks[0], lead + (T, H, D), jnp.float32)
  k = jax.random.normal(ks[1], lead + (T, KV, D), jnp.float32)
  v = jax.random.normal(ks[2], lead + (T, KV, D), jnp.float32)
  return q, k, v


def _shard_map_specs(closed_jaxpr):
  """{input shape: its spec} of every shard_map in a jaxpr (sub-jaxprs
  included); the kernel's mask tables are inputs too."""
  found = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "shard_map":
        shapes = [v.aval.shape for v in eqn.invars]
        found.append(dict(zip(shapes, eqn.params["in_specs"])))
      for sub in jex_core.jaxprs_in_params(eqn.params):
        walk(sub)

  walk(closed_jaxpr.jaxpr)
  return found


def test_vmapped_mixtures_fold_into_the_kernel_rows():
  # 2 mixtures (outer vmap, as the engine's shard axis) x 2 (inner vmap, as
  # lax.map's batch) x 2 rows; the rows' segment ids are shared by all
  # mixtures (unbatched), as the evaluator's rows are.
  mesh = _mesh((4,), ("x",))
  seg = _segments(2)
  q, k, v = _qkv((2, 2, 2))
  mask = models.attention_mask(seg)

  ref = jax.vmap(
      jax.vmap(lambda a, b, c: attention.xla_attention(a, b, c, mask))
  )
  spl = jax.jit(
      jax.vmap(
          jax.vmap(lambda a, b, c: attention.splash_attention(a, b, c, seg))
      )
  )
  with attention.shard_rows(mesh, "x"):
    out = spl(q, k, v)
    jaxpr = jax.make_jaxpr(spl)(q, k, v)
  np.testing.assert_allclose(out, ref(q, k, v), atol=ATOL, rtol=0)
  # One kernel call on all 8 folded rows, split over the 4 devices.
  (specs,) = _shard_map_specs(jaxpr)
  assert specs[(8, T, H, D)] == P("x", None, None, None)
  assert specs[(8, T)] == P("x", None)


def test_rows_that_do_not_divide_use_fewer_devices():
  # 2 rows on a 2 x 2 mesh: split over the first axis only (the longest
  # prefix of the axes whose size divides the rows), the same values.
  mesh = _mesh((2, 2), ("a", "b"))
  seg = _segments(2)
  q, k, v = _qkv((2,))
  f = jax.jit(lambda a, b, c: attention.splash_attention(a, b, c, seg))
  with attention.shard_rows(mesh, ("a", "b")):
    out = f(q, k, v)
    (specs,) = _shard_map_specs(jax.make_jaxpr(f)(q, k, v))
  assert specs[(2, T, H, D)] == P("a", None, None, None)
  ref = attention.xla_attention(q, k, v, models.attention_mask(seg))
  np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)


def test_gradients_under_shard_rows_without_folding():
  # custom_vmap has no reverse mode: differentiated code (the gradient
  # search) turns folding off and keeps splash's own gradients.
  mesh = _mesh((2,), ("x",))
  seg = _segments(2)
  q, k, v = _qkv((2,))
  mask = models.attention_mask(seg)
  w = jax.random.normal(jax.random.key(5), q.shape)
  f_ref = lambda *a: (attention.xla_attention(*a, mask) * w).sum()
  f_spl = lambda *a: (attention.splash_attention(*a, seg) * w).sum()
  g_ref = jax.grad(f_ref, argnums=(0, 1, 2))(q, k, v)
  with attention.shard_rows(mesh, "x", fold_vmapped=False):
    g_spl = jax.jit(jax.grad(f_spl, argnums=(0, 1, 2)))(q, k, v)
  for a, b in zip(g_spl, g_ref):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)


def test_no_mesh_means_no_context():
  seg = _segments(1)
  q, k, v = _qkv((1,))
  with attention.shard_rows(None, "x"):
    out = attention.splash_attention(q, k, v, seg)
  ref = attention.xla_attention(q, k, v, models.attention_mask(seg))
  np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)
  assert not _shard_map_specs(
      jax.make_jaxpr(lambda a, b, c: attention.splash_attention(a, b, c, seg))(
          q, k, v
      )
  )
