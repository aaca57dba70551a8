"""summary.json and report.md from the stages' typed results.

`build_summary` gathers what a reader wants in one typed `Summary` (the
found mixture, its source weights, the proxy's predicted and measured
scores, the final runs' real scores, baselines and cost per stage);
`render_markdown` turns it into report.md. Both are pure functions of
results, so they can be tested without running anything.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from demix_jax.stages import results as results_lib


def build_summary(
    done: Mapping[str, results_lib.Result],
    key_targets: Sequence[str],
    objectives: Mapping[str, results_lib.ObjectiveRow] | None = None,
    ranking: Mapping[str, results_lib.RankedRun] | None = None,
    verdict: Mapping[str, Any] | None = None,
) -> results_lib.Summary:
  """One Summary from the finished stages' results.

  Args:
    done: {stage: its result} of every finished stage (search at least),
      in the order the cost table lists them.
    key_targets: targets shown first in tables (e.g. domain scores).
    objectives: the search objective per final run (`report`'s table).
    ranking: the final runs ranked per benchmark (`report`'s Table 3).
    verdict: `seed_verdict`'s result (None with one seed per run).

  Returns:
    The Summary.
  """
  search = done["search"]
  assert isinstance(search, results_lib.SearchResult)
  final = done.get("final")
  runs = final.runs if isinstance(final, results_lib.FinalResult) else {}
  gen = search.diagnostics.get("generation")
  cost = {}
  for stage, r in done.items():
    cost[stage] = results_lib.StageCost(
        tokens=int(r.tokens), seconds=float(r.seconds)
    )
  if gen:
    # Generative metrics: prompt + generated tokens are forward passes
    # (validation.cost.generation_tokens), beside the training tokens.
    cost["search"] = results_lib.StageCost(
        tokens=cost["search"].tokens,
        seconds=cost["search"].seconds,
        prompt_tokens=int(gen.get("prompt_tokens", 0)),
        generated_tokens=int(gen.get("generated_tokens", 0)),
    )
  validate = done.get("validate")
  return results_lib.Summary(
      alpha=dict(search.alpha),
      source_weights=dict(search.source_weights),
      epochs=dict(search.epochs),
      predicted=dict(search.predicted),
      predicted_std=dict(search.predicted_std),
      merged=dict(search.merged_scores),
      search_methods=dict(search.methods),
      final=dict(runs["demix"].scores) if "demix" in runs else {},
      baselines={n: dict(r.scores) for n, r in runs.items() if n != "demix"},
      final_weights={n: dict(r.weights) for n, r in runs.items()},
      cost=cost,
      key_targets=list(key_targets),
      n_proxies=search.n_proxies,
      surrogate=search.surrogate,
      rounds=list(search.rounds),
      diagnostics=dict(search.diagnostics),
      config_snippet=search.config_snippet,
      objectives=dict(objectives or {}),
      ranking=dict(ranking or {}),
      validation=(
          list(validate.rows)
          if isinstance(validate, results_lib.ValidateResult)
          else None
      ),
      verdict=None if verdict is None else dict(verdict),
  )


def seed_verdict(
    per_seed: Mapping[str, Sequence[float]],
    proxy: Mapping[str, float | None],
    objective: str,
    found: str = "demix",
) -> dict[str, Any] | None:
  """The found mixture against each baseline, with the seed spread.

  Args:
    per_seed: {run: the search objective of each training seed of that
      run's mixture (lower is better)}, the found mixture among them.
    proxy: {run: the same objective of the merged proxy at that mixture}
      (None where no proxy exists).
    objective: the objective's name, for the printout.
    found: the found mixture's run name.

  Returns:
    None with fewer than two seeds or no found run; else {"objective",
    "seeds", "per_seed", "mean", "spread" (the largest difference between
    two seeds of one mixture, over all mixtures), "baselines": {name:
    {"margin" (baseline's mean - the found one's: > 0 = found is better),
    "beyond_noise" (margin > 2 x spread), "trained_order", "proxy_order"
    ("found" or the baseline's name: which one is better; None without a
    proxy), "orders_match"}}}.
  """
  if found not in per_seed:
    return None
  seeds = min(len(v) for v in per_seed.values())
  if seeds < 2:
    return None
  vals = {n: [float(x) for x in v[:seeds]] for n, v in per_seed.items()}
  mean = {n: sum(v) / seeds for n, v in vals.items()}
  spread = max(max(v) - min(v) for v in vals.values())
  out_b = {}
  for name in vals:
    if name == found:
      continue
    margin = mean[name] - mean[found]
    trained = found if margin > 0 else name
    p_found, p_base = proxy.get(found), proxy.get(name)
    if p_found is None or p_base is None:
      proxy_order = None
    else:
      proxy_order = found if p_base - p_found > 0 else name
    out_b[name] = {
        "margin": margin,
        "beyond_noise": bool(abs(margin) > 2 * spread),
        "trained_order": trained,
        "proxy_order": proxy_order,
        "orders_match": None if proxy_order is None else proxy_order == trained,
    }
  return {
      "objective": objective,
      "seeds": seeds,
      "per_seed": vals,
      "mean": mean,
      "spread": spread,
      "baselines": out_b,
  }


def verdict_lines(
    verdict: Mapping[str, Any], found: str = "demix"
) -> list[str]:
  """The seed verdict as plain lines (stdout and report.md)."""
  spread = verdict["spread"]
  out = [
      f"Verdict on the search's objective ({verdict['objective']}, lower is"
      f" better; mean of {verdict['seeds']} seeds per mixture):",
      "  run          "
      + "".join(f"{'seed ' + str(k):>11s}" for k in range(verdict["seeds"]))
      + f"{'mean':>11s}",
  ]
  for name, vals in verdict["per_seed"].items():
    out.append(
        f"  {name:<13s}"
        + "".join(f"{v:11.4f}" for v in vals)
        + f"{verdict['mean'][name]:11.4f}"
    )
  out.append(
      f"  seed-to-seed spread (largest seed difference of one mixture):"
      f" {spread:.4f}; twice it: {2 * spread:.4f}"
  )
  for name, b in verdict["baselines"].items():
    noise = "exceeds" if b["beyond_noise"] else "does NOT exceed"
    out.append(
        f"  {found} vs {name}: margin {b['margin']:+.4f}"
        f" ({b['trained_order']} better);"
        f" {noise} twice the spread"
    )
    if b["proxy_order"] is None:
      out.append(f"    merged proxies: no proxy for {name}")
    else:
      match = "matches" if b["orders_match"] else "does NOT match"
      out.append(
          f"    merged proxies rank {b['proxy_order']} better:"
          f" {match} the trained order"
      )
  return out


def _fmt(v: Any) -> str:
  if isinstance(v, float):
    return f"{v:.4f}"
  return str(v)


def _macro(row: Mapping[str, Any], metric: str) -> float:
  """A validation row's macro value; NaN where undefined (null in JSON)."""
  v = (row.get(metric) or {}).get("macro")
  return float("nan") if v is None else float(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  lines = [
      "| " + " | ".join(header) + " |",
      "|" + "|".join("---" for _ in header) + "|",
  ]
  lines += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
  return "\n".join(lines)


def _count(n: int | None) -> str:
  if n is None:
    return "–"
  for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
    if n >= div:
      return f"{n / div:.4g}{unit}"
  return str(n)


def _ranking_section(
    ranking: Mapping[str, results_lib.RankedRun],
) -> list[str]:
  """Table 3: each final run's score and rank per benchmark, macro rank."""
  first = next(iter(ranking.values()))
  targets = list(first.ranks)
  domains = list(first.domain_ranks)
  header = (
      ["run", "method", "search tokens", "#proxies", "tokens/proxy"]
      + [f"{t} (rank)" for t in targets]
      + ["**macro rank**"]
      + [f"{d.split('/', 1)[-1]} rank" for d in domains]
      + (["macro rank (domains)"] if domains else [])
  )
  rows = []
  for name, r in ranking.items():
    rows.append(
        [
            name,
            r.method,
            _count(r.search_tokens),
            "–" if r.n_proxies is None else r.n_proxies,
            _count(r.tokens_per_proxy),
        ]
        + [f"{r.scores[t]:.4f} ({r.ranks[t]:g})" for t in targets]
        + [f"**{r.macro_rank:.2f}**"]
        + [f"{r.domain_ranks[d]:g}" for d in domains]
        + (
            [f"{r.domain_macro_rank:.2f}"]
            if r.domain_macro_rank is not None
            else []
        )
    )
  return [
      "## Final mixtures ranked (Table 3)",
      "",
      "Each final run ranked among the final runs on each benchmark"
      " (1 = best, ties share the mean rank), and the mean of those ranks;"
      " the domain ranks rank the domain scores the same way. Search tokens:"
      " training tokens spent finding the mixture (DeMix: base +"
      " components; RegMix/CLIMB: base + trained proxies; natural and"
      " fixed mixtures: 0). Every run then trains the same final tokens.",
      "",
      _table(header, rows),
      "",
  ]


def render_markdown(
    summary: results_lib.Summary, plots: Mapping[str, str]
) -> str:
  """report.md: mixture, final-vs-baseline table, cost, plots."""
  out = ["# DeMix report", ""]
  # No epochs and no proxy scores when the mixture came from another run
  # (final.mixture_from): those columns are left out, not shown as 0/nan.
  epochs = ["epochs (final)"] if summary.epochs else []
  out += [
      "## Found mixture",
      "",
      _table(
          ["candidate", "alpha", "source weight"] + epochs,
          [
              [c, a, summary.source_weights.get(c, 0.0)]
              + ([summary.epochs.get(c, 0.0)] if epochs else [])
              for c, a in summary.alpha.items()
          ],
      ),
      "",
  ]
  if summary.config_snippet:
    out += [
        "Reuse it as a fixed mixture:",
        "",
        "```",
        summary.config_snippet,
        "```",
        "",
    ]
  targets = summary.key_targets
  runs = {"demix": summary.final, **summary.baselines}
  if summary.final:
    proxy = bool(summary.merged or summary.predicted)
    header = (
        ["target"]
        + (["proxy (merged)", "surrogate prediction"] if proxy else [])
        + list(runs)
    )
    rows = []
    for t in targets:
      rows.append(
          [t]
          + (
              [
                  summary.merged.get(t, float("nan")),
                  summary.predicted.get(t, float("nan")),
              ]
              if proxy
              else []
          )
          + [runs[r].get(t, float("nan")) for r in runs]
      )
    out += [
        "## Final runs vs baselines",
        "",
        "Lower is better for bpb/loss targets; higher for accuracies.",
        "",
        _table(header, rows),
        "",
    ]
  objectives = summary.objectives
  if objectives:
    out += [
        "## The objective, trained and as a merged proxy",
        "",
        "normalized = mean relative change of the domain scores from the "
        "base model (lower is better); composite = mean percentile rank "
        "among these runs; mean domain = plain mean of the domain scores.",
        "",
        _table(
            [
                "run",
                "normalized (trained)",
                "normalized (merged proxy)",
                "composite (trained)",
                "mean domain (trained)",
            ],
            [
                [
                    n,
                    o.trained_normalized,
                    ("–" if o.proxy_normalized is None else o.proxy_normalized),
                    o.trained_composite,
                    o.trained_mean,
                ]
                for n, o in objectives.items()
            ],
        ),
        "",
    ]
  if summary.ranking:
    out += _ranking_section(summary.ranking)
  if summary.verdict:
    out += ["## Verdict over seeds", "", "```"]
    out += verdict_lines(summary.verdict) + ["```", ""]
  if summary.search_methods:
    rows = []
    for name, m in summary.search_methods.items():
      rows.append(
          [name, ", ".join(f"{a:.3f}" for a in m["alpha"])]
          + [m["merged_scores"].get(t, float("nan")) for t in targets]
      )
    out += [
        "## Search methods (scored by the merged proxy)",
        "",
        _table(["method", "alpha"] + list(targets), rows),
        "",
    ]
  cost = summary.cost
  header = ["stage", "training tokens", "seconds"]
  rows = [[s, c.tokens, c.seconds] for s, c in cost.items()]
  if any(c.generated_tokens is not None for c in cost.values()):
    header += ["prompt tokens (generation)", "generated tokens"]
    for row, c in zip(rows, cost.values()):
      row += [c.prompt_tokens or 0, c.generated_tokens or 0]
  out += ["## Cost", "", _table(header, rows), ""]
  diag = summary.diagnostics
  if diag.get("delta"):
    out += [
        "## Component diagnostics",
        "",
        _table(
            ["component", "delta vs base"],
            [[k, v] for k, v in diag["delta"].items()],
        ),
        "",
    ]
  if summary.validation:
    v = summary.validation
    out += [
        "## Validation",
        "",
        _table(
            [
                "method",
                "budget",
                "total tokens",
                "macro rho",
                "top-25% rho",
                "recovery",
                "decision acc.",
                "regret",
            ],
            [
                [
                    r["method"],
                    r.get("budget_label", ""),
                    r["total_tokens"],
                    *(
                        _macro(r, m)
                        for m in (
                            "rho",
                            "top25_rho",
                            "recovery",
                            "decision_accuracy",
                            "regret",
                        )
                    ),
                ]
                for r in v
            ],
        ),
        "",
    ]
  if plots:
    out += ["## Plots", ""]
    out += [f"![{name}]({path})" for name, path in plots.items()]
  return "\n".join(out) + "\n"
