"""The validation report: markdown tables and the accuracy-vs-cost plot.

Both read the dict `harness.run_validation` writes to table.json (NaN stored
as null), so a table can be re-rendered from the JSON alone:

* `markdown`: the noise ceiling (when references were trained twice), then
  paper Table 2's layout over the benchmark domains (cost columns, then rho,
  top-25% rho and capability recovery per domain and macro, the macro rho
  with its bootstrap 90% interval, plus macro decision accuracy and regret,
  and the macro rho over the held-out targets when they were scored) for
  the trained-proxy rows and the main DeMix rows; with held-out targets, rho
  per target (each benchmark domain and each source's held-out bits per
  byte) beside that target's own noise ceiling, and both macros; Table 4
  (merge methods) and Table 5 (general fraction beta) when the ablation
  variants are present, as means over component budgets like the paper's;
  Table 3's rank columns for final models.
* `plot_rho_vs_tokens`: macro rho and top-25% rho against total training
  tokens, one colour per proxy family (the paper's Figure 1), the held-out
  macro rho as its own lines, and the noise ceilings across.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
from typing import Any

from demix_jax.report import plots
from demix_jax.validation import metrics


def _float(x: Any) -> float:
  return float("nan") if x is None else float(x)


def fmt_tokens(x: float) -> str:
  """1.5B / 320M / 12K / 7: compact token counts for tables."""
  for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
    if abs(x) >= scale:
      return f"{x / scale:.4g}{unit}"
  return f"{x:.4g}"


def _f(x: Any, digits: int = 2) -> str:
  x = _float(x)
  return "nan" if not math.isfinite(x) else f"{x:.{digits}f}"


def _interval(ci) -> str:
  if not ci or not all(math.isfinite(_float(x)) for x in ci):
    return ""
  return f"[{_f(ci[0])}, {_f(ci[1])}]"


def _mean(rows, metric):
  return metrics.macro({str(i): r[metric]["macro"] for i, r in enumerate(rows)})


def _per_target(table, main, domains, heldout) -> list[str]:
  """Rows of rho per target (benchmark domains and held-out bpb) per method.

  Each target beside its own noise ceiling, so a reader sees which targets
  carry a signal a proxy could rank at all; then the two macros.
  """
  if not heldout:
    return []
  ceil = table.get("ceiling") or {}
  head = ["Target", "Noise ceiling"] + [
      f"{r['method']} ({r['budget_label']})" for r in main
  ]
  lines = [
      "",
      "Spearman rho per target (every target the search can use), each "
      "beside its own noise ceiling (rank agreement of two trainings of "
      "the same mixtures; – without twin runs)",
      "",
      "| " + " | ".join(head) + " |",
      "|" + "---|" * len(head),
  ]

  def cell(x):
    return "–" if not ceil else _f(x)

  for t in domains + heldout:
    lines.append(
        f"| {t} | {cell(ceil.get(t))} | "
        + " | ".join(_f(r["rho"].get(t)) for r in main)
        + " |"
    )
  for key, label in (
      ("macro", "**macro, benchmark domains**"),
      ("macro_heldout", "**macro, held-out targets**"),
  ):
    lines.append(
        f"| {label} | {cell(ceil.get(key))} | "
        + " | ".join(f"**{_f(r['rho'].get(key))}**" for r in main)
        + " |"
    )
  return lines


def markdown(table: Mapping[str, Any]) -> str:
  """The report's tables (paper Tables 2, 4, 5 and 3's ranks) as markdown.

  Args:
    table: the dict `run_validation` writes to table.json.

  Returns:
    Markdown text.
  """
  domains, heldout = metrics.split_targets(table["higher_is_better"])
  rows = table["rows"]
  arrows = ", ".join(
      f"{d} {'higher' if table['higher_is_better'][d] else 'lower'} is better"
      for d in domains
  )
  if heldout:
    arrows += "; held-out bits per byte lower is better"
  lines = [
      f"Proxy consistency against {table['n_references']} reference runs of "
      f"{fmt_tokens(table['reference_tokens'])} tokens ({arrows}). rho = "
      "Spearman; T25 = Spearman on the top-25% references; CR = capability "
      "recovery (sum proxy / sum reference; inverted for lower-is-better "
      "metrics, so < 1 = weaker than the trained model); Acc = pairwise "
      "decision accuracy; Regret = best reference minus the reference score "
      "of the proxy's pick (>= 0). Totals in training-token equivalents.",
      "",
  ]
  ceil = table.get("ceiling")
  if ceil:
    per = ", ".join(f"{d} {_f(ceil[d])}" for d in domains)
    lines += [
        f"Noise ceiling: the first {table['n_twins']} reference mixtures "
        "trained a second time with another data order rank like the "
        f"first training at rho {per}; macro **{_f(ceil['macro'])}** "
        f"{_interval(table['ceiling_ci']['macro'])}"
        + (
            f"; over the held-out targets macro "
            f"**{_f(ceil.get('macro_heldout'))}** "
            f"{_interval(table['ceiling_ci'].get('macro_heldout'))}"
            if heldout
            else ""
        )
        + ". No proxy is expected to beat it. Brackets: bootstrap 90% "
        "intervals over the mixtures.",
        "",
    ]
  head = ["Method", "Total", "Pre-Cost", "#Prox", "Tok/Prox"]
  for name in ("rho", "T25", "CR"):
    head += [f"{name} {d}" for d in domains] + [f"**{name} Macro**"]
  head += ["Acc Macro", "Regret Macro"]
  if heldout:
    head += ["**rho Held-out Macro**"]
  lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  main = [r for r in rows if r["main"]]
  for r in main:
    pre = (
        "–"
        if r["family"] == "trained"
        else f"{fmt_tokens(r['component_tokens'])}×{table['n_components']}"
    )
    cells = [
        r["method"],
        fmt_tokens(r["total_tokens"]),
        pre,
        str(r["n_proxies"]),
        fmt_tokens(r["tokens_per_proxy"]),
    ]
    ci = r.get("rho_ci") or {}
    for m in ("rho", "top25_rho", "recovery"):
      if m == "rho":
        cells += [f"{_f(r[m][d])} {_interval(ci.get(d))}" for d in domains]
        cells += [f"**{_f(r[m]['macro'])}** {_interval(ci.get('macro'))}"]
      else:
        cells += [_f(r[m][d]) for d in domains]
        cells += [f"**{_f(r[m]['macro'])}**"]
    cells += [_f(r["decision_accuracy"]["macro"]), _f(r["regret"]["macro"], 4)]
    if heldout:
      cells += [
          f"**{_f(r['rho'].get('macro_heldout'))}** "
          f"{_interval(ci.get('macro_heldout'))}"
      ]
    lines.append("| " + " | ".join(cells) + " |")
  lines += _per_target(table, main, domains, heldout)
  merged = [r for r in rows if r["family"] == "merged"]
  diag = [r for r in merged if r.get("diagnostics")]
  if diag:
    lines += [
        "",
        "Components behind each merged family: delta = weight change from "
        "the base (paper Eq. 4; paper 3-10%), barrier = worst loss barrier "
        f"between two components on {diag[0]['diagnostics']['barrier_target']}",
        "",
        "| Method | Components | delta (mean) | max barrier | rho (macro) |",
        "|---|---|---|---|---|",
    ]
    for r in diag:
      d = r["diagnostics"]
      lines.append(
          f"| {r['method']} | {fmt_tokens(r['component_tokens'])} | "
          f"{100 * _float(d['delta_mean']):.1f}% | "
          f"{_f(d['max_barrier'], 4)} | {_f(r['rho']['macro'])} |"
      )
  for key, title, col, pick in (
      (
          "merge_method",
          "Merge methods (paper Table 4; means over component budgets)",
          "Merge method",
          lambda r: r["beta"] == table["main_beta"],
      ),
      (
          "beta",
          "General-data proportion (paper Table 5; means over component "
          "budgets)",
          "General proportion beta",
          lambda r: r["merge_method"] == table["main_merge_method"],
      ),
  ):
    groups: dict[Any, list] = {}
    for r in merged:
      if pick(r):
        groups.setdefault(r[key], []).append(r)
    if len(groups) < 2:
      continue
    lines += [
        "",
        title,
        "",
        f"| {col} | Component budgets | rho (macro) | Capability "
        "Recovery | T25 (macro) | Acc (macro) |",
        "|---|---|---|---|---|---|",
    ]
    for value, rs in groups.items():
      budgets = ", ".join(fmt_tokens(r["component_tokens"]) for r in rs)
      lines.append(
          f"| {value} | {budgets} | {_f(_mean(rs, 'rho'), 3)} | "
          f"{_f(_mean(rs, 'recovery'), 3)} | "
          f"{_f(_mean(rs, 'top25_rho'), 3)} | "
          f"{_f(_mean(rs, 'decision_accuracy'), 3)} |"
      )
  ranks = table.get("mixture_ranks") or {}
  if ranks:
    lines += [
        "",
        f"Final models ranked among the {table['n_references']} "
        "references (1 = best; paper Table 3)",
        "",
        "| Model | "
        + " | ".join(f"Rank {d}" for d in domains)
        + " | Macro Rank |",
        "|" + "---|" * (len(domains) + 2),
    ]
    for name, rk in ranks.items():
      lines.append(
          f"| {name} | "
          + " | ".join(f"{rk[d]:.0f}" for d in domains)
          + f" | {_f(rk['macro'])} |"
      )
  return "\n".join(lines) + "\n"


def plot_rho_vs_tokens(rows: Sequence[Mapping[str, Any]], path: str) -> str:
  """Macro rho and top-25% rho against total tokens, one colour per family.

  Args:
    rows: table rows (only the main, Table 2 rows are drawn).
    path: output PNG path.

  Returns:
    The path written.
  """
  xs, rho, top = {}, {}, {}
  for family, name in (
      ("merged", "merged (DeMix)"),
      ("trained", "trained (RegMix/CLIMB)"),
  ):
    rs = sorted(
        (r for r in rows if r["main"] and r["family"] == family),
        key=lambda r: r["total_tokens"],
    )
    if rs:
      xs[name] = [r["total_tokens"] for r in rs]
      rho[name] = [_float(r["rho"]["macro"]) for r in rs]
      top[name] = [_float(r["top25_rho"]["macro"]) for r in rs]
      if "macro_heldout" in rs[0]["rho"]:
        held = f"{name}, held-out targets"
        xs[held] = xs[name]
        rho[held] = [_float(r["rho"]["macro_heldout"]) for r in rs]
  hlines = {}
  first = rows[0] if rows else {}
  for key, label in (
      ("ceiling_macro", "noise ceiling (benchmark domains)"),
      ("ceiling_macro_heldout", "noise ceiling (held-out targets)"),
  ):
    if math.isfinite(_float(first.get(key))):
      hlines[label] = _float(first[key])
  return plots.accuracy_vs_cost(
      xs,
      rho,
      path,
      top_rho=top,
      hlines=hlines,
      title="proxy accuracy vs cost (paper Fig. 1)"
      + (
          "\nmacro rho over the benchmark domains and over the held-out "
          "targets"
          if len(rho) > len(top)
          else ""
      ),
  )
