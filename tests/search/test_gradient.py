"""Tests of the gradient search (demix_jax/search/gradient.py)."""

import jax.numpy as jnp
import numpy as np
import pytest

from demix_jax.search import gradient
from demix_jax.search import pool


def _quadratic(target):
  t = jnp.asarray(target, jnp.float32)
  return lambda a: jnp.sum((a - t) ** 2)


def test_finds_interior_optimum_from_several_starts():
  target = np.array([0.5, 0.3, 0.15, 0.05])
  r = gradient.gradient_search(
      _quadratic(target),
      pool.Bounds.unbounded(4),
      gradient.GradientConfig(steps=100, starts=3),
  )
  np.testing.assert_allclose(r.alpha, target, atol=1e-4)
  assert r.paths.shape == (3, 101, 4)
  assert r.values.shape == (3, 101)
  assert r.evaluations == 303
  np.testing.assert_allclose(r.paths.sum(-1), 1.0, atol=1e-5)


def test_finds_optimum_with_an_active_cap():
  # Unconstrained optimum (0.5, 0.3, 0.15, 0.05) violates the 0.35 cap; the
  # optimum on the capped simplex is the Euclidean projection of the target:
  # the cap binds and the others rise equally by 0.05.
  b = pool.Bounds(np.zeros(4), np.array([0.35, 1.0, 1.0, 1.0]))
  r = gradient.gradient_search(
      _quadratic([0.5, 0.3, 0.15, 0.05]), b, gradient.GradientConfig(steps=100)
  )
  np.testing.assert_allclose(r.alpha, [0.35, 0.35, 0.2, 0.1], atol=1e-4)
  assert np.all(r.paths[..., 0] <= 0.35 + 1e-6)
  assert r.alpha[0] <= 0.35


def test_finds_optimum_on_a_face_of_the_simplex():
  # Projection of (0.7, 0.4, -0.1, 0) onto the simplex: (0.65, 0.35, 0, 0).
  r = gradient.gradient_search(
      _quadratic([0.7, 0.4, -0.1, 0.0]),
      pool.Bounds.unbounded(4),
      gradient.GradientConfig(steps=100),
  )
  np.testing.assert_allclose(r.alpha, [0.65, 0.35, 0.0, 0.0], atol=1e-4)


def test_non_quadratic_convex_objective_matches_a_dense_grid():
  w = np.array([[1.0, 0.2, 0.5], [0.1, 1.5, 0.3], [0.4, 0.3, 1.2]])
  f = lambda a: -jnp.sum(jnp.log(jnp.asarray(w, jnp.float32) @ a + 0.05))
  b = pool.Bounds(np.array([0.2, 0.0, 0.0]), np.array([1.0, 0.5, 1.0]))
  r = gradient.gradient_search(f, b, gradient.GradientConfig(steps=150))
  g = np.stack(np.meshgrid(*[np.linspace(0, 1, 401)] * 2), -1).reshape(-1, 2)
  grid = np.concatenate([g, 1 - g.sum(-1, keepdims=True)], -1)
  ok = np.all((grid >= b.lower - 1e-9) & (grid <= b.upper + 1e-9), axis=1)
  grid = grid[ok]
  vals = -np.log(grid @ w.T + 0.05).sum(-1)
  assert r.value <= vals.min() + 1e-5
  assert np.abs(r.alpha - grid[np.argmin(vals)]).max() < 5e-3


def test_refinement_from_an_init_and_bounds_hold():
  b = pool.Bounds(np.array([0.2, 0.0, 0.0]), np.array([0.6, 0.3, 1.0]))
  init = np.array([0.6, 0.3, 0.1])
  r = gradient.gradient_search(
      _quadratic([0.1, 0.1, 0.8]),
      b,
      gradient.GradientConfig(steps=150, starts=1),
      init=init,
  )
  # The start is the init, nudged to the interior.
  assert np.abs(r.paths[0, 0] - init).max() < 0.05
  # Euclidean projection: the lower bound binds (0.2); the other 0.8 is
  # (0.1, 0.8) minus 0.05 each.
  np.testing.assert_allclose(r.alpha, [0.2, 0.05, 0.75], atol=1e-4)
  assert np.all(r.alpha >= b.lower) and np.all(r.alpha <= b.upper)
  np.testing.assert_allclose(r.alpha.sum(), 1.0, atol=1e-12)


def test_kl_projection_hand_case():
  # KL projection is a rescaling with clipping: (0.8, 0.1, 0.1) under a 0.5
  # cap becomes (0.5, 0.25, 0.25).
  x = gradient.kl_project_np(
      np.array([0.8, 0.1, 0.1]), np.zeros(3), np.array([0.5, 1.0, 1.0])
  )
  np.testing.assert_allclose(x, [0.5, 0.25, 0.25], atol=1e-12)
  xj = gradient.kl_project(
      jnp.array([0.8, 0.1, 0.1]), jnp.zeros(3), jnp.array([0.5, 1.0, 1.0])
  )
  np.testing.assert_allclose(np.asarray(xj), [0.5, 0.25, 0.25], atol=1e-6)


def test_bad_settings_raise():
  with pytest.raises(ValueError, match="caps sum"):
    gradient.gradient_search(
        _quadratic([1.0, 0.0]), pool.Bounds(np.zeros(2), np.full(2, 0.4))
    )
  with pytest.raises(ValueError, match="decay"):
    gradient.gradient_search(
        _quadratic([1.0, 0.0]),
        pool.Bounds.unbounded(2),
        gradient.GradientConfig(decay="cosine"),
    )
