"""Rank statistics shared by the search and the validation: one Spearman.

`spearman` is the Pearson correlation of average ranks (ties share the mean
of the ranks they span), computed on the pairs where both sides are finite.
It is NaN where a rank correlation is undefined: fewer than two finite
pairs, or one side constant. Callers that aggregate it use NaN-aware means
and report NaN as null; a 0.0 there would read as "no rank information"
and pull averages toward zero.

The arithmetic is scipy.stats.spearmanr's (same ranks, `np.corrcoef` on the
same [n, 2] layout), so the values agree with it to the last bit.
"""

from __future__ import annotations

import numpy as np

ArrayLike = np.ndarray | list[float] | tuple[float, ...]


def average_ranks(x: ArrayLike) -> np.ndarray:
  """1-based ranks of finite values, ties given the mean of their ranks.

  Args:
    x: [n] finite values.

  Returns:
    [n] float ranks (smallest value = 1).

  Raises:
    ValueError: a value is NaN or infinite.
  """
  x = np.asarray(x, dtype=np.float64)
  if not np.all(np.isfinite(x)):
    raise ValueError("average_ranks needs finite values; drop NaNs first")
  _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
  last = np.cumsum(counts)  # 1-based rank of each group's last member
  first = last - counts + 1
  return ((first + last) / 2.0)[inverse.reshape(-1)]


def finite_pairs(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
  """The entries of two same-length vectors where both are finite.

  Args:
    a: [n] values (any shape; flattened).
    b: [n] values of the same items.

  Returns:
    (a', b') with the non-finite pairs dropped.

  Raises:
    ValueError: the sizes differ.
  """
  a = np.asarray(a, dtype=np.float64).ravel()
  b = np.asarray(b, dtype=np.float64).ravel()
  if a.shape != b.shape:
    raise ValueError(
        f"{a.size} values against {b.size}; they must score the same "
        "mixtures"
    )
  keep = np.isfinite(a) & np.isfinite(b)
  return a[keep], b[keep]


def spearman(a: ArrayLike, b: ArrayLike) -> float:
  """Spearman rank correlation over the finite pairs, ties averaged.

  Args:
    a: [n] values (e.g. predictions; non-finite entries drop the pair).
    b: [n] values of the same items (e.g. observations).

  Returns:
    rho in [-1, 1]; NaN when fewer than two finite pairs remain or either
    side is constant there (a rank correlation is undefined).
  """
  a, b = finite_pairs(a, b)
  if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
    return float("nan")
  ranks = np.column_stack((average_ranks(a), average_ranks(b)))
  return float(np.corrcoef(ranks, rowvar=False)[1, 0])
