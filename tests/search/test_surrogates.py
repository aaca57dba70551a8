"""Tests of the surrogates (demix_jax/search/surrogates.py)."""

import logging

import numpy as np
import pytest

from demix_jax.search import surrogates


def _data(n, seed=0, noise=0.0):
  rng = np.random.default_rng(seed)
  x = rng.dirichlet(np.ones(4), size=n)
  y = np.sin(3 * x[:, 0]) + (x[:, 1] - 0.3) ** 2 * 4 - x[:, 2]
  return x, y + noise * rng.standard_normal(n)


def test_ridge_matches_closed_form():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(50, 3))
  y = x @ np.array([1.0, -2.0, 0.5]) + 3.0
  m = surrogates.RidgeSurrogate(alpha=0.5).fit(x, {"y": y})
  xc = x - x.mean(0)
  w = np.linalg.solve(xc.T @ xc + 0.5 * np.eye(3), xc.T @ (y - y.mean()))
  b = y.mean() - x.mean(0) @ w
  np.testing.assert_allclose(m.predict(x)["y"], x @ w + b, atol=1e-10)


@pytest.mark.parametrize("kind", ["lightgbm", "gp", "ensemble"])
def test_nonlinear_fit_ranks_held_out_points(kind):
  x, y = _data(200, noise=0.01)
  xt, yt = _data(200, seed=1)
  m = surrogates.make_surrogate(
      kind, len(x), surrogates.LGBMParams(num_iterations=200)
  )
  m.fit(x, {"y": y})
  assert surrogates.spearman(m.predict(xt)["y"], yt) > 0.9


def test_lightgbm_splits_on_small_data():
  # LightGBM's default min_data_in_leaf=20 would give a constant model here.
  x, y = _data(24)
  m = surrogates.LightGBMSurrogate().fit(x, {"y": y})
  assert np.ptp(m.predict(x)["y"]) > 0.1


def test_uncertainty_grows_away_from_data():
  x, y = _data(60)
  for kind in ("gp", "ensemble"):
    m = surrogates.make_surrogate(kind, 60).fit(x, {"y": y})
    near = x[:5] + 1e-3
    far = np.array([[4.0, -3.0, 0.0, 0.0]])
    _, s_near = m.predict_with_std(near)
    _, s_far = m.predict_with_std(far)
    assert m.has_std
    assert s_far["y"][0] > s_near["y"].mean(), kind


def test_auto_picks_ridge_for_small_data():
  small = surrogates.make_surrogate("auto", surrogates.AUTO_RIDGE_BELOW - 1)
  big = surrogates.make_surrogate("auto", surrogates.AUTO_RIDGE_BELOW)
  assert isinstance(small, surrogates.RidgeSurrogate)
  assert isinstance(big, surrogates.LightGBMSurrogate)
  with pytest.raises(ValueError, match="unknown surrogate"):
    surrogates.make_surrogate("xgb", 10)


def test_too_few_points_and_nan_rows(caplog):
  x, y = _data(3)
  with pytest.raises(ValueError, match="at least"):
    surrogates.RidgeSurrogate().fit(x, {"y": y})
  x, y = _data(20)
  y[[2, 5]] = np.nan
  with caplog.at_level(logging.WARNING):
    m = surrogates.RidgeSurrogate().fit(x, {"y": y})
  assert "2 of 20 rows" in caplog.text
  assert np.all(np.isfinite(m.predict(x)["y"]))


def test_cross_validate_reports_per_target():
  x, y = _data(80, noise=0.01)
  cv = surrogates.cross_validate(
      lambda n: surrogates.make_surrogate("auto", n),
      x,
      {"y": y, "neg": -y},
      folds=5,
  )
  assert set(cv) == {"y", "neg"}
  assert cv["y"] > 0.85 and cv["neg"] > 0.85
  tiny = surrogates.cross_validate(
      lambda n: surrogates.RidgeSurrogate(), x[:4], {"y": y[:4]}
  )
  assert np.isnan(tiny["y"])
