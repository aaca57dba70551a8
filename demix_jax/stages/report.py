"""Stage `report`: summary.json, report.md and the plots.

Always rerun (it is cheap and reads only finished results). `print_result`
renders the found mixture and the final-vs-baseline table; the CLI prints it
last, so it is the last thing a person sees in the terminal.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from demix_jax import spec as spec_lib
from demix_jax import stats
from demix_jax import storage
from demix_jax.report import plots
from demix_jax.report import run_plots
from demix_jax.search import surrogates
from demix_jax.search import table as table_lib
from demix_jax.stages import common
from demix_jax.stages import comparison
from demix_jax.stages import results
from demix_jax.stages import stage as stage_lib
from demix_jax.stages import summary as summary_lib

NAME = "report"


def _plots(
    spec, ws, search, summary, key_targets, out_dir, spread=None
) -> dict[str, str]:
  names = ws.candidates
  alphas, cols, rounds = table_lib.read_proxies(search.proxies_csv, names)
  chosen = np.array([search.alpha[n] for n in names])
  paths = [np.asarray(p) for p in search.gradient_paths]
  label = {
      "composite": "composite rank (lower is better)",
      "normalized": "change from the base (lower is better)",
  }.get(search.objective.kind, search.objective.targets[0])
  pngs = {}
  pngs["landscape"] = plots.mixture_landscape(
      alphas,
      cols["objective"],
      names,
      str(out_dir / "landscape.png"),
      title=f"{len(alphas)} merged proxies",
      value_label=label,
      highlight=chosen,
      paths=paths,
  )
  t0 = key_targets[0]
  kind = surrogates.resolve_kind(spec.search.rounds.surrogate, len(alphas))
  pred = surrogates.out_of_fold(kind, alphas, cols[t0], seed=spec.seed)
  pngs["surrogate"] = plots.predicted_vs_observed(
      pred,
      cols[t0],
      str(out_dir / "surrogate.png"),
      label=t0,
      rho=stats.spearman(pred, cols[t0]),
  )
  obj = cols["objective"]
  best = {
      "best proxy so far (objective)": [
          float(np.nanmin(obj[rounds <= r]))
          for r in sorted(set(rounds.tolist()))
      ]
  }
  pngs["rounds"] = plots.best_per_round(
      best, str(out_dir / "rounds.png"), ylabel=label
  )
  diag = search.diagnostics
  if diag["delta"]:
    barriers = {tuple(k.split("|")): v for k, v in diag["barrier"].items()}
    pngs["components"] = run_plots.component_diagnostics(
        diag["delta"],
        barriers,
        str(out_dir / "components.png"),
        barrier_target=diag.get("barrier_target") or "heldout/bpb",
    )
  if summary.final:
    table = {"demix": summary.final, **summary.baselines}
    pngs["final"] = run_plots.final_vs_baselines(
        table,
        summary.key_targets,
        str(out_dir / "final.png"),
        # Each run's merged-proxy scores, drawn beside its trained ones.
        proxies={
            n: p["merged_scores"] for n, p in (search.proxies or {}).items()
        },
        spread=spread,
    )
  return pngs


_SEQIO_MODULE = '''"""The data mixture DeMix found, as a seqio Mixture (written by demix_jax).

Source tasks must be registered first under the names `{{prefix}}_{{source}}`
(for a demix_jax run, `demix_jax.data.seqio_tasks.register_source_tasks`
does it); then `register()` adds the mixture and returns its name.
"""

import seqio

SOURCE_WEIGHTS = {weights!r}


def register(prefix: str = "demix", name: str = "found") -> str:
  rates = [
      (f"{{prefix}}_{{s}}", w) for s, w in sorted(SOURCE_WEIGHTS.items()) if w > 0
  ]
  mixture = f"{{prefix}}_{{name}}"
  seqio.MixtureRegistry.remove(mixture)
  seqio.MixtureRegistry.add(mixture, rates)
  return mixture
'''


def write_mixture(out_dir, spec: spec_lib.RunSpec, search) -> dict[str, str]:
  """The found mixture for other trainers: a plain JSON and a seqio module.

  mixture.json holds token weights per source (what a data loader needs),
  with alpha and the padding that produced them; seqio_mixture.py registers
  the same weights as a seqio Mixture for t5x/seqio users.
  """
  weights = {k: float(v) for k, v in sorted(search.source_weights.items())}
  blob = {
      "source_weights": weights,
      "alpha": dict(search.alpha),
      "candidates": list(spec.data.candidates),
      "general": spec.data.general,
      "beta": spec.data.beta,
      "seq_len": spec.data.seq_len,
      "objective": search.objective.to_json(),
  }
  paths = {
      "json": str(out_dir / "mixture.json"),
      "seqio": str(out_dir / "seqio_mixture.py"),
  }
  storage.atomic_write_json(paths["json"], blob)
  storage.atomic_write_text(
      paths["seqio"], _SEQIO_MODULE.format(weights=weights)
  )
  return paths


def _transfer_summary(
    spec: spec_lib.RunSpec, done, final: results.FinalResult
) -> results.Summary:
  """The summary of a run without a search (`final.mixture_from`): the
  transferred mixture, the final runs and the cost; no proxies."""
  runs = final.runs
  key_targets = list(spec.search.objective.targets)
  demix = runs.get("demix")
  extra = sorted(
      t
      for t in (demix.scores if demix else {})
      if t.startswith("heldout/") and t.endswith("/bpb")
  )
  return results.Summary(
      alpha=dict(final.mixture_from.alpha) if final.mixture_from else {},
      source_weights=dict(demix.weights) if demix else {},
      epochs={},
      predicted={},
      predicted_std={},
      merged={},
      search_methods={},
      final=dict(demix.scores) if demix else {},
      baselines={n: dict(r.scores) for n, r in runs.items() if n != "demix"},
      final_weights={n: dict(r.weights) for n, r in runs.items()},
      cost={
          name: results.StageCost(
              tokens=int(done[name].tokens), seconds=float(done[name].seconds)
          )
          for name in stage_lib.ORDER
          if name in done
      },
      key_targets=key_targets + extra,
      n_proxies=0,
      surrogate="",
      rounds=[],
      diagnostics={},
      config_snippet="",
  )


def _transfer_report(
    spec: spec_lib.RunSpec, inputs: common.Inputs
) -> results.ReportResult:
  """The report of a run whose mixture another run found."""
  final = inputs.results["final"]
  assert isinstance(final, results.FinalResult)
  out_dir = inputs.ws.workdir / "report"
  out_dir.mkdir(parents=True, exist_ok=True)
  summary = _transfer_summary(spec, inputs.results, final)
  pngs = {}
  if jax.process_index() == 0:
    if summary.final:
      pngs["final"] = run_plots.final_vs_baselines(
          {"demix": summary.final, **summary.baselines},
          summary.key_targets,
          str(out_dir / "final.png"),
      )
    rel = {k: v.rsplit("/", 1)[-1] for k, v in pngs.items()}
    origin = (
        final.mixture_from.path
        if final.mixture_from
        else spec.final.mixture_from
    )
    md = summary_lib.render_markdown(summary, rel).replace(
        "# DeMix report\n",
        "# DeMix report\n\nThe mixture was found by another run"
        f" (final.mixture_from): `{origin}`; this run searched nothing.\n",
        1,
    )
    storage.atomic_write_json(out_dir / "summary.json", summary.to_json())
    storage.atomic_write_text(out_dir / "report.md", md)
  return results.ReportResult(
      summary=str(out_dir / "summary.json"),
      report=str(out_dir / "report.md"),
      plots=pngs,
  )


def run(spec: spec_lib.RunSpec, inputs: common.Inputs) -> results.ReportResult:
  ws = inputs.ws
  search = inputs.get("search")
  if search is None:  # final.mixture_from: `_needs` asked for final only
    return _transfer_report(spec, inputs)
  out_dir = ws.workdir / "report"
  out_dir.mkdir(parents=True, exist_ok=True)
  key_targets = list(search.objective.targets)
  # Sorted: the same order whether the search result came from this process
  # or from its (key-sorted) done.json.
  extra = sorted(
      t
      for t in next(iter(search.methods.values()))["merged_scores"]
      if t.startswith("heldout/") and t.endswith("/bpb")
  )
  per_seed, proxy = comparison.seed_objectives(
      spec, search, inputs.get("final")
  )
  summary = summary_lib.build_summary(
      inputs.results,
      key_targets + extra,
      comparison.objective_table(spec, search, inputs.get("final")),
      ranking=comparison.ranking_table(spec, inputs.results),
      verdict=summary_lib.seed_verdict(per_seed, proxy, search.objective.kind),
  )
  pngs = {}
  if jax.process_index() == 0:
    pngs = _plots(
        spec,
        ws,
        search,
        summary,
        key_targets,
        out_dir,
        spread=comparison.seed_std(inputs.get("final"), summary.key_targets),
    )
    write_mixture(out_dir, spec, search)
    rel = {k: v.rsplit("/", 1)[-1] for k, v in pngs.items()}
    storage.atomic_write_json(out_dir / "summary.json", summary.to_json())
    storage.atomic_write_text(
        out_dir / "report.md", summary_lib.render_markdown(summary, rel)
    )
  return results.ReportResult(
      summary=str(out_dir / "summary.json"),
      report=str(out_dir / "report.md"),
      plots=pngs,
  )


def _needs(spec: spec_lib.RunSpec) -> tuple[str, ...]:
  """With a transferred mixture there is no search: the final runs."""
  return ("final",) if spec.final.mixture_from else STAGE.requires


# Always rerun: it is cheap and reads only finished results (the search's
# first: its cost table lists the stages in the order of the inputs).
STAGE = stage_lib.Stage(
    name=NAME,
    requires=("search",),
    optional=("base", "components", "baselines", "final", "validate"),
    result=results.ReportResult,
    run=run,
    reads_data=False,
    needs=_needs,
)


def print_result(summary: results.Summary | dict[str, Any]) -> None:
  """The found mixture and the final-vs-baseline table, on stdout.

  Args:
    summary: the report's Summary, or summary.json as read back.
  """
  if not isinstance(summary, results.Summary):
    summary = results.Summary.from_json(summary, "summary.json")
  used = summary.surrogate
  if used:
    print(f"\nSurrogate of the final fit: {used}")
  print("\nFound mixture (alpha -> source weights):")
  for c, a in summary.alpha.items():
    print(
        f"  {c:>12s}  alpha={a:.4f}  weight="
        f"{summary.source_weights.get(c, 0.0):.4f}"
    )
  if summary.final:
    runs = {"demix": summary.final, **summary.baselines}
    print("\nFinal runs (lower bpb is better):")
    proxy = bool(summary.merged)  # none: the mixture is another run's
    print(
        f"  {'target':<28s}"
        + "".join(f"{r:>12s}" for r in runs)
        + (f"{'proxy':>12s}" if proxy else "")
    )
    for t in summary.key_targets:
      print(
          f"  {t:<28s}"
          + "".join(f"{runs[r].get(t, float('nan')):12.4f}" for r in runs)
          + (f"{summary.merged.get(t, float('nan')):12.4f}" if proxy else "")
      )
  ranked = summary.ranking
  if any(r.method in ("regmix", "climb") for r in ranked.values()):
    print(
        "\nFinal mixtures ranked (Table 3: mean rank over the benchmarks"
        " among these runs, 1 = best; search tokens = training tokens spent"
        " finding the mixture):"
    )
    print(
        f"  {'run':<12s}{'method':>9s}{'macro rank':>12s}"
        f"{'domain rank':>13s}{'search tokens':>15s}"
    )
    # Best first (summary.json as read back lists its runs by name).
    for name, r in sorted(ranked.items(), key=lambda kv: kv[1].macro_rank):
      dom = r.domain_macro_rank
      print(
          f"  {name:<12s}{r.method:>9s}{r.macro_rank:12.2f}"
          + (f"{dom:13.2f}" if dom is not None else f"{'–':>13s}")
          + f"{r.search_tokens:15,d}"
      )
  objectives = summary.objectives
  if objectives:
    print(
        "\nObjective (normalized: mean relative change of the domain scores"
        " from the base, lower is better; composite: mean percentile rank"
        " among these runs):"
    )
    print(
        f"  {'run':<12s}{'normalized':>12s}{'proxy':>12s}"
        f"{'composite':>12s}{'mean domain':>13s}"
    )
    for name, o in objectives.items():
      proxy = o.proxy_normalized
      print(
          f"  {name:<12s}{o.trained_normalized:12.4f}"
          + (f"{proxy:12.4f}" if proxy is not None else f"{'–':>12s}")
          + f"{o.trained_composite:12.4f}{o.trained_mean:13.4f}"
      )
  if summary.verdict:
    print("")
    print("\n".join(summary_lib.verdict_lines(summary.verdict)))
