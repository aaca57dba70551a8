"""The final runs ranked on each benchmark, and their macro-average rank.

DeMix's Table 3 compares final mixtures by rank: each run is ranked on
each benchmark (1 = best), and the ranks are averaged. Here the ranks are
among the final runs themselves (the paper ranks against its 96 reference
models, which a small run does not train). Ties share the mean of the
ranks they span; a missing or NaN score ranks last.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np


def ranks(values: Sequence[float], higher_is_better: bool) -> np.ndarray:
  """1-based ranks of `values` (1 = best), ties averaged, NaN last."""
  v = np.asarray(values, np.float64)
  key = -v if higher_is_better else v.copy()
  key = np.where(np.isfinite(key), key, np.inf)
  order = np.argsort(key, kind="stable")
  out = np.empty(len(v), np.float64)
  i = 0
  while i < len(v):
    j = i
    while j + 1 < len(v) and key[order[j + 1]] == key[order[i]]:
      j += 1
    out[order[i : j + 1]] = (i + j) / 2 + 1
    i = j + 1
  return out


def rank_runs(
    scores: Mapping[str, Mapping[str, float]],
    targets: Sequence[str],
    higher_is_better: Callable[[str], bool],
) -> dict[str, dict[str, float]]:
  """{run: {target: rank}} over `targets`, plus "macro": their mean.

  Args:
    scores: {run: {target: score}}.
    targets: the targets to rank on (e.g. one per benchmark).
    higher_is_better: target -> whether a higher score is better.
  """
  names = list(scores)
  out: dict[str, dict[str, float]] = {n: {} for n in names}
  for t in targets:
    r = ranks(
        [scores[n].get(t, float("nan")) for n in names], higher_is_better(t)
    )
    for n, v in zip(names, r):
      out[n][t] = float(v)
  for n in names:
    out[n]["macro"] = (
        float(np.mean([out[n][t] for t in targets])) if targets else 0.0
    )
  return out
