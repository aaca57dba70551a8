"""Attention implementations agree on packed rows; memory options are exact
where they claim to be.

Tolerances: inputs are float32 with unit-scale values. The splash kernel
(Pallas interpret mode on CPU) computes the same softmax as the XLA path
but online, block by block (running max and sum), so the sums round in a
different order: each output is a convex combination of value rows, and a
reordering changes it by a few float32 ulps per block of keys (T = 256
here, 2 blocks of 128). 2e-5 absolute is ~100x float32 epsilon at these
magnitudes and far below what any masking mistake produces (attending to
one wrong key moves outputs by ~1e-1, checked by the negative test).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from demix_jax import models
from demix_jax.merging import nll as nll_lib
from demix_jax.models import attention
from demix_jax.models import loss
from demix_jax.models import memory
from tests import kit

ATOL = 2e-5


def _packed(b=2, t=256, seed=0):
  """Rows of 3 documents and trailing padding (segment 0)."""
  seg = np.zeros((b, t), np.int32)
  pos = np.zeros((b, t), np.int32)
  rng = np.random.default_rng(seed)
  for r in range(b):
    cuts = np.sort(rng.choice(np.arange(10, t - 20), 3, replace=False))
    start = 0
    for i, end in enumerate(cuts):
      seg[r, start:end] = i + 1
      pos[r, start:end] = np.arange(end - start)
      start = end
  return jnp.asarray(seg), jnp.asarray(pos)


def _qkv(b=2, t=256, h=4, kvh=2, hd=32, seed=1):
  ks = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(ks[0], (b, t, h, hd), jnp.float32)
  k = jax.random.normal(ks[1], (b, t, kvh, hd), jnp.float32)
  v = jax.random.normal(ks[2], (b, t, kvh, hd), jnp.float32)
  return q, k, v


def test_resolve_by_backend():
  assert attention.resolve("auto", "tpu") == "splash"
  assert attention.resolve("auto", "gpu") == "cudnn"
  assert attention.resolve("auto", "cpu") == "xla"
  assert attention.resolve("splash", "cpu") == "splash"
  with pytest.raises(ValueError, match="model.attention"):
    attention.resolve("flash")


def test_splash_interpret_matches_xla_on_packed_rows():
  seg, _ = _packed()
  q, k, v = _qkv()
  ref = attention.xla_attention(q, k, v, models.attention_mask(seg))
  out = attention.splash_attention(q, k, v, seg)
  np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)
  # Negative control: ignoring the segments (causal only) is far off.
  causal = models.attention_mask(jnp.ones_like(seg))
  wrong = attention.xla_attention(q, k, v, causal)
  assert float(jnp.abs(wrong - ref).max()) > 1e-1


def test_splash_gradients_match_xla():
  seg, _ = _packed(b=1)
  q, k, v = _qkv(b=1)
  mask = models.attention_mask(seg)
  w = jax.random.normal(jax.random.key(5), q.shape)
  f_ref = lambda *a: (attention.xla_attention(*a, mask) * w).sum()
  f_spl = lambda *a: (attention.splash_attention(*a, seg) * w).sum()
  g_ref = jax.grad(f_ref, argnums=(0, 1, 2))(q, k, v)
  g_spl = jax.grad(f_spl, argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(g_spl, g_ref):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)


def test_cudnn_plumbing_matches_xla():
  # Same call as the GPU path with XLA's implementation: checks the GQA
  # layout, scale and segment mask handed to jax.nn.dot_product_attention.
  seg, _ = _packed(t=64)
  q, k, v = _qkv(t=64)
  ref = attention.xla_attention(q, k, v, models.attention_mask(seg))
  out = attention.cudnn_attention(q, k, v, seg, implementation="xla")
  np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)


TINY = kit.tiny_model(
    vocab_size=96, d_model=64, n_heads=4, n_kv_heads=2, head_dim=32, d_ff=128
)


def _batch(t=128):
  seg, pos = _packed(t=t)
  tok = jax.random.randint(jax.random.key(3), seg.shape, 0, TINY.vocab_size)
  return tok, pos, seg


@pytest.mark.slow
def test_model_with_splash_matches_xla():
  tok, pos, seg = _batch()
  params = models.init_params(TINY, jax.random.key(0))
  ref = models.forward(TINY, params, tok, pos, seg)
  cfg = dataclasses.replace(TINY, attention="splash")
  out = models.forward(cfg, params, tok, pos, seg)
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def test_config_rejects_unknown_names():
  with pytest.raises(ValueError, match="model.attention"):
    dataclasses.replace(TINY, attention="flash")
  with pytest.raises(ValueError, match="model.remat"):
    dataclasses.replace(TINY, remat="save_everything")
  with pytest.raises(ValueError, match="loss_chunk"):
    dataclasses.replace(TINY, loss_chunk=-1)
  assert memory.remat_name(True) == "full"
  assert memory.remat_name(False) == "none"


@pytest.mark.parametrize("chunk", [32, 48])  # 48 does not divide T = 128
def test_chunked_loss_equals_unchunked(chunk):
  tok, pos, seg = _batch()
  params = models.init_params(TINY, jax.random.key(0))
  nll, mask = loss.batch_nll(TINY, params, tok, pos, seg)
  ref, ref_mask = models.next_token_nll(
      models.forward(TINY, params, tok, pos, seg), tok, seg
  )
  assert bool((nll == ref).all()) and bool((mask == ref_mask).all())
  cfg = dataclasses.replace(TINY, loss_chunk=chunk)
  c_nll, c_mask = loss.batch_nll(cfg, params, tok, pos, seg)
  np.testing.assert_array_equal(c_mask, mask)
  np.testing.assert_allclose(c_nll, nll, atol=1e-5, rtol=0)
  # Gradients through the rematerialised chunks.
  total = lambda c: lambda p: loss.batch_nll(c, p, tok, pos, seg)[0].sum()
  g = jax.grad(total(TINY))(params)
  gc = jax.grad(total(cfg))(params)
  for a, b in zip(jax.tree.leaves(gc), jax.tree.leaves(g)):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)


def test_chunked_row_nll_equals_row_nll():
  tok, pos, seg = _batch()
  params = models.init_params(TINY, jax.random.key(0))
  tmask = (seg > 1).astype(jnp.float32)
  ref = nll_lib.row_nll(models.forward(TINY, params, tok, pos, seg), tok, tmask)
  cfg = dataclasses.replace(TINY, loss_chunk=40)
  b = dict(tokens=tok, positions=pos, segment_ids=seg, target_mask=tmask)
  out = nll_lib.chunked_row_nll(cfg, params, None, b)
  np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("policy", memory.REMAT_POLICIES)
def test_remat_policies_leave_gradients_unchanged(policy):
  tok, pos, seg = _batch(t=64)
  params = models.init_params(TINY, jax.random.key(0))
  f = lambda c: jax.grad(
      lambda p: loss.batch_nll(c, p, tok, pos, seg)[0].sum()
  )(params)
  ref = f(TINY)
  got = f(dataclasses.replace(TINY, remat=policy))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
