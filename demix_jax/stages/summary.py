"""summary.json and report.md from the stages' done.json files.

`build_summary` gathers what a reader wants in one JSON object (the found
mixture, its source weights, the proxy's predicted and measured scores, the
final runs' real scores, baselines and cost per stage); `render_markdown`
turns it into report.md. Both are pure functions of plain dicts so that they
can be tested without running anything.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def build_summary(
    done: Mapping[str, Mapping[str, Any]], key_targets: Sequence[str]
) -> dict[str, Any]:
  """One summary dict from {stage: done.json}.

  Args:
    done: the done.json of every finished stage (search at least).
    key_targets: targets shown first in tables (e.g. domain scores).

  Returns:
    {alpha, source_weights, predicted, predicted_std, merged, final,
     baselines, cost, key_targets, ...}.
  """
  search = done["search"]
  final = done.get("final", {}).get("runs", {})
  cost = {}
  for stage, d in done.items():
    if stage == "report":
      continue
    cost[stage] = {
        "tokens": int(d.get("tokens", 0)),
        "seconds": float(d.get("seconds", 0.0)),
    }
  gen = (search.get("diagnostics") or {}).get("generation")
  if gen and "search" in cost:
    # Generative metrics: prompt + generated tokens are forward passes
    # (validation.cost.generation_tokens), beside the training tokens.
    cost["search"]["prompt_tokens"] = int(gen.get("prompt_tokens", 0))
    cost["search"]["generated_tokens"] = int(gen.get("generated_tokens", 0))
  summary = {
      "alpha": search["alpha"],
      "source_weights": search["source_weights"],
      "epochs": search.get("epochs", {}),
      "predicted": search.get("predicted", {}),
      "predicted_std": search.get("predicted_std", {}),
      "merged": search.get("merged_scores", {}),
      "search_methods": search.get("methods", {}),
      "final": final.get("demix", {}).get("scores", {}),
      "baselines": {
          name: r.get("scores", {})
          for name, r in final.items()
          if name != "demix"
      },
      "final_weights": {
          name: r.get("weights", {}) for name, r in final.items()
      },
      "cost": cost,
      "key_targets": list(key_targets),
      "n_proxies": search.get("n_proxies"),
      "surrogate": search.get("surrogate", ""),
      "rounds": search.get("rounds", []),
      "diagnostics": search.get("diagnostics", {}),
      "config_snippet": search.get("config_snippet", ""),
  }
  if "validate" in done:
    summary["validation"] = done["validate"].get("rows", [])
  return summary


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


def render_markdown(
    summary: Mapping[str, Any], plots: Mapping[str, str]
) -> str:
  """report.md: mixture, final-vs-baseline table, cost, plots."""
  out = ["# DeMix report", ""]
  out += [
      "## Found mixture",
      "",
      _table(
          ["candidate", "alpha", "source weight", "epochs (final)"],
          [
              [
                  c,
                  a,
                  summary["source_weights"].get(c, 0.0),
                  summary["epochs"].get(c, 0.0),
              ]
              for c, a in summary["alpha"].items()
          ],
      ),
      "",
  ]
  if summary.get("config_snippet"):
    out += [
        "Reuse it as a fixed mixture:",
        "",
        "```",
        summary["config_snippet"],
        "```",
        "",
    ]
  targets = summary["key_targets"]
  runs = {"demix": summary["final"], **summary["baselines"]}
  if summary["final"]:
    header = ["target", "proxy (merged)", "surrogate prediction"] + list(runs)
    rows = []
    for t in targets:
      rows.append(
          [
              t,
              summary["merged"].get(t, float("nan")),
              summary["predicted"].get(t, float("nan")),
          ]
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
  objectives = summary.get("objectives") or {}
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
                    o["trained_normalized"],
                    (
                        "–"
                        if o.get("proxy_normalized") is None
                        else o["proxy_normalized"]
                    ),
                    o["trained_composite"],
                    o["trained_mean"],
                ]
                for n, o in objectives.items()
            ],
        ),
        "",
    ]
  if summary.get("search_methods"):
    rows = []
    for name, m in summary["search_methods"].items():
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
  cost = summary["cost"]
  header = ["stage", "training tokens", "seconds"]
  rows = [[s, c["tokens"], c["seconds"]] for s, c in cost.items()]
  if any("generated_tokens" in c for c in cost.values()):
    header += ["prompt tokens (generation)", "generated tokens"]
    for row, c in zip(rows, cost.values()):
      row += [c.get("prompt_tokens", 0), c.get("generated_tokens", 0)]
  out += ["## Cost", "", _table(header, rows), ""]
  diag = summary.get("diagnostics") or {}
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
  if summary.get("validation"):
    v = summary["validation"]
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
