"""Tests of the surrogates (demix_jax/search/surrogates.py)."""

import logging

import numpy as np
import pytest

from demix_jax import stats
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
  assert stats.spearman(m.predict(xt)["y"], yt) > 0.9


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


def test_fold_ids_are_a_seeded_permutation_mod_folds():
  f = surrogates.fold_ids(11, 4, seed=7)
  np.testing.assert_array_equal(f, np.random.default_rng(7).permutation(11) % 4)
  assert sorted(np.bincount(f)) == [2, 3, 3, 3]


def test_out_of_fold_predicts_each_point_without_it():
  x, y = _data(23)
  y[[1, 9]] = np.nan  # missing targets: predicted, never trained on
  pred = surrogates.out_of_fold("ridge", x, y, folds=4, seed=3)
  fold = surrogates.fold_ids(23, 4, seed=3)
  for f in range(4):
    tr = (fold != f) & np.isfinite(y)
    xc, yc = x[tr] - x[tr].mean(0), y[tr] - y[tr].mean()
    w = np.linalg.solve(xc.T @ xc + 0.5 * np.eye(4), xc.T @ yc)
    want = (x[fold == f] - x[tr].mean(0)) @ w + y[tr].mean()
    np.testing.assert_allclose(pred[fold == f], want, atol=1e-12)
  assert np.all(np.isfinite(pred))


def test_out_of_fold_targets_kinds_and_small_folds():
  x, y = _data(30, noise=0.05)
  both = surrogates.out_of_fold("auto", x, {"a": y, "b": -y}, seed=1)
  np.testing.assert_array_equal(
      both["a"], surrogates.out_of_fold("auto", x, y, seed=1)
  )
  np.testing.assert_allclose(both["b"], -both["a"], atol=1e-12)
  # A factory and the name with the same settings give the same numbers.
  lgbm = surrogates.LGBMParams(num_iterations=20)
  by_name = surrogates.out_of_fold(
      "lightgbm", x, y, seed=2, params=lgbm, ridge_alpha=9.0
  )
  by_factory = surrogates.out_of_fold(
      lambda n: surrogates.LightGBMSurrogate(lgbm), x, y, seed=2
  )
  np.testing.assert_array_equal(by_name, by_factory)
  # 5 points in 5 folds: 4 training points each, enough; 4 points: none.
  assert np.isfinite(surrogates.out_of_fold("ridge", x[:5], y[:5])).all()
  assert np.isnan(surrogates.out_of_fold("ridge", x[:4], y[:4])).all()
  # A fold whose training part has too few finite targets stays NaN.
  y6 = y[:6].copy()
  y6[surrogates.fold_ids(6, 3, 0) != 0] = np.nan
  pred = surrogates.out_of_fold("ridge", x[:6], y6, folds=3)
  assert np.isnan(pred).all()
  assert surrogates.out_of_fold("ridge", x[:1], y[:1]).shape == (1,)


def test_cross_validate_is_spearman_of_out_of_fold():
  x, y = _data(40, noise=0.1)
  ys = {"y": y, "sq": y**2}
  cv = surrogates.cross_validate("ridge", x, ys, folds=4, seed=5)
  pred = surrogates.out_of_fold("ridge", x, ys, folds=4, seed=5)
  assert cv == {t: stats.spearman(pred[t], ys[t]) for t in ys}
  assert cv == surrogates.cross_validate(
      lambda n: surrogates.RidgeSurrogate(0.5), x, ys, folds=4, seed=5
  )
