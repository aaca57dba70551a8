r"""The recipe study: which component recipe lets merged proxies rank mixtures.

  python -m demix_jax.validation.study --workdir=workdir/study \
      [--config=configs/validate_small.py] [--recipes=a,b,...] \
      [--set=validate.merge_methods=linear ...]

Each recipe is the validate config with some fields replaced (the
components' optimizer, beta, ...; `RECIPES`). All recipes share one base
model, one set of reference runs and one set of twins (the noise ceiling):
the first recipe trains them, the others reuse its `base/` and `data/` and
its cached reference scores, so each further recipe costs only its own
components and their merged proxies. References and twins are trained with
`optim`, never with the recipe, because they stand for the real training
the proxies must predict.

Writes, under --workdir: `<recipe>/` (an ordinary pipeline workdir per
recipe), `study.json` (one row per recipe and component budget: delta,
barrier, macro rho with its bootstrap interval, top-25% rho, decision
accuracy, recovery, beside the trained proxies and the noise ceiling),
`study.md` and `study.png` (macro rho against component tokens, one line
per recipe, the ceiling and the trained proxies drawn across). A rerun
skips every finished recipe (the pipeline's own resume).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags

from demix_jax import storage
from demix_jax.report import plots
from demix_jax.validation import subruns
from demix_jax.validation import tables

# name -> config overrides. min_lr_ratio 1.0 = constant after warmup.
RECIPES: dict[str, dict[str, Any]] = {
    "lr3e-3_cosine": {},  # the demo's recipe before the study
    "lr1e-3_const": {
        "components.optim.peak_lr": 1e-3,
        "components.optim.min_lr_ratio": 1.0,
    },
    "lr3e-4_const": {
        "components.optim.peak_lr": 3e-4,
        "components.optim.min_lr_ratio": 1.0,
    },
    "lr3e-4_cosine": {"components.optim.peak_lr": 3e-4},
    "lr1e-4_const": {
        "components.optim.peak_lr": 1e-4,
        "components.optim.min_lr_ratio": 1.0,
    },
    "lr3e-4_const_nowarmup": {
        "components.optim.peak_lr": 3e-4,
        "components.optim.min_lr_ratio": 1.0,
        "components.optim.warmup_steps": 0,
    },
}

_WORKDIR = flags.DEFINE_string("workdir", None, "Study directory.")
_CONFIG = flags.DEFINE_string(
    "config", "configs/validate_small.py", "The validate config file."
)
_RECIPES = flags.DEFINE_list(
    "recipes", list(RECIPES), f"Recipes to run, in order; from {list(RECIPES)}."
)
_SET = flags.DEFINE_multi_string(
    "set", [], "Overrides for every recipe, field=value (e.g. validate.betas=)."
)
_BETAS = flags.DEFINE_list(
    "betas_for",
    [],
    "Recipes that also ablate beta (validate.betas=0.0,0.25).",
)

_SHARED = ("base", "data")
_SHARED_SCORES = ("reference.json", "twin.json")


def rows_of(name: str, table: Mapping[str, Any]) -> list[dict[str, Any]]:
  """The study's rows of one recipe's validation table."""
  out = []
  for r in table["rows"]:
    d = r.get("diagnostics") or {}
    out.append(
        {
            "recipe": name,
            "family": r["family"],
            "method": r["method"],
            "main": r["main"],
            "component_tokens": r.get("component_tokens"),
            "total_tokens": r["total_tokens"],
            "beta": r.get("beta"),
            "delta_mean": d.get("delta_mean"),
            "max_barrier": d.get("max_barrier"),
            "rho_macro": r["rho"]["macro"],
            "rho_macro_ci": r.get("rho_macro_ci"),
            "rho": {k: v for k, v in r["rho"].items() if k != "macro"},
            "top25_macro": r["top25_rho"]["macro"],
            "accuracy_macro": r["decision_accuracy"]["macro"],
            "recovery_macro": r["recovery"]["macro"],
        }
    )
  return out


def _f(x, digits=2):
  return "nan" if x is None else f"{x:.{digits}f}"


def markdown(rows: Sequence[Mapping[str, Any]], ceiling, n_refs: int) -> str:
  """The study table: one line per recipe x component budget (+ trained)."""
  lines = [
      f"Against {n_refs} reference runs; noise ceiling (macro) "
      f"{_f(ceiling.get('macro'))}.",
      "",
      "| Recipe | Family | Components / proxy tokens | beta | delta | max "
      "barrier | rho macro [90% CI] | T25 macro | Acc macro | CR macro |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  seen_trained = False
  for r in rows:
    if r["family"] == "trained":
      if seen_trained:
        continue
      trained = [x for x in rows if x["family"] == "trained"]
      trained = [x for x in trained if x["recipe"] == r["recipe"]]
      for t in trained:
        lines.append(
            f"| (trained proxy) | trained | total "
            f"{tables.fmt_tokens(t['total_tokens'])} | – | – | – | "
            f"{_f(t['rho_macro'])} {_ci(t)} | {_f(t['top25_macro'])} | "
            f"{_f(t['accuracy_macro'])} | {_f(t['recovery_macro'])} |"
        )
      seen_trained = True
      continue
    lines.append(
        f"| {r['recipe']} | {r['method']} | "
        f"{tables.fmt_tokens(r['component_tokens'])} | {r['beta']:g} | "
        f"{_pct(r['delta_mean'])} | {_f(r['max_barrier'], 4)} | "
        f"{_f(r['rho_macro'])} {_ci(r)} | {_f(r['top25_macro'])} | "
        f"{_f(r['accuracy_macro'])} | {_f(r['recovery_macro'])} |"
    )
  return "\n".join(lines) + "\n"


def _ci(r) -> str:
  ci = r.get("rho_macro_ci")
  if not ci or any(x is None for x in ci):
    return ""
  return f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _pct(x) -> str:
  return "–" if x is None else f"{100 * x:.1f}%"


def plot(rows, ceiling, path: str) -> str:
  """Macro rho against component tokens, one line per recipe."""
  xs: dict = {}
  ys: dict = {}
  for r in rows:
    if r["family"] != "merged" or not r["main"]:
      continue
    xs.setdefault(r["recipe"], []).append(r["component_tokens"])
    ys.setdefault(r["recipe"], []).append(r["rho_macro"])
  lines = {
      "noise ceiling": ceiling.get("macro"),
  }
  trained = [r for r in rows if r["family"] == "trained"]
  if trained:
    best = max(trained, key=lambda r: r["rho_macro"] or -1)
    lines["best trained proxy"] = best["rho_macro"]
  return plots.accuracy_vs_cost(
      xs,
      ys,
      path,
      title="recipe study: merged proxies vs reference runs",
      xlabel="component training tokens",
      hlines={k: v for k, v in lines.items() if v is not None},
  )


def main(argv):
  del argv
  root = _WORKDIR.value
  if not root:
    raise app.UsageError("--workdir is required")
  unknown = [r for r in _RECIPES.value if r not in RECIPES]
  if unknown:
    raise app.UsageError(f"unknown recipes {unknown}; use {list(RECIPES)}")
  rows, ceiling, n_refs = [], {}, 0
  first = None
  for name in _RECIPES.value:
    wd = os.path.join(root, name)
    if first is None:
      first = wd
    else:
      subruns.share(first, wd, _SHARED, _SHARED_SCORES)
    extra = list(_SET.value)
    if name in _BETAS.value:
      extra.append("validate.betas=(0.0,0.25)")
    subruns.run_pipeline(_CONFIG.value, wd, RECIPES[name], extra)
    table = storage.read_json(os.path.join(wd, "validate", "table.json"))
    rows += rows_of(name, table)
    ceiling, n_refs = table.get("ceiling") or {}, table["n_references"]
  out = {"ceiling": ceiling, "n_references": n_refs, "rows": rows}
  storage.atomic_write_json(os.path.join(root, "study.json"), out)
  md = markdown(rows, ceiling, n_refs)
  storage.atomic_write_text(os.path.join(root, "study.md"), md)
  plot(rows, ceiling, os.path.join(root, "study.png"))
  print(md)
  print(json.dumps({"ceiling_macro": ceiling.get("macro"), "rows": len(rows)}))


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  app.run(main)
