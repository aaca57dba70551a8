"""Stage `final`: train the found mixture and the baselines, score them.

Every run starts from the base and trains `final.tokens` on its source
weights; the found mixture is "demix", the natural-proportion baseline
"natural", and each `final.fixed_mixtures` entry and each trained-proxy
search of `search.baselines` (stage `baselines`) runs under its own name.
With `final.seeds` = k > 1 each mixture trains k times (seed j > 0 in
`final/<name>-seed<j>`, its own data order and step seed), and its result
holds the mean scores and each seed's. Each run records itself in
`<run>/done.json` once scored, so a rerun after a kill neither retrains nor
rescores finished runs.

With `final.mixture_from` the found mixture is another run's (its
report/mixture.json, e.g. a 1.7B search trained here at 8B, the paper's
Table 6): the stage then needs neither this run's search nor its
components, scores its runs with a single-model evaluator (the same rows
and metrics), and records the mixture's origin in its result.
"""

from __future__ import annotations

from etils import epath

from demix_jax import progress as progress_lib
from demix_jax import spec as spec_lib
from demix_jax import storage
from demix_jax.config_lib import ConfigError
from demix_jax.spec import transfer
from demix_jax.stages import common
from demix_jax.stages import results
from demix_jax.stages import stage as stage_lib

NAME = "final"


def mixtures(
    spec: spec_lib.RunSpec,
    inputs: common.Inputs,
    moved: results.MixtureOrigin | None = None,
) -> dict[str, dict[str, float]]:
  """Run name -> source weights, the found mixture first (`moved`: the
  transferred mixture, `transfer.read(spec)`, when final.mixture_from is
  set)."""
  runs = {"demix": found_mixture(inputs, moved)}
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


def found_mixture(
    inputs: common.Inputs, moved: results.MixtureOrigin | None
) -> dict[str, float]:
  """The "demix" run's source weights: this run's search, or the run that
  `final.mixture_from` names (`moved`)."""
  if moved is not None:
    return dict(moved.source_weights)
  return dict(inputs.results["search"].source_weights)


def _needs(spec: spec_lib.RunSpec) -> tuple[str, ...]:
  """A transferred mixture needs no search, nor components to score."""
  return ("base",) if spec.final.mixture_from else STAGE.requires


def _check(spec: spec_lib.RunSpec, workdir: str) -> None:
  """Preflight: the trained-proxy searches' mixtures exist or will; the
  transferred mixture is readable and fits this run, and a finished
  "demix" run in this workdir trained that same mixture."""
  _check_baselines(spec, workdir)
  moved = transfer.read(spec)
  if moved is None:
    return
  done = epath.Path(workdir) / NAME / "demix" / "done.json"
  if not done.exists():
    return
  try:
    trained = storage.read_json(done).get("weights", {})
  except (storage.CorruptFileError, AttributeError):
    return  # the run itself reports a damaged file when it reads it
  if trained != moved.source_weights:
    raise ConfigError(
        transfer.FIELD,
        f"{done} trained {trained}, not the mixture in {moved.path}"
        f" ({moved.source_weights})",
        f"use a new --workdir, or delete {done.parent} to retrain it",
    )


def _evaluator(spec: spec_lib.RunSpec, inputs: common.Inputs):
  """The components' evaluator, or a single-model one without them."""
  comps = inputs.get("components")
  if comps is None:
    return inputs.ws.engines.model_evaluator()
  return inputs.ws.engines.evaluator(
      inputs.results["base"].run_dir,
      comps.run_dirs(),
      spec.budgets.use_budget,
  )


def _check_baselines(spec: spec_lib.RunSpec, workdir: str) -> None:
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
  tokens = spec.final.tokens
  seeds = spec.final.seeds
  # Read (and checked) again here: preflight may have run on another
  # process, and the file may be on gs://.
  moved = transfer.read(spec)
  runs = mixtures(spec, inputs, moved)
  ev = None
  per_run = common.steps_of(spec, tokens)
  jobs = [(i, n, k) for i, n in enumerate(runs) for k in range(seeds)]
  bar = progress_lib.Progress(NAME, per_run * len(jobs), "steps")
  done: dict[tuple[str, int], results.FinalRun] = {}
  for j, (i, name, k) in enumerate(jobs):
    # Seed 0 keeps the one-seed layout (final/<name>), so one-seed
    # workdirs resume unchanged.
    run_dir = ws.workdir / "final" / (name if k == 0 else f"{name}-seed{k}")
    done_path = run_dir / "done.json"
    if done_path.exists():
      done[name, k] = common.read_result(results.FinalRun, done_path, ws)
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
      ev = _evaluator(spec, inputs)
    scores = ev.evaluate_params(r.params)
    done[name, k] = results.FinalRun(
        run_dir=str(run_dir),
        weights=runs[name],
        tokens=r.tokens,
        train_seconds=r.seconds,
        scores={t: float(v) for t, v in scores.items()},
    )
    common.write_result(done_path, done[name, k], ws)
  out = {n: _over_seeds([done[n, k] for k in range(seeds)]) for n in runs}
  what = f"{len(out)} runs" + (f" x {seeds} seeds" if seeds > 1 else "")
  bar.finish(f"{what} of {tokens:,} tokens")
  return results.FinalResult(
      runs=out,
      tokens=sum(r.tokens for r in done.values()),
      mixture_from=moved,
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
    optional=("baselines",),
    result=results.FinalResult,
    run=run,
    hashed=stage_lib.SCORING + ("search", "final"),
    check=_check,
    needs=_needs,
)
