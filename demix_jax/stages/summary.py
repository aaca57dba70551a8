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
) -> results_lib.Summary:
  """One Summary from the finished stages' results.

  Args:
    done: {stage: its result} of every finished stage (search at least),
      in the order the cost table lists them.
    key_targets: targets shown first in tables (e.g. domain scores).
    objectives: the search objective per final run (`report`'s table).
    ranking: the final runs ranked per benchmark (`report`'s Table 3).

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
  )


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
