"""demix_jax.stats: the one Spearman (hand values, ties, undefined cases)."""

import ast
import inspect
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from demix_jax import stats
from demix_jax.search import surrogates
from demix_jax.validation import metrics


def test_average_ranks_hand_values():
  np.testing.assert_array_equal(
      stats.average_ranks([30, 10, 20, 20]), [4, 1, 2.5, 2.5]
  )
  np.testing.assert_array_equal(stats.average_ranks([7, 7, 7]), [2, 2, 2])
  np.testing.assert_array_equal(stats.average_ranks([]), [])
  with pytest.raises(ValueError, match="finite"):
    stats.average_ranks([1.0, np.inf])


def test_spearman_hand_values():
  assert stats.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
  assert stats.spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
  # No ties: 1 - 6 * sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 60.
  assert stats.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
  # Ties on both sides: ranks (1.5, 1.5, 3, 4) vs (1, 2.5, 2.5, 4):
  # centred (-1, -1, .5, 1.5) and (-1.5, 0, 0, 1.5): 3.75 / sqrt(4.5 * 4.5).
  assert stats.spearman([5, 5, 6, 9], [0, 1, 1, 2]) == pytest.approx(
      3.75 / 4.5, abs=1e-12
  )
  # Two finite pairs are enough for a rank correlation.
  assert stats.spearman([1, 2, np.nan], [5, 3, 1]) == pytest.approx(-1.0)


@pytest.mark.parametrize(
    "a,b",
    [
        ([], []),
        ([1.0], [2.0]),
        ([1.0, np.nan, 3.0], [np.nan, 2.0, 4.0]),  # one finite pair
        ([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]),  # constant first side
        ([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]),  # constant second side
        ([1.0, 2.0, 9.0], [3.0, 3.0, np.inf]),  # constant once inf dropped
    ],
)
def test_spearman_is_nan_where_undefined(a, b):
  assert math.isnan(stats.spearman(a, b))


def test_spearman_rejects_different_lengths():
  with pytest.raises(ValueError, match="3 values against 2"):
    stats.spearman([1, 2, 3], [1, 2])


def test_spearman_equals_scipy_to_the_last_bit():
  # The search's cross-validated rho used scipy: same numbers, bit for bit.
  rng = np.random.default_rng(0)
  for i in range(300):
    n = int(rng.integers(3, 120))
    a = rng.integers(0, 6, n).astype(float) if i % 2 else rng.normal(size=n)
    b = rng.integers(0, 4, n).astype(float) if i % 3 else rng.normal(size=n)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
      continue
    assert stats.spearman(a, b) == scipy_stats.spearmanr(a, b).statistic


def test_search_and_validation_share_it():
  """One Spearman: the search and the validation define none of their own."""
  for module in (surrogates, metrics):
    tree = ast.parse(inspect.getsource(module))
    own = [
        n.name
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef)
        and n.name in ("spearman", "average_ranks")
    ]
    assert not own, (module.__name__, own)
