"""The unbiased pass@k estimator against the binomial definition."""

import math

import pytest

from demix_jax.evals import passk


def _by_binomials(n, c, k):
  return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@pytest.mark.parametrize(
    "n, c, k",
    [
        (1, 0, 1),
        (1, 1, 1),
        (5, 2, 1),
        (5, 2, 3),
        (10, 3, 5),
        (20, 1, 10),
        (7, 0, 7),
        (30, 29, 2),
    ],
)
def test_matches_binomial_definition(n, c, k):
  assert passk.pass_at_k(n, c, k) == pytest.approx(_by_binomials(n, c, k))


def test_edges_and_large_n():
  assert passk.pass_at_k(10, 0, 3) == 0.0
  assert passk.pass_at_k(10, 8, 3) == 1.0  # n - c < k: every 3-subset passes
  assert passk.pass_at_k(10, 4, 1) == pytest.approx(0.4)  # pass@1 = c/n
  # Binomials of this size overflow float; the product form does not.
  v = passk.pass_at_k(2000, 7, 100)
  assert v == pytest.approx(_by_binomials(2000, 7, 100), rel=1e-9)
  assert 0.0 < v < 1.0
  ks = [passk.pass_at_k(50, 3, k) for k in range(1, 51)]
  assert ks == sorted(ks)


def test_invalid_arguments_raise():
  with pytest.raises(ValueError):
    passk.pass_at_k(3, 4, 1)
  with pytest.raises(ValueError):
    passk.pass_at_k(3, 1, 4)
  with pytest.raises(ValueError):
    passk.pass_at_k(3, 1, 0)


def test_mean_over_problems():
  flags = [[True, False], [False, False], [True, True]]
  assert passk.mean_pass_at_k(flags, 1) == pytest.approx((0.5 + 0 + 1) / 3)
  assert passk.mean_pass_at_k(flags, 2) == pytest.approx((1 + 0 + 1) / 3)
