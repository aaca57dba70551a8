"""The final runs compared: objectives, seed spread and Table-3 ranks.

What the report says about the trained final runs against each other: the
search's own objective per run and per training seed (with the merged
proxy's prediction beside it), the seed-to-seed spread, and the ranks per
benchmark with each method's search cost (DeMix's Table 3). The report
stage renders these; they change when the comparison does, not when the
report's layout does.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from demix_jax import spec as spec_lib
from demix_jax.evals import benchmarks as bench_lib
from demix_jax.evals import scoring
from demix_jax.report import ranking
from demix_jax.search import objective as objective_lib
from demix_jax.stages import results


def seed_std(
    final: results.FinalResult | None, targets
) -> dict[str, dict[str, float]] | None:
  """{run: {target: std over its training seeds}}; None with one seed."""
  if final is None or not any(r.seed_scores for r in final.runs.values()):
    return None
  return {
      n: {
          t: float(np.std([s.get(t, np.nan) for s in r.seed_scores], ddof=1))
          for t in targets
      }
      for n, r in final.runs.items()
      if r.seed_scores and len(r.seed_scores) > 1
  }


def objective_table(
    spec: spec_lib.RunSpec,
    search: results.SearchResult,
    final: results.FinalResult | None,
) -> dict[str, results.ObjectiveRow]:
  """The search objective for the found mixture and every baseline.

  Per run: on the trained model, the normalised mean (mean relative change
  of the domain scores from the base; lower is better), the percentile
  composite among the final runs, and the plain mean of the domain scores;
  on the merged proxy at the same mixture, the normalised mean. {} when
  the search recorded no base scores or no final runs exist.
  """
  if final is None or not search.base_scores:
    return {}
  dm = dict(spec.eval.domain_metrics)
  direction = lambda t: scoring.higher_is_better(t, dm)
  targets = search.objective.targets
  weights = spec.search.objective.weights
  norm = objective_lib.ObjectiveSpec(
      targets, "normalized", weights
  ).with_reference(search.base_scores)
  comp = objective_lib.ObjectiveSpec(targets, "composite", weights)
  names = list(final.runs)
  trained = {
      t: np.array([final.runs[n].scores.get(t, np.nan) for n in names])
      for t in targets
  }
  t_norm = objective_lib.evaluate(trained, norm, direction)
  t_comp = objective_lib.evaluate(trained, comp, direction)
  out = {}
  for i, n in enumerate(names):
    proxy = search.proxies.get(n)  # the found mixture and the baselines
    out[n] = results.ObjectiveRow(
        trained_normalized=float(t_norm[i]),
        trained_composite=float(t_comp[i]),
        trained_mean=float(np.mean([trained[t][i] for t in targets])),
        proxy_normalized=None if proxy is None else proxy["normalized"],
    )
  return out


def benchmark_targets(spec: spec_lib.RunSpec) -> list[str]:
  """One target per benchmark: its domain's metric (e.g. "piqa/bpb")."""
  dm = dict(spec.eval.domain_metrics)
  domain_of = {b: d for d, bs in bench_lib.DOMAINS.items() for b in bs}
  return [
      f"{b}/{dm.get(domain_of.get(b, ''), 'bpb')}" for b in spec.eval.benchmarks
  ]


def ranking_table(
    spec: spec_lib.RunSpec, done: Mapping[str, results.Result]
) -> dict[str, results.RankedRun]:
  """The final runs ranked on each benchmark (Table 3), best first.

  Ranks are among the final runs (1 = best) per benchmark target, and per
  domain score; each run's search cost in training tokens is the base and
  the components for DeMix, the base and its trained proxies for RegMix
  and CLIMB, and 0 for the prior and the hand-set mixtures. {} without a
  final stage.
  """
  final = done.get("final")
  if not isinstance(final, results.FinalResult) or not final.runs:
    return {}
  dm = dict(spec.eval.domain_metrics)
  better = lambda t: scoring.higher_is_better(t, dm)
  runs = final.runs
  targets = [
      t
      for t in benchmark_targets(spec)
      if any(t in r.scores for r in runs.values())
  ]
  domains = sorted(
      {t for r in runs.values() for t in r.scores if t.startswith("domain/")}
  )
  scores = {n: r.scores for n, r in runs.items()}
  by_target = ranking.rank_runs(scores, targets, better)
  by_domain = ranking.rank_runs(scores, domains, better)
  base = done.get("base")
  comps = done.get("components")
  base_tokens = (
      int(base.tokens) if base is not None else (spec.budgets.base_tokens)
  )
  comp_tokens = (
      int(comps.tokens)
      if comps is not None
      else (spec.budgets.component_tokens * len(spec.data.candidates))
  )
  search: Any = done.get("search")  # a SearchResult: only n_proxies is read
  found = done.get("baselines")
  methods = found.methods if isinstance(found, results.BaselinesResult) else {}
  out = {}
  for n in runs:
    extra = {}
    if n == "demix":
      method, cost = "demix", base_tokens + comp_tokens
      if search is not None:
        extra = {"n_proxies": search.n_proxies, "tokens_per_proxy": 0}
    elif n in methods:
      m = methods[n]
      method, cost = m.kind, base_tokens + m.proxy_tokens
      extra = {"n_proxies": m.n_proxies, "tokens_per_proxy": m.tokens_per_proxy}
    else:
      method, cost = ("natural" if n == "natural" else "fixed"), 0
    out[n] = results.RankedRun(
        method=method,
        search_tokens=int(cost),
        scores={t: float(scores[n].get(t, float("nan"))) for t in targets},
        ranks={t: by_target[n][t] for t in targets},
        macro_rank=by_target[n]["macro"],
        domain_ranks={t: by_domain[n][t] for t in domains},
        domain_macro_rank=by_domain[n]["macro"] if domains else None,
        **extra,
    )
  order = sorted(out, key=lambda n: (out[n].macro_rank, list(out).index(n)))
  return {n: out[n] for n in order}


def seed_objectives(
    spec: spec_lib.RunSpec,
    search: results.SearchResult,
    final: results.FinalResult | None,
) -> tuple[dict[str, list[float]], dict[str, float | None]]:
  """The search's own objective per training seed of each final mixture.

  Returns ({run: [objective of seed 0, seed 1, ...]}, {run: the merged
  proxy's objective at that mixture, or None}); ({}, {}) without runs
  trained with several seeds. A composite ranks every seed of every run
  among each other; "normalized" is taken from the base's scores.
  """
  if final is None or not any(r.seed_scores for r in final.runs.values()):
    return {}, {}
  dm = dict(spec.eval.domain_metrics)
  direction = lambda t: scoring.higher_is_better(t, dm)
  obj = search.objective
  o = objective_lib.ObjectiveSpec(
      obj.targets, obj.kind, spec.search.objective.weights
  )
  if obj.kind == "normalized":
    if not search.base_scores:
      return {}, {}
    o = o.with_reference(search.base_scores)
  rows = [
      (n, k, s)
      for n, r in final.runs.items()
      for k, s in enumerate(r.seed_scores or [r.scores])
  ]
  table = {
      t: np.array([s.get(t, np.nan) for _, _, s in rows]) for t in o.targets
  }
  values = objective_lib.evaluate(table, o, direction)
  per_seed: dict[str, list[float]] = {n: [] for n in final.runs}
  for (n, _, _), v in zip(rows, values):
    per_seed[n].append(float(v))
  key = "normalized" if obj.kind == "normalized" else "objective"
  proxy = {
      n: None if n not in (search.proxies or {}) else search.proxies[n][key]
      for n in final.runs
  }
  return per_seed, proxy
