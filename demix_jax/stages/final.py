"""Stage `final`: train the found mixture and the baselines, score them.

Every run starts from the base and trains `final.tokens` on its source
weights; the found mixture is "demix", the natural-proportion baseline
"natural", and each `final.fixed_mixtures` entry runs under its own name.
With `final.seeds` = k > 1 each mixture trains k times (seed j > 0 in
`final/<name>-seed<j>`, its own data order and step seed), and its result
holds the mean scores and each seed's. Each run records itself in
`<run>/done.json` once scored, so a rerun after a kill neither retrains nor
rescores finished runs.
"""

from __future__ import annotations

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
  return runs


def run(spec: spec_lib.RunSpec, inputs: common.Inputs) -> results.FinalResult:
  ws = inputs.ws
  base = inputs.results["base"]
  comps = inputs.results["components"]
  tokens = spec.final.tokens
  seeds = spec.final.seeds
  runs = mixtures(spec, inputs)
  ev = None
  per_run = common.steps_of(spec, tokens)
  jobs = [(n, k) for n in runs for k in range(seeds)]
  bar = progress_lib.Progress(NAME, per_run * len(jobs), "steps")
  done: dict[tuple[str, int], results.FinalRun] = {}
  for j, (name, k) in enumerate(jobs):
    i = list(runs).index(name)
    # Seed 0 keeps the one-seed layout (final/<name>), so one-seed
    # workdirs resume unchanged.
    run_dir = ws.workdir / "final" / (name if k == 0 else f"{name}-seed{k}")
    done_path = run_dir / "done.json"
    if done_path.exists():
      done[name, k] = results.FinalRun.from_json(
          storage.read_json(done_path), str(done_path)
      )
      bar.update(per_run * (j + 1))
      continue
    r = ws.recipe.train(
        run_dir,
        runs[name],
        tokens,
        what=f"final run {name}" + (f" (seed {k})" if k else ""),
        init_from=base.run_dir,
        seed_offset=common.FINAL_SEED + i + k * common.FINAL_REPEAT_SEED,
        config_hash=inputs.config_hash,
        progress=lambda s, j=j: bar.update(per_run * j + s),
    )
    if ev is None:
      ev = ws.engines.evaluator(
          base.run_dir, comps.run_dirs(), spec.budgets.use_budget
      )
    scores = ev.evaluate_params(r.params)
    done[name, k] = results.FinalRun(
        run_dir=str(run_dir),
        weights=runs[name],
        tokens=r.tokens,
        train_seconds=r.seconds,
        scores={t: float(v) for t, v in scores.items()},
    )
    common.write_json(done_path, done[name, k].to_json())
  out = {n: _over_seeds([done[n, k] for k in range(seeds)]) for n in runs}
  what = f"{len(out)} runs" + (f" x {seeds} seeds" if seeds > 1 else "")
  bar.finish(f"{what} of {tokens:,} tokens")
  return results.FinalResult(
      runs=out, tokens=sum(r.tokens for r in done.values())
  )


def _over_seeds(per_seed: list[results.FinalRun]) -> results.FinalRun:
  """One mixture's runs over seeds: mean scores, each seed's kept."""
  if len(per_seed) == 1:
    return per_seed[0]
  first = per_seed[0]
  return results.FinalRun(
      run_dir=first.run_dir,
      weights=first.weights,
      tokens=sum(r.tokens for r in per_seed),
      train_seconds=sum(r.train_seconds for r in per_seed),
      scores={
          t: float(sum(r.scores[t] for r in per_seed) / len(per_seed))
          for t in first.scores
      },
      seed_scores=[dict(r.scores) for r in per_seed],
  )


STAGE = stage_lib.Stage(
    name=NAME,
    requires=("base", "components", "search"),
    result=results.FinalResult,
    run=run,
    hashed=stage_lib.SCORING + ("search", "final"),
)
