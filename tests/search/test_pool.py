"""Tests of the candidate pool samplers (demix_jax/search/pool.py)."""

import numpy as np
import pytest

from demix_jax.data import mixture
from demix_jax.search import pool

# The official DeMix prior (unique tokens of the 7 candidates, general first).
TOKENS = [1278, 284, 69, 100, 51, 141, 633]


def _official_pool(size=20_000, seed=0):
  prior = pool.prior_from_tokens(TOKENS, 0.7)
  caps = pool.epoch_caps(TOKENS, max_epochs=4.0)
  b = pool.Bounds(np.zeros(7), caps)
  cfg = pool.PoolConfig(size=size)
  return pool.sample_pool(cfg, np.random.default_rng(seed), b, prior), caps


def test_official_prior_and_caps():
  prior = pool.prior_from_tokens(TOKENS, 0.7)
  np.testing.assert_allclose(
      prior, [0.388, 0.135, 0.050, 0.065, 0.041, 0.083, 0.237], atol=1e-3
  )
  caps = pool.epoch_caps(TOKENS, max_epochs=4.0)
  np.testing.assert_allclose(
      caps, [1.0, 0.444, 0.108, 0.156, 0.080, 0.221, 0.991], atol=1e-3
  )


def test_demix_pool_caps_floor_sum_grid():
  p, caps = _official_pool()
  assert p.shape == (20_000, 7)
  # Hard caps: the official code's clipping leaks (0.85 for a 0.108 cap).
  assert np.all(p <= caps + 1e-12)
  assert np.all(p >= 0)
  np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
  assert not np.any((p > 0) & (p < 2e-4))
  units = p / 2e-4
  np.testing.assert_allclose(units, np.round(units), atol=1e-6)
  assert len(np.unique(np.round(units).astype(int), axis=0)) == len(p)


def test_demix_pool_matches_official_statistics():
  # The digest's 5k-sample check of sample.py: mean and share of zeros.
  p, _ = _official_pool()
  np.testing.assert_allclose(
      p.mean(axis=0),
      [0.448, 0.135, 0.028, 0.040, 0.017, 0.055, 0.277],
      atol=0.02,
  )
  np.testing.assert_allclose(
      (p == 0).mean(axis=0),
      [0.016, 0.18, 0.49, 0.41, 0.56, 0.33, 0.07],
      atol=0.05,
  )


def test_pool_is_reproducible():
  a, _ = _official_pool(size=3000, seed=5)
  b, _ = _official_pool(size=3000, seed=5)
  c, _ = _official_pool(size=3000, seed=6)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_uniform_pool_is_uniform_on_the_simplex():
  cfg = pool.PoolConfig(size=20_000, sampler="uniform", resolution=None)
  p = pool.sample_pool(cfg, np.random.default_rng(0), pool.Bounds.unbounded(4))
  np.testing.assert_allclose(p.mean(axis=0), 0.25, atol=0.01)
  # Dirichlet(1) marginal: Beta(1, 3), variance 3 / (16 * 5).
  np.testing.assert_allclose(p.var(axis=0), 3 / 80, rtol=0.08)


def test_constraints_lower_bound_and_fixed_weight():
  names = ("general", "math", "code")
  b = pool.Bounds.unbounded(3).with_constraints(
      names, {"general": (0.2, 1.0), "code": 0.1}
  )
  cfg = pool.PoolConfig(size=2000, sampler="uniform")
  p = pool.sample_pool(cfg, np.random.default_rng(0), b, names=names)
  assert np.all(p[:, 0] >= 0.2 - 1e-12)
  np.testing.assert_allclose(p[:, 2], 0.1, atol=1e-12)
  np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)


def test_tight_caps_hold_with_redistribution():
  # Caps summing to just over 1 force almost every row onto the caps.
  caps = np.array([0.3, 0.3, 0.25, 0.2])
  b = pool.Bounds(np.zeros(4), caps)
  cfg = pool.PoolConfig(size=500, sampler="demix")
  prior = np.array([0.7, 0.1, 0.1, 0.1])
  p = pool.sample_pool(cfg, np.random.default_rng(1), b, prior)
  assert np.all(p <= caps + 1e-12)
  np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)


def test_cap_project_keeps_capped_entries():
  x = np.array([[0.9, 0.05, 0.05, 0.0]])
  y = pool.cap_project(x, np.zeros(4), np.array([0.4, 0.4, 1.0, 1.0]))
  # Excess 0.5 goes to the free entries in proportion (0.05 : 0.05 : 0).
  np.testing.assert_allclose(y, [[0.4, 0.3, 0.3, 0.0]], atol=1e-12)


def test_infeasible_bounds_raise():
  with pytest.raises(ValueError, match="caps sum to"):
    pool.Bounds(np.zeros(3), np.array([0.3, 0.3, 0.3])).validate()
  with pytest.raises(ValueError, match="lower bounds sum"):
    pool.Bounds(np.array([0.6, 0.6, 0.0]), np.ones(3)).validate()
  with pytest.raises(ValueError, match="general"):
    pool.Bounds.unbounded(2).with_constraints(
        ("general", "code"), {"general": (0.5, 0.4)}
    )
  with pytest.raises(ValueError, match="caps sum to"):
    # Too little data for the run: 4 epochs of 10 + 10 tokens < 100.
    pool.Bounds(
        np.zeros(2), pool.epoch_caps([10, 10], run_tokens=100)
    ).validate()


def test_zero_token_candidate_raises():
  with pytest.raises(ValueError, match="zero"):
    pool.prior_from_tokens([100, 0, 50])
  with pytest.raises(ValueError, match="zero"):
    pool.epoch_caps([100, 0, 50])


def test_epoch_caps_with_beta_keep_epochs():
  """Pool rows under the padded caps never repeat a source > max_epochs."""
  tokens = np.array([1000.0, 50.0, 80.0])
  caps = pool.epoch_caps(
      tokens, run_tokens=400.0, max_epochs=2.0, beta=0.5, general_index=0
  )
  b = pool.Bounds(np.zeros(3), caps)
  p = pool.sample_pool(
      pool.PoolConfig(size=500, sampler="uniform"), np.random.default_rng(0), b
  )
  names = ("g", "m", "c")
  counts = dict(zip(names, tokens))
  for row in p:
    w = mixture.alpha_to_weights(dict(zip(names, row)), "g", 0.5)
    assert abs(sum(w.values()) - 1.0) < 1e-12
    ep = mixture.epochs_per_source(w, counts, 400)
    assert max(ep.values()) <= 2.0 + 1e-9


def test_leaky_clip_rescales_earlier_caps():
  # By hand: cap 0 (0.2) moves 0.3 onto the rest (x 1.6); then cap 1 (0.3)
  # moves 0.18 onto the rest (x 1 + 0.18 / 0.52), which lifts entry 0 back
  # over its cap, as the official sampler does.
  x = np.array([[0.5, 0.3, 0.2]])
  out = pool.leaky_clip(x, np.array([0.2, 0.3, 1.0]))
  s = 1 + 0.18 / 0.52
  np.testing.assert_allclose(out, [[0.2 * s, 0.3, 0.32 * s]], rtol=1e-12)
  np.testing.assert_allclose(out.sum(), 1.0, rtol=1e-12)
  # Rows under every cap are untouched.
  y = np.array([[0.1, 0.2, 0.7]])
  np.testing.assert_array_equal(pool.leaky_clip(y, np.ones(3)), y)


def test_official_caps_leak_and_match_official_statistics():
  prior = pool.prior_from_tokens(TOKENS, 0.7)
  caps = pool.epoch_caps(TOKENS, max_epochs=4.0)
  b = pool.Bounds(np.zeros(7), caps)
  cfg = pool.PoolConfig(size=20_000, caps="official")
  p = pool.sample_pool(cfg, np.random.default_rng(0), b, prior)
  assert p.shape == (20_000, 7)
  # Rounded to the grid, then renormalised (so only near the grid), as the
  # official code does.
  np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
  units = p / 2e-4
  assert np.abs(units - np.round(units)).max() > 1e-6
  # The caps leak (the official pool's math_high went far past 0.108).
  assert p[:, 2].max() > 2 * caps[2]
  assert np.any(p > caps + 1e-9)
  np.testing.assert_allclose(
      p.mean(axis=0),
      [0.448, 0.135, 0.028, 0.040, 0.017, 0.055, 0.277],
      atol=0.015,
  )
  np.testing.assert_allclose(
      (p == 0).mean(axis=0),
      [0.016, 0.18, 0.49, 0.41, 0.56, 0.33, 0.07],
      atol=0.05,
  )


def test_official_caps_refuse_lower_bounds():
  b = pool.Bounds(np.array([0.1, 0.0, 0.0]), np.ones(3))
  cfg = pool.PoolConfig(size=10, sampler="uniform", caps="official")
  with pytest.raises(ValueError, match="caps='hard'"):
    pool.sample_pool(cfg, np.random.default_rng(0), b)
