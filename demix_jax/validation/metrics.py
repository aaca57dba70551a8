"""Proxy-consistency metrics (paper Sec. 2.9, Table 2; digest Sec. 7.1 G).

A proxy family (merged proxies, or trained proxies of one budget) gives one
score per mixture and domain; the reference models (trained on the same R
mixtures with the full budget) give the ground truth. Per domain:

* `spearman`: Spearman rho = Pearson correlation of the average ranks (ties
  share the mean of the ranks they span); `demix_jax.stats.spearman`.
* `top_rho`: Spearman on the k = max(2, floor(n / 4)) mixtures best *by
  reference score* (larger is best when the domain's metric is higher-is-
  better, smaller for bits per byte / loss). With k = 2 this is +-1: whether
  the best two references are ordered correctly.
* `capability_recovery`: sum(proxy) / sum(reference) over the mixtures, a
  ratio of sums as in the official code. For a lower-is-better metric the
  ratio is inverted, sum(reference) / sum(proxy), so that in both cases a
  value below 1 means the proxy has less capability than the trained model
  (the paper only uses accuracies, where the two agree).
* `decision_accuracy`: over mixture pairs, the fraction the proxy orders the
  same way as the references. Pairs tied in the reference are left out (there
  is no order to recover); pairs the reference separates but the proxy ties
  count 1/2 (the proxy's choice between them is a coin flip).
* `regret`: the method picks the mixture whose proxy score is best (first
  index on ties); regret = reference score of the best reference minus the
  reference score of the pick, signed by direction so it is >= 0 and 0 means
  the method found the best reference. `pick_rank` is the 1-based rank of the
  pick among the references (1 = best), a scale-free companion.
* `mixture_rank`: rank of a final model's score among the reference scores
  (1 + the number of references strictly better; the model is not counted
  among them, and equal references do not push it down).

Targets: every target the search can use is scored, the benchmark domains
and the held-out bits per byte of every source (named "heldout/<source>/bpb",
`HELDOUT_PREFIX`). "macro" is the mean over the benchmark domains of the
finite per-domain values (NaN when none is finite), as in the paper;
"macro_heldout" is the same mean over the held-out targets, present when
any held-out target is scored (`macros`).

Missing values: mixtures whose proxy or reference score is not finite (a
diverged run) are dropped pairwise before any metric, so every metric is
computed on the same surviving mixtures. A Spearman rho that is undefined
(fewer than 2 mixtures, or a constant proxy or reference) is NaN
(`demix_jax.stats.spearman`), skipped by the macro mean and written as null
in table.json. (The official evaluation script counts it as 0.0, which
would pull the macro rho toward zero.)

Uncertainty: `bootstrap_rho` gives a percentile bootstrap interval (90% by
default) for the per-domain and macro rho, resampling the mixtures with
replacement (the same resample for every domain, so the macro interval keeps
the domains' correlation); `ceiling` is the noise ceiling, the Spearman
between two trainings of the same reference mixtures with different data
orders: no proxy can be expected to agree with one training better than a
second training of the same mixture does.

Directions are injected as {domain: higher_is_better} (normally from
`demix_jax.evals.scoring.higher_is_better("domain/<d>")`). Spearman rho and
decision accuracy do not depend on them (proxy and reference use the same
metric); the top-k subset, recovery, regret and ranks do.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from demix_jax import stats

ArrayLike = np.ndarray | list[float] | tuple[float, ...]

# The per-domain metrics `consistency` reports, in table order.
METRICS = (
    "rho",
    "top25_rho",
    "recovery",
    "decision_accuracy",
    "regret",
    "pick_rank",
)


def top_k(n: int) -> int:
  """Size of the top-25% subset: max(2, floor(n / 4))."""
  return max(2, n // 4)


def top_rho(
    proxy: ArrayLike, reference: ArrayLike, higher_is_better: bool
) -> float:
  """Spearman rho on the top-25% mixtures by reference score.

  Args:
    proxy: [n] proxy scores.
    reference: [n] reference scores.
    higher_is_better: direction of the metric (selects the best references).

  Returns:
    rho on the k = max(2, floor(n' / 4)) best references, n' = mixtures with
    both scores finite (NaN where undefined, see `spearman`). Ties at the
    k-th place go to the earlier mixture.
  """
  p, r = stats.finite_pairs(proxy, reference)
  if p.size < 2:
    return float("nan")
  order = np.argsort(-r if higher_is_better else r, kind="stable")
  best = order[: top_k(p.size)]
  return stats.spearman(p[best], r[best])


def capability_recovery(
    proxy: ArrayLike, reference: ArrayLike, higher_is_better: bool
) -> float:
  """sum(proxy) / sum(reference); inverted for lower-is-better metrics.

  Args:
    proxy: [n] proxy scores.
    reference: [n] reference scores.
    higher_is_better: direction of the metric.

  Returns:
    The ratio (< 1: the proxy has less capability), NaN if a sum is 0 or no
    mixture has both scores.
  """
  p, r = stats.finite_pairs(proxy, reference)
  num, den = (p.sum(), r.sum()) if higher_is_better else (r.sum(), p.sum())
  if p.size == 0 or den == 0.0:
    return float("nan")
  return float(num / den)


def decision_accuracy(proxy: ArrayLike, reference: ArrayLike) -> float:
  """Fraction of mixture pairs the proxy orders like the references.

  Args:
    proxy: [n] proxy scores.
    reference: [n] reference scores.

  Returns:
    Mean over pairs the reference separates of 1 (same order), 0 (opposite)
    or 1/2 (proxy tie); NaN when no pair is separated by the reference.
  """
  p, r = stats.finite_pairs(proxy, reference)
  i, j = np.triu_indices(p.size, k=1)
  sr = np.sign(r[i] - r[j])
  sp = np.sign(p[i] - p[j])
  decided = sr != 0
  if not decided.any():
    return float("nan")
  credit = np.where(sp == 0, 0.5, (sp == sr).astype(np.float64))
  return float(credit[decided].mean())


def _better_count(
    value: float, others: np.ndarray, higher_is_better: bool
) -> int:
  return int(
      np.sum(others > value) if higher_is_better else np.sum(others < value)
  )


def regret(
    proxy: ArrayLike, reference: ArrayLike, higher_is_better: bool
) -> tuple[float, int]:
  """Regret and reference rank of the mixture the proxy picks.

  Args:
    proxy: [n] proxy scores.
    reference: [n] reference scores.
    higher_is_better: direction of the metric.

  Returns:
    (regret >= 0 in the metric's units, 1-based rank of the pick among the
    references); (NaN, -1) if no mixture has both scores.
  """
  p, r = stats.finite_pairs(proxy, reference)
  if p.size == 0:
    return float("nan"), -1
  pick = int(np.argmax(p) if higher_is_better else np.argmin(p))
  best = r.max() if higher_is_better else r.min()
  gap = best - r[pick] if higher_is_better else r[pick] - best
  return float(gap), 1 + _better_count(r[pick], r, higher_is_better)


def mixture_rank(
    score: float, reference: ArrayLike, higher_is_better: bool
) -> int:
  """1-based rank of one model's score among the reference models' scores.

  Args:
    score: the model's score (e.g. the final run's domain score).
    reference: [n] reference scores (non-finite ones are ignored).
    higher_is_better: direction of the metric.

  Returns:
    1 + number of references strictly better (1 = beats or ties them all).
  """
  r = np.asarray(reference, dtype=np.float64).ravel()
  r = r[np.isfinite(r)]
  if not np.isfinite(score):
    raise ValueError(f"mixture_rank: the model's score is {score}")
  return 1 + _better_count(float(score), r, higher_is_better)


def macro(values: Mapping[str, float]) -> float:
  """Mean of the finite values, NaN if none."""
  v = np.array([float(x) for x in values.values()], dtype=np.float64)
  v = v[np.isfinite(v)]
  return float(v.mean()) if v.size else float("nan")


HELDOUT_PREFIX = "heldout/"


def is_heldout(target: str) -> bool:
  """Whether `target` is a source's held-out score, not a benchmark domain."""
  return target.startswith(HELDOUT_PREFIX)


def split_targets(targets) -> tuple[list[str], list[str]]:
  """(benchmark domains, held-out targets), each in the given order."""
  targets = list(targets)
  return (
      [t for t in targets if not is_heldout(t)],
      [t for t in targets if is_heldout(t)],
  )


def macros(values: Mapping[str, float]) -> dict[str, float]:
  """{"macro": mean over benchmark domains[, "macro_heldout": ...]}.

  Args:
    values: {target: value}; keys "macro*" are ignored.

  Returns:
    "macro" over the benchmark domains; "macro_heldout" over the held-out
    targets, only when there are any.
  """
  per = {k: v for k, v in values.items() if not k.startswith("macro")}
  domains, heldout = split_targets(per)
  out = {"macro": macro({t: per[t] for t in domains})}
  if heldout:
    out["macro_heldout"] = macro({t: per[t] for t in heldout})
  return out


def _check_domains(
    name: str, scores: Mapping[str, object], domains: Mapping[str, bool]
) -> None:
  missing = [d for d in domains if d not in scores]
  if missing:
    raise KeyError(
        f"{name} scores lack domains {missing}; have " f"{sorted(scores)}"
    )


def consistency(
    proxy: Mapping[str, ArrayLike],
    reference: Mapping[str, ArrayLike],
    higher_is_better: Mapping[str, bool],
) -> dict[str, dict[str, float]]:
  """All consistency metrics of one proxy family, per domain and macro.

  Args:
    proxy: {domain: [R] proxy scores}.
    reference: {domain: [R] reference scores} of the same R mixtures.
    higher_is_better: {domain: direction}; its keys are the domains used, in
      order.

  Returns:
    {metric: {target: value, ..., "macro": mean over the benchmark
    domains[, "macro_heldout": mean over the held-out targets]}} for every
    metric in METRICS.
  """
  _check_domains("proxy", proxy, higher_is_better)
  _check_domains("reference", reference, higher_is_better)
  out: dict[str, dict[str, float]] = {m: {} for m in METRICS}
  for d, hib in higher_is_better.items():
    p, r = proxy[d], reference[d]
    out["rho"][d] = stats.spearman(p, r)
    out["top25_rho"][d] = top_rho(p, r, hib)
    out["recovery"][d] = capability_recovery(p, r, hib)
    out["decision_accuracy"][d] = decision_accuracy(p, r)
    gap, rank = regret(p, r, hib)
    out["regret"][d] = gap
    out["pick_rank"][d] = float(rank) if rank > 0 else float("nan")
  for m in METRICS:
    out[m].update(macros(out[m]))
  return out


def mixture_ranks(
    scores: Mapping[str, float],
    reference: Mapping[str, ArrayLike],
    higher_is_better: Mapping[str, bool],
) -> dict[str, float]:
  """Per-domain and macro rank of one final model among the references.

  Args:
    scores: {domain: the final model's score}.
    reference: {domain: [R] reference scores}.
    higher_is_better: {domain: direction}.

  Returns:
    {domain: rank, ..., "macro": mean rank} (paper Table 3's rank columns).
  """
  _check_domains("final-model", scores, higher_is_better)
  _check_domains("reference", reference, higher_is_better)
  out = {
      d: float(mixture_rank(scores[d], reference[d], hib))
      for d, hib in higher_is_better.items()
  }
  out.update(macros(out))
  return out


BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_LEVEL = 0.9


def bootstrap_rho(
    proxy: Mapping[str, ArrayLike],
    reference: Mapping[str, ArrayLike],
    domains: list[str] | tuple[str, ...],
    *,
    n_boot: int = BOOTSTRAP_SAMPLES,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = 0,
) -> dict[str, list[float]]:
  """Percentile bootstrap interval of Spearman rho, per domain and macro.

  Args:
    proxy: {domain: [R] proxy scores}.
    reference: {domain: [R] reference scores} of the same mixtures.
    domains: the domains, in order.
    n_boot: bootstrap resamples of the R mixtures (with replacement).
    level: coverage of the two-sided interval (0.9 = 5th to 95th
      percentile).
    seed: the resampling seed (fixed, so a table is reproducible).

  Returns:
    {domain: [lo, hi], ..., "macro": [lo, hi]} (and "macro_heldout" when
    held-out targets are among `domains`); [NaN, NaN] where fewer than
    half the resamples give a defined rho (e.g. a constant proxy).
  """
  if not 0.0 < level < 1.0:
    raise ValueError(f"level={level} must lie in (0, 1)")
  n = len(np.asarray(reference[domains[0]]).ravel())
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, n, size=(n_boot, n)) if n else np.zeros((n_boot, 0))
  per = {d: np.full(n_boot, np.nan) for d in domains}
  for d in domains:
    p = np.asarray(proxy[d], dtype=np.float64).ravel()
    r = np.asarray(reference[d], dtype=np.float64).ravel()
    for b in range(n_boot):
      per[d][b] = stats.spearman(p[idx[b]], r[idx[b]])
  bench, heldout = split_targets(domains)
  for key, group in (("macro", bench), ("macro_heldout", heldout)):
    if not group and key == "macro_heldout":
      continue
    stacked = (
        np.stack([per[d] for d in group])
        if group
        else np.full((1, n_boot), np.nan)
    )
    finite = np.isfinite(stacked)
    counts = finite.sum(0)
    sums = np.where(finite, stacked, 0.0).sum(0)
    per[key] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
  q = (100.0 * (1.0 - level) / 2.0, 100.0 * (1.0 + level) / 2.0)
  out = {}
  for d, v in per.items():
    v = v[np.isfinite(v)]
    if v.size < n_boot / 2:
      out[d] = [float("nan"), float("nan")]
    else:
      out[d] = [float(x) for x in np.percentile(v, q)]
  return out


def ceiling(
    first: Mapping[str, ArrayLike],
    second: Mapping[str, ArrayLike],
    domains: list[str] | tuple[str, ...],
) -> dict[str, float]:
  """Noise ceiling: Spearman between two trainings of the same mixtures.

  Args:
    first: {domain: [M] scores} of M reference runs.
    second: {domain: [M] scores} of the same M mixtures trained again with
      another data order.
    domains: the domains, in order.

  Returns:
    {target: rho, ..., "macro": mean of the finite benchmark-domain ones,
    "macro_heldout": the same over held-out targets (when any)}: each
    target's own ceiling.
  """
  out = {d: stats.spearman(first[d], second[d]) for d in domains}
  out.update(macros(out))
  return out
