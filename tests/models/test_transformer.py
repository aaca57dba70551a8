"""Tests of the decoder: shapes, parameter counts, masking, layer scan."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from demix_jax import models
from demix_jax.models import presets
from tests import kit

CFG = kit.tiny_model(
    vocab_size=97, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=48
)


def _fwd(cfg, params, tokens, positions, segs, **kw):
  return jax.jit(lambda p, t, q, s: models.forward(cfg, p, t, q, s, **kw))(
      params, tokens, positions, segs
  )


def _packed(rng, b=2, t=24):
  tokens = rng.integers(2, CFG.vocab_size, size=(b, t)).astype(np.int32)
  segs = np.zeros((b, t), np.int32)
  segs[:, :10] = 1
  segs[:, 10:20] = 2
  pos = np.zeros((b, t), np.int32)
  pos[:, :10] = np.arange(10)
  pos[:, 10:20] = np.arange(10)
  return tokens, pos, segs


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_param_count_matches_formula(name):
  cfg = presets.PRESETS[name]
  shapes = jax.eval_shape(lambda: models.init_params(cfg, jax.random.key(0)))
  count = sum(x.size for x in jax.tree.leaves(shapes))
  assert count == models.num_params(cfg)
  axes = models.param_logical_axes(cfg)
  allowed = {"embed", "mlp", "heads", "kv", "vocab", "layers"}

  def check(x, names):
    assert len(names) == x.ndim
    assert set(names) <= allowed

  jax.tree.map(check, shapes, axes)
  for leaf, names in zip(
      jax.tree.leaves(shapes["layers"]),
      jax.tree.leaves(axes["layers"], is_leaf=lambda n: isinstance(n, tuple)),
  ):
    assert leaf.shape[0] == cfg.n_layers and names[0] == "layers"


def test_qwen3_shapes():
  c = presets.PRESETS["qwen3_1p7b"]
  assert 1.7e9 < models.num_params(c) < 1.75e9
  assert "lm_head" not in jax.eval_shape(
      lambda: models.init_params(c, jax.random.key(0))
  )
  c8 = presets.PRESETS["qwen3_8b"]
  s8 = jax.eval_shape(lambda: models.init_params(c8, jax.random.key(0)))
  assert s8["lm_head"].shape == (4096, 151_936)
  assert s8["layers"]["attn"]["q_proj"].shape == (36, 4096, 32, 128)
  assert s8["layers"]["attn"]["k_proj"].shape == (36, 4096, 8, 128)
  assert s8["layers"]["mlp"]["gate_proj"].shape == (36, 4096, 12288)
  assert 8.1e9 < models.num_params(c8) < 8.3e9


def test_forward_shape_dtype_bf16():
  cfg = dataclasses.replace(CFG, dtype="bfloat16", tie_embeddings=False)
  params = models.init_params(cfg, jax.random.key(1))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  tokens, pos, segs = _packed(np.random.default_rng(0))
  logits = _fwd(cfg, params, tokens, pos, segs)
  assert logits.shape == (2, 24, 97) and logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()


def test_causal_and_segment_masking():
  params = models.init_params(CFG, jax.random.key(2))
  rng = np.random.default_rng(1)
  tokens, pos, segs = _packed(rng)
  base = np.asarray(_fwd(CFG, params, tokens, pos, segs))
  # Change later tokens of document 1 (positions 6..9): positions 0..5 fixed.
  t2 = tokens.copy()
  t2[:, 6:10] = rng.integers(2, CFG.vocab_size, size=(2, 4))
  out = np.asarray(_fwd(CFG, params, t2, pos, segs))
  np.testing.assert_allclose(out[:, :6], base[:, :6], atol=1e-5, rtol=1e-5)
  assert np.abs(out[:, 6:10] - base[:, 6:10]).max() > 1e-3
  # Change document 1 entirely: document 2 (positions 10..19) unaffected.
  t3 = tokens.copy()
  t3[:, :10] = rng.integers(2, CFG.vocab_size, size=(2, 10))
  out = np.asarray(_fwd(CFG, params, t3, pos, segs))
  np.testing.assert_allclose(
      out[:, 10:20], base[:, 10:20], atol=1e-5, rtol=1e-5
  )
  # Without segment ids the same change leaks into document 2 (test can fail).
  one = np.ones_like(segs)
  a = np.asarray(_fwd(CFG, params, tokens, pos, one))
  b = np.asarray(_fwd(CFG, params, t3, pos, one))
  assert np.abs(a[:, 10:20] - b[:, 10:20]).max() > 1e-3


def test_layer_transform_identity_and_merge_of_copies():
  params = models.init_params(CFG, jax.random.key(3))
  tokens, pos, segs = _packed(np.random.default_rng(2))
  base = np.asarray(_fwd(CFG, params, tokens, pos, segs))
  ident = np.asarray(
      _fwd(CFG, params, tokens, pos, segs, layer_transform=lambda lp: lp)
  )
  np.testing.assert_array_equal(ident, base)
  # Stack K=3 copies on axis 1 ([L, K, ...]) and merge with weights summing
  # to one inside the scan: equals the original model.
  w = jnp.asarray([0.2, 0.5, 0.3])
  stacked = dict(params)
  stacked["layers"] = jax.tree.map(
      lambda x: jnp.stack([x, x, x], axis=1), params["layers"]
  )

  def merge(lp):
    assert all(x.shape[0] == 3 for x in jax.tree.leaves(lp))
    return jax.tree.map(lambda x: jnp.tensordot(w, x, axes=1), lp)

  merged = np.asarray(
      _fwd(CFG, stacked, tokens, pos, segs, layer_transform=merge)
  )
  np.testing.assert_allclose(merged, base, atol=1e-5, rtol=1e-5)
  # A transform that changes weights changes the output (test can fail).
  other = np.asarray(
      _fwd(
          CFG,
          params,
          tokens,
          pos,
          segs,
          layer_transform=lambda lp: jax.tree.map(lambda x: 0.5 * x, lp),
      )
  )
  assert np.abs(other - base).max() > 1e-3


def test_rope_theta_matters_and_positions_used():
  params = models.init_params(CFG, jax.random.key(4))
  tokens, pos, segs = _packed(np.random.default_rng(3))
  a = np.asarray(_fwd(CFG, params, tokens, pos, segs))
  c2 = dataclasses.replace(CFG, rope_theta=1e6)
  b = np.asarray(_fwd(c2, params, tokens, pos, segs))
  assert np.abs(a[:, 1:10] - b[:, 1:10]).max() > 1e-4
  # Position 0 has no rotation, so the first token is theta-independent.
  np.testing.assert_allclose(a[:, 0], b[:, 0], atol=1e-5, rtol=1e-5)


def test_config_errors():
  with pytest.raises(ValueError, match="n_kv_heads"):
    dataclasses.replace(CFG, n_kv_heads=3)
  with pytest.raises(ValueError, match="unknown model config keys"):
    models.ModelConfig.from_dict({**CFG.to_dict(), "d_modle": 3})
  with pytest.raises(ValueError, match="dtype"):
    dataclasses.replace(CFG, dtype="fp8")
  assert models.ModelConfig.from_dict(CFG.to_dict()) == CFG
