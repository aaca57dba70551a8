"""Stage `components`: one model per candidate, continued from the base.

Component i trains on D'_i = beta * G + (1 - beta) * D_i (the general
candidate on G alone). Checkpoints at `components.budgets` tokens are kept
forever. Each component is its own resumable run and records itself in
`components/<candidate>/done.json` when finished, so a kill loses at most the
steps since the last checkpoint of the run in progress.
"""

from __future__ import annotations

from demix_jax import progress as progress_lib
from demix_jax import spec as spec_lib
from demix_jax.data import mixture as mixture_lib
from demix_jax.stages import common
from demix_jax.stages import results
from demix_jax.stages import stage as stage_lib

NAME = "components"


def train_components(
    spec: spec_lib.RunSpec,
    inputs: common.Inputs,
    beta: float,
    out_dir,
    what: str = "component",
) -> dict[str, results.TrainedRun]:
  """Trains (or reads back) every candidate's component for `beta`."""
  ws = inputs.ws
  base = inputs.results["base"]
  tokens = spec.budgets.component_tokens
  per_run = common.steps_of(spec, tokens)
  bar = progress_lib.Progress(
      NAME, per_run * len(ws.candidates), "steps", every_s=30.0
  )
  out = {}
  for i, cand in enumerate(ws.candidates):
    run_dir = out_dir / cand
    done_path = run_dir / "done.json"
    if done_path.exists():
      out[cand] = common.read_result(results.TrainedRun, done_path, ws)
      bar.update(per_run * (i + 1))
      continue
    weights = mixture_lib.component_weights(cand, spec.data.general, beta)
    r = ws.recipe.train(
        run_dir,
        weights,
        tokens,
        what=f"{what} {cand}",
        budgets=spec.budgets.component_budgets,
        init_from=base.run_dir,
        seed_offset=common.COMPONENT_SEED + i,
        config_hash=inputs.config_hash,
        progress=lambda s, i=i: bar.update(per_run * i + s),
        optim=spec.component_optim,
    )
    out[cand] = results.TrainedRun(
        run_dir=str(run_dir),
        tokens=r.tokens,
        steps=r.steps,
        train_seconds=r.seconds,
        mixture=weights,
        eval=r.eval_metrics,
        budget_checkpoints={
            str(k): str(v) for k, v in r.budget_checkpoints.items()
        },
    )
    common.write_result(done_path, out[cand], ws)
  bar.finish(f"{len(out)} components of {tokens:,} tokens")
  return out


def run(
    spec: spec_lib.RunSpec, inputs: common.Inputs
) -> results.ComponentsResult:
  comps = train_components(
      spec, inputs, spec.data.beta, inputs.ws.workdir / "components"
  )
  return results.ComponentsResult(
      components=comps, tokens=sum(c.tokens for c in comps.values())
  )


STAGE = stage_lib.Stage(
    name=NAME,
    requires=("base",),
    result=results.ComponentsResult,
    run=run,
    hashed=stage_lib.COMPONENTS,
)
