"""Stage `final`: train the found mixture and the baselines, score them.

Every run starts from the base and trains `final.tokens` on its source
weights; the found mixture is "demix", the natural-proportion baseline
"natural", and each `final.fixed_mixtures` entry and each trained-proxy
search of `search.baselines` (stage `baselines`) runs under its own name.
Each run records itself in `final/<name>/done.json` once scored, so a rerun
after a kill neither retrains nor rescores finished runs.
"""

from __future__ import annotations

from etils import epath

from demix_jax import progress as progress_lib
from demix_jax import spec as spec_lib
from demix_jax import storage
from demix_jax.stages import common
from demix_jax.stages import results
from demix_jax.stages import stage as stage_lib

NAME = "final"


def mixtures(
    spec: spec_lib.RunSpec, inputs: common.Inputs
) -> dict[str, dict[str, float]]:
  """Run name -> source weights, the found mixture first."""
  runs = {"demix": dict(inputs.results["search"].source_weights)}
  for name in spec.final.baselines:
    if name == "natural":
      runs["natural"] = inputs.ws.bounds.source_weights(
          inputs.ws.bounds.natural_alpha
      )
  for name, mix in spec.final.fixed_mixtures.items():
    runs[name] = dict(mix)
  found = inputs.get("baselines")  # RegMix / CLIMB, under their names
  for name in spec.search.baselines if found is not None else ():
    runs[name] = dict(found.methods[name].source_weights)
  return runs


def check(spec: spec_lib.RunSpec, workdir: str) -> None:
  """The trained-proxy searches' mixtures exist or will (preflight)."""
  if not spec.search.baselines or "baselines" in spec.stages:
    return
  if not (epath.Path(workdir) / "baselines" / "done.json").exists():
    raise spec_lib.ConfigError(
        "search.baselines",
        f"names {sorted(spec.search.baselines)}, whose mixtures the final"
        " stage trains, and stage 'baselines' has not run",
        "add 'baselines' to the stages (before final), or remove"
        " search.baselines",
    )


def run(spec: spec_lib.RunSpec, inputs: common.Inputs) -> results.FinalResult:
  ws = inputs.ws
  base = inputs.results["base"]
  comps = inputs.results["components"]
  tokens = spec.final.tokens
  runs = mixtures(spec, inputs)
  ev = None
  per_run = common.steps_of(spec, tokens)
  bar = progress_lib.Progress(NAME, per_run * len(runs), "steps")
  out = {}
  for i, (name, weights) in enumerate(runs.items()):
    run_dir = ws.workdir / "final" / name
    done_path = run_dir / "done.json"
    if done_path.exists():
      out[name] = results.FinalRun.from_json(
          storage.read_json(done_path), str(done_path)
      )
      bar.update(per_run * (i + 1))
      continue
    r = ws.recipe.train(
        run_dir,
        weights,
        tokens,
        what=f"final run {name}",
        init_from=base.run_dir,
        seed_offset=common.FINAL_SEED + i,
        config_hash=inputs.config_hash,
        progress=lambda s, i=i: bar.update(per_run * i + s),
    )
    if ev is None:
      ev = ws.engines.evaluator(
          base.run_dir, comps.run_dirs(), spec.budgets.use_budget
      )
    scores = ev.evaluate_params(r.params)
    out[name] = results.FinalRun(
        run_dir=str(run_dir),
        weights=weights,
        tokens=r.tokens,
        train_seconds=r.seconds,
        scores={k: float(v) for k, v in scores.items()},
    )
    common.write_json(done_path, out[name].to_json())
  bar.finish(f"{len(out)} runs of {tokens:,} tokens")
  return results.FinalResult(
      runs=out, tokens=sum(r.tokens for r in out.values())
  )


STAGE = stage_lib.Stage(
    name=NAME,
    requires=("base", "components", "search"),
    optional=("baselines",),
    result=results.FinalResult,
    run=run,
    check=check,
    hashed=stage_lib.SCORING + ("search", "final"),
)
