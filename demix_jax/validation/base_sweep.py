r"""The base sweep: how well trained must the shared base be for merging?

  python -m demix_jax.validation.base_sweep --workdir=workdir/base_sweep \
      [--config=configs/validate_small.py] [--tpp=0.4,30,4] [--model=small] \
      [--set=validate.merge_methods=('linear',) ...]

Each point is the validate config with the base trained for a number of
tokens per parameter (`--tpp`; the demo's base saw 0.4, the paper's 1.7B
base about 30: 50B tokens), everything else equal: the same components
recipe and budgets, the same reference mixtures trained for the same
tokens, the same twins (noise ceiling) and trained proxies. References and
twins start from each point's own base, so every point trains its own;
only the tokenized data (`data/`, which no model field changes) is shared
with the first point. `--model=small` replaces the config's model with a
230K-parameter one (d_model 64, 2 layers), so that 30 tokens per parameter
(6.9M tokens) fits a 2-core machine; `--model=config` keeps the config's.

Writes, under --workdir: `tpp<x>/` (an ordinary pipeline workdir per
point), `sweep.json` (one row per point and component budget: base tokens,
the base's held-out bits per byte, delta, barrier, macro rho over the
benchmark domains and over the held-out targets with its noise ceiling,
and the trained proxy nearest in total tokens), `sweep.md` and `sweep.png`
(macro rho against tokens per parameter: merged proxies, trained proxies
at about equal tokens, the ceiling). A rerun skips every finished point
(the pipeline's own resume).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags

import demix_jax
from demix_jax import models
from demix_jax import storage
from demix_jax.validation import subruns

# "tiny_230k" (229,824 parameters with the demo's 2,048-token vocabulary):
# small enough that 30 tokens per parameter trains in minutes on 2 cores.
_SMALL = models.get_preset("tiny_230k")
MODELS: dict[str, dict[str, Any]] = {
    "small": {f"model.{f}": getattr(_SMALL, f) for f in models.SIZE_FIELDS},
    "config": {},
}

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """The CLI's flags: defined only when run as a program, so that importing
  this module (tests, notebooks) leaves absl's flags to the importer."""
  flags.DEFINE_string("workdir", None, "Sweep directory.")
  flags.DEFINE_string(
      "config", "configs/validate_small.py", "The validate config file."
  )
  flags.DEFINE_list(
      "tpp", ["0.4", "30", "4"], "Base tokens per parameter, one point each."
  )
  flags.DEFINE_enum(
      "model", "small", list(MODELS), "Model of every point (MODELS)."
  )
  flags.DEFINE_multi_string(
      "set", [], "Overrides for every point, field=value."
  )


def _set(c, dotted: str, value: Any) -> None:
  *path, leaf = dotted.split(".")
  node = c
  for p in path:
    node = node[p]
  node[leaf] = value


def apply_point(c, model: str, tokens_per_param: float) -> tuple[int, int]:
  """Gives config `c` the point's model and base length, in place.

  The base's tokens are whole steps of the config's batch (at least one
  warmup's worth), so the achieved tokens per parameter is
  steps * step tokens / parameters, not exactly the requested value.
  configs/demo.py and configs/validate_small.py adopt their points with it.

  Returns:
    (parameters, base steps).

  Raises:
    ValueError: `tokens_per_param` is not a positive finite number.
  """
  t = tokens_per_param
  if not (math.isfinite(t) and t > 0):
    raise ValueError(f"--tpp: {t} is not a positive number of tokens")
  for k, v in MODELS[model].items():
    _set(c, k, v)
  n = models.num_params(models.ModelConfig(**c.model.to_dict()))
  step = c.train.global_batch_size * c.data.seq_len
  steps = max(round(t * n / step), c.optim.warmup_steps + 1)
  c.base.tokens = steps * step
  return n, steps


def point_plan(
    config: str, model: str, tpp: Sequence[float]
) -> tuple[int, list[dict[str, Any]]]:
  """(parameters, [{name, tpp, base_tokens, overrides}]) for the points.

  Raises:
    ValueError: a point is not a positive finite number, or two points
      round to the same number of steps.
  """
  c = demix_jax.load_config(config)
  points: list[dict[str, Any]] = []
  seen: dict[int, float] = {}
  n = 0
  for t in tpp:
    n, steps = apply_point(c, model, t)
    if steps in seen:
      raise ValueError(
          f"--tpp: {seen[steps]:g} and {t:g} both round to {steps} steps;"
          " drop one"
      )
    seen[steps] = t
    points.append(
        {
            "name": f"tpp{t:g}",
            "tpp": c.base.tokens / n,
            "base_tokens": c.base.tokens,
            "overrides": {**MODELS[model], "base.tokens": c.base.tokens},
        }
    )
  return n, points


def _nearest(rows, total: float):
  trained = [r for r in rows if r["family"] == "trained"]
  if not trained:
    return None
  return min(trained, key=lambda r: abs(math.log(r["total_tokens"] / total)))


def rows_of(point: Mapping[str, Any], table, base_done, n_params: int):
  """The sweep's rows of one point: one per main merged component budget."""
  ceil = table.get("ceiling") or {}
  heldout = base_done.get("eval", {})
  bpb = [v for k, v in heldout.items() if k.endswith("/bpb")]
  out = []
  for r in table["rows"]:
    if r["family"] != "merged" or not r.get("main"):
      continue
    d = r.get("diagnostics") or {}
    t = _nearest(table["rows"], r["total_tokens"])
    out.append(
        {
            "point": point["name"],
            "params": n_params,
            "tpp": point["tpp"],
            "base_tokens": point["base_tokens"],
            "base_heldout_bpb": sum(bpb) / len(bpb) if bpb else None,
            "component_tokens": r["component_tokens"],
            "total_tokens": r["total_tokens"],
            "delta_mean": d.get("delta_mean"),
            "max_barrier": d.get("max_barrier"),
            "rho_macro": r["rho"]["macro"],
            "rho_macro_ci": r.get("rho_macro_ci"),
            "rho_macro_heldout": r["rho"].get("macro_heldout"),
            "rho": {k: v for k, v in r["rho"].items() if "macro" not in k},
            "ceiling_macro": ceil.get("macro"),
            "ceiling_macro_heldout": ceil.get("macro_heldout"),
            "ceiling": {k: v for k, v in ceil.items() if "macro" not in k},
            "trained_total_tokens": t and t["total_tokens"],
            "trained_rho_macro": t and t["rho"]["macro"],
            "trained_rho_macro_heldout": t and t["rho"].get("macro_heldout"),
        }
    )
  return out


def _f(x, digits=2):
  if x is None or not math.isfinite(x):
    return "–"
  return f"{x:.{digits}f}"


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
  """One line per point x component budget, then rho per target."""
  # Imported here, as in `plot`: the configs import this module for
  # `apply_point`, and the tables and plots pull in matplotlib.
  from demix_jax.validation import tables  # pylint: disable=g-import-not-at-top

  lines = [
      "| Base tokens / param | Base tokens | Base held-out bpb | Components "
      "| delta | max barrier | rho macro [90% CI] | ceiling | rho held-out "
      "| ceiling held-out | trained proxy (total tokens): rho / held-out |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    ci = r.get("rho_macro_ci")
    ci = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and None not in ci else ""
    trained = (
        "–"
        if r["trained_total_tokens"] is None
        else f"{_f(r['trained_rho_macro'])} / "
        f"{_f(r['trained_rho_macro_heldout'])} "
        f"({tables.fmt_tokens(r['trained_total_tokens'])})"
    )
    delta = "–" if r["delta_mean"] is None else f"{100 * r['delta_mean']:.1f}%"
    lines.append(
        f"| {r['tpp']:.2f} | {tables.fmt_tokens(r['base_tokens'])} | "
        f"{_f(r['base_heldout_bpb'], 3)} | "
        f"{tables.fmt_tokens(r['component_tokens'])} | {delta} | "
        f"{_f(r['max_barrier'], 4)} | {_f(r['rho_macro'])}{ci} | "
        f"{_f(r['ceiling_macro'])} | {_f(r['rho_macro_heldout'])} | "
        f"{_f(r['ceiling_macro_heldout'])} | {trained} |"
    )
  targets = sorted({t for r in rows for t in r["rho"]})
  if targets:
    last: dict[str, Mapping[str, Any]] = {}
    for r in rows:  # the largest component budget of each point
      if r["point"] not in last or (
          r["component_tokens"] > last[r["point"]]["component_tokens"]
      ):
        last[r["point"]] = r
    head = ["Target"] + [
        f"{r['tpp']:.2f} tok/param: rho (ceiling)" for r in last.values()
    ]
    lines += [
        "",
        "Merged proxies at the largest component budget, rho per target "
        "beside its own noise ceiling:",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for t in targets:
      lines.append(
          f"| {t} | "
          + " | ".join(
              f"{_f(r['rho'].get(t))} ({_f(r['ceiling'].get(t))})"
              for r in last.values()
          )
          + " |"
      )
  return "\n".join(lines) + "\n"


def plot(rows: Sequence[Mapping[str, Any]], path: str) -> str:
  """Macro rho against base tokens per parameter (largest budget per point)."""
  from demix_jax.report import plots  # pylint: disable=g-import-not-at-top

  last: dict[str, Mapping[str, Any]] = {}
  for r in rows:
    p = r["point"]
    if p not in last or r["component_tokens"] > last[p]["component_tokens"]:
      last[p] = r
  pts = sorted(last.values(), key=lambda r: r["tpp"])
  xs = [r["tpp"] for r in pts]
  series = {
      "merged, benchmarks": [r["rho_macro"] for r in pts],
      "trained (~equal tokens), benchmarks": [
          r["trained_rho_macro"] for r in pts
      ],
      "ceiling, benchmarks": [r["ceiling_macro"] for r in pts],
      "merged, held-out bpb": [r["rho_macro_heldout"] for r in pts],
      "ceiling, held-out bpb": [r["ceiling_macro_heldout"] for r in pts],
  }
  series = {
      k: [math.nan if v is None else v for v in ys]
      for k, ys in series.items()
      if any(v is not None for v in ys)
  }
  return plots.accuracy_vs_cost(
      {k: xs for k in series},
      series,
      path,
      title="base sweep: macro rho vs reference runs (largest component budget)",
      xlabel="base training tokens per parameter",
  )


def main(argv):
  del argv
  root = FLAGS.workdir
  try:
    tpp = [float(t) for t in FLAGS.tpp]
    n, points = point_plan(FLAGS.config, FLAGS.model, tpp)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  print(
      f"base sweep: {n:,} parameters; "
      + ", ".join(f"{p['name']}: {p['base_tokens']:,} tokens" for p in points),
      flush=True,
  )
  rows = []
  first = None
  for p in points:
    wd = os.path.join(root, p["name"])
    if first is None:
      first = wd
    else:
      subruns.share(first, wd, ("data",))
    subruns.run_pipeline(FLAGS.config, wd, p["overrides"], FLAGS.set)
    table = storage.read_json(os.path.join(wd, "validate", "table.json"))
    base_done = storage.read_json(os.path.join(wd, "base", "done.json"))
    rows += rows_of(p, table, base_done, n)
  out = {"params": n, "config": FLAGS.config, "rows": rows}
  storage.atomic_write_json(os.path.join(root, "sweep.json"), out)
  md = markdown(rows)
  storage.atomic_write_text(os.path.join(root, "sweep.md"), md)
  plot(rows, os.path.join(root, "sweep.png"))
  print(md)
  print(json.dumps({"points": len(points), "rows": len(rows)}))


if __name__ == "__main__":
  _define_flags()
  flags.mark_flag_as_required("workdir")
  app.run(main)
