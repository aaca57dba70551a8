"""Consistency metrics on hand-computed cases (ties, top-25%, directions)."""

import math

import numpy as np
import pytest
from scipy import stats

from demix_jax import stats as stats_lib
from demix_jax.validation import metrics


def test_average_ranks_share_tied_ranks():
  np.testing.assert_array_equal(
      stats_lib.average_ranks([10, 20, 20, 30]), [1, 2.5, 2.5, 4]
  )
  np.testing.assert_array_equal(stats_lib.average_ranks([5, 5, 5]), [2, 2, 2])
  with pytest.raises(ValueError, match="finite"):
    stats_lib.average_ranks([1.0, np.nan])


def test_spearman_hand_cases():
  assert stats_lib.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
  assert stats_lib.spearman([3, 2, 1], [10, 20, 30]) == pytest.approx(-1.0)
  # No ties: 1 - 6 * sum d^2 / (n (n^2 - 1)) = 1 - 6 * 4 / 120.
  assert stats_lib.spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(
      0.8, abs=1e-12
  )
  # Ties: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4): 4.5 / sqrt(4.5 * 5).
  assert stats_lib.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(
      math.sqrt(0.9), abs=1e-12
  )


def test_spearman_matches_scipy_with_ties():
  rng = np.random.default_rng(0)
  for _ in range(5):
    p = rng.integers(0, 5, size=20).astype(float)
    r = rng.integers(0, 5, size=20).astype(float)
    assert stats_lib.spearman(p, r) == pytest.approx(
        stats.spearmanr(p, r).statistic, abs=1e-12
    )


def test_spearman_nan_and_undefined():
  # Index 1 dropped: ranks (1, 2, 3) vs (2, 3, 1), sum d^2 = 6 -> -0.5.
  assert stats_lib.spearman([1, np.nan, 3, 4], [1, 2, 3, 0]) == pytest.approx(
      -0.5, abs=1e-12
  )
  # Undefined rho is NaN (not the official script's 0.0).
  assert math.isnan(stats_lib.spearman([1, 1, 1], [1, 2, 3]))  # constant proxy
  assert math.isnan(stats_lib.spearman([1, np.nan], [1, 2]))  # one pair left
  with pytest.raises(ValueError, match="same mixtures"):
    stats_lib.spearman([1, 2], [1, 2, 3])


def test_undefined_rho_is_nan_and_skipped_by_macro():
  ref = {"general": [1.0, 2.0, 3.0, 4.0], "code": [4.0, 1.0, 3.0, 2.0]}
  prox = {"general": [2.0, 2.0, 2.0, 2.0], "code": [4.0, 1.0, 3.0, 2.0]}
  out = metrics.consistency(prox, ref, {"general": True, "code": True})
  assert math.isnan(out["rho"]["general"])  # a constant proxy
  assert out["rho"]["code"] == pytest.approx(1.0)
  assert out["rho"]["macro"] == pytest.approx(1.0)  # not (0 + 1) / 2
  assert math.isnan(out["top25_rho"]["general"])
  assert math.isnan(metrics.top_rho([1.0], [2.0], True))


def test_top_k_size():
  assert [metrics.top_k(n) for n in (3, 8, 9, 12, 96)] == [2, 2, 2, 3, 24]


def test_top_rho_subset_and_direction():
  r = np.arange(12.0)  # reference score of mixture i is i
  p = np.arange(12.0)
  p[[9, 10, 11]] = [5, 3, 4]  # top 3 (higher better): ranks (3,1,2) vs (1,2,3)
  p[[0, 1, 2]] = [-3, -2, -1]  # bottom 3 stay in order
  assert metrics.top_rho(p, r, True) == pytest.approx(-0.5, abs=1e-12)
  # Lower is better: the best are mixtures 0, 1, 2, ordered perfectly.
  assert metrics.top_rho(p, r, False) == pytest.approx(1.0)
  # The full rho sees the whole set and differs from both.
  assert stats_lib.spearman(p, r) not in (
      pytest.approx(-0.5),
      pytest.approx(1.0),
  )


def test_top_rho_boundary_tie_takes_earlier_mixture():
  # k = 2; reference tie at 2nd place between mixtures 1 and 2: 1 wins.
  r = [3, 2, 2, 1]
  p = [1, 3, 0, 0]  # on (0, 1): (1, 3) vs (3, 2) -> -1; on (0, 2) it'd be +1
  assert metrics.top_rho(p, r, True) == pytest.approx(-1.0)


def test_capability_recovery():
  assert metrics.capability_recovery([1, 2, 3], [2, 2, 2], True) == 1.0
  assert metrics.capability_recovery([1, 1, 1], [2, 2, 2], True) == 0.5
  # bpb: proxy 2 bits where the reference has 1 -> half the capability.
  assert metrics.capability_recovery([2, 2, 2], [1, 1, 1], False) == 0.5
  # A ratio of sums, 5 / 4, not the mean of ratios (2 + 1) / 2 = 1.5.
  assert metrics.capability_recovery([2, 3], [1, 3], True) == pytest.approx(
      1.25
  )
  assert metrics.capability_recovery([1, np.nan], [2, 100], True) == 0.5
  assert math.isnan(metrics.capability_recovery([1, 2], [0, 0], True))


def test_decision_accuracy_hand_cases():
  # Pairs (0,1) ok, (0,2) ok, (1,2) swapped.
  assert metrics.decision_accuracy([1, 3, 2], [1, 2, 3]) == pytest.approx(2 / 3)
  # Reference tie (0,1) left out; (0,2) ok; proxy tie (1,2) counts 1/2.
  assert metrics.decision_accuracy([5, 6, 6], [1, 1, 2]) == 0.75
  assert math.isnan(metrics.decision_accuracy([1, 2, 3], [4, 4, 4]))
  # Without ties it is (Kendall tau + 1) / 2.
  rng = np.random.default_rng(1)
  p, r = rng.normal(size=15), rng.normal(size=15)
  assert metrics.decision_accuracy(p, r) == pytest.approx(
      (stats.kendalltau(p, r).statistic + 1) / 2, abs=1e-12
  )


def test_regret_and_pick_rank():
  gap, rank = metrics.regret([1, 2, 3], [0.5, 0.9, 0.7], True)
  assert gap == pytest.approx(0.2) and rank == 2
  # bpb: the proxy picks its lowest (mixture 2, 1.1) but 1.0 was best.
  gap, rank = metrics.regret([1.5, 1.6, 1.4], [1.2, 1.0, 1.1], False)
  assert gap == pytest.approx(0.1) and rank == 2
  # Proxy tie: the first index is picked.
  gap, rank = metrics.regret([3, 3, 1], [1.0, 2.0, 0.0], True)
  assert gap == pytest.approx(1.0) and rank == 2
  assert metrics.regret([1, 2, 3], [1, 2, 3], True) == (0.0, 1)
  assert metrics.regret([1, 2, 3], [1, 2, 3], False) == (0.0, 1)


def test_mixture_rank():
  ref = [1, 2, 3, 4]
  assert metrics.mixture_rank(3, ref, True) == 2
  assert metrics.mixture_rank(5, ref, True) == 1
  assert metrics.mixture_rank(0, ref, True) == 5
  assert metrics.mixture_rank(3, ref, False) == 3
  assert metrics.mixture_rank(2, ref, True) == 3  # an equal ref: no push
  assert metrics.mixture_rank(2, [1, np.nan, 3], True) == 2
  with pytest.raises(ValueError):
    metrics.mixture_rank(np.nan, ref, True)
  ranks = metrics.mixture_ranks(
      {"general": 0.5, "code": 0.2},
      {"general": [0.4, 0.6, 0.7], "code": [0.1, 0.3, 0.4]},
      {"general": True, "code": True},
  )
  assert ranks == {"general": 3.0, "code": 3.0, "macro": 3.0}


def test_consistency_macro_and_direction_flip():
  rng = np.random.default_rng(2)
  ref = {d: rng.normal(size=16) for d in ("general", "code", "math")}
  prox = {d: v + 0.5 * rng.normal(size=16) for d, v in ref.items()}
  hib = {"general": True, "code": True, "math": True}
  out = metrics.consistency(prox, ref, hib)
  assert set(out) == set(metrics.METRICS)
  for m in metrics.METRICS:
    assert out[m]["macro"] == pytest.approx(np.mean([out[m][d] for d in hib]))
  # The same data as a lower-is-better metric (negated) gives the same
  # ranking metrics: only the direction-aware selection flips with it.
  flipped = metrics.consistency(
      {d: -v for d, v in prox.items()},
      {d: -v for d, v in ref.items()},
      {d: False for d in hib},
  )
  for m in ("rho", "top25_rho", "decision_accuracy", "regret", "pick_rank"):
    for d in list(hib) + ["macro"]:
      assert flipped[m][d] == pytest.approx(out[m][d], abs=1e-12), (m, d)
  with pytest.raises(KeyError, match="math"):
    metrics.consistency({"general": [1, 2]}, ref, hib)


def test_macro_skips_nan():
  assert metrics.macro({"a": 1.0, "b": np.nan, "c": 3.0}) == 2.0
  assert math.isnan(metrics.macro({"a": np.nan}))


def test_bootstrap_interval_covers_rho_and_shrinks_with_n():
  rng = np.random.default_rng(1)
  widths = []
  for n in (12, 96):
    truth = rng.normal(size=n)
    ref = {"a": truth, "b": truth}
    proxy = {"a": truth + 0.7 * rng.normal(size=n), "b": -truth}
    ci = metrics.bootstrap_rho(proxy, ref, ["a", "b"], n_boot=400)
    rho = stats_lib.spearman(proxy["a"], ref["a"])
    assert ci["a"][0] <= rho <= ci["a"][1]
    # A perfectly anti-monotone proxy: every resample gives exactly -1.
    np.testing.assert_allclose(ci["b"], [-1.0, -1.0], atol=1e-12)
    assert ci["macro"][0] <= (rho - 1) / 2 <= ci["macro"][1]
    widths.append(ci["a"][1] - ci["a"][0])
  assert widths[1] < 0.6 * widths[0]


def test_bootstrap_is_seeded_and_undefined_is_nan():
  ref = {"a": np.arange(10.0)}
  noisy = {"a": np.arange(10.0) + np.random.default_rng(2).normal(size=10)}
  assert metrics.bootstrap_rho(noisy, ref, ["a"]) == metrics.bootstrap_rho(
      noisy, ref, ["a"]
  )
  const = metrics.bootstrap_rho({"a": np.ones(10)}, ref, ["a"], n_boot=50)
  assert all(math.isnan(x) for x in const["a"] + const["macro"])
  with pytest.raises(ValueError, match="level"):
    metrics.bootstrap_rho(noisy, ref, ["a"], level=1.0)


def test_ceiling_is_replica_spearman():
  first = {"a": [1.0, 2.0, 3.0, 4.0], "b": [4.0, 3.0, 2.0, 1.0]}
  second = {"a": [1.0, 3.0, 2.0, 4.0], "b": [1.0, 2.0, 3.0, 4.0]}
  c = metrics.ceiling(first, second, ["a", "b"])
  assert c["a"] == pytest.approx(0.8) and c["b"] == pytest.approx(-1.0)
  assert c["macro"] == pytest.approx(-0.1)
