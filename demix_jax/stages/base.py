"""Stage `base`: the shared base model, trained from scratch on the pool."""

from __future__ import annotations

from demix_jax import progress as progress_lib
from demix_jax import spec as spec_lib
from demix_jax.stages import common
from demix_jax.stages import results

NAME = "base"


def run(spec: spec_lib.RunSpec, inputs: common.Inputs) -> results.BaseResult:
  ws = inputs.ws
  weights = dict(spec.data.pretrain_mixture)
  tokens = spec.budgets.base_tokens
  run_dir = ws.workdir / "base" / "run"
  steps = common.steps_of(spec, tokens)
  bar = progress_lib.Progress(NAME, steps, "steps")
  r = ws.train(
      run_dir,
      weights,
      tokens,
      what="data.pretrain_mixture",
      config_hash=inputs.config_hash,
      progress=bar.update,
  )
  bar.finish(f"{r.steps} steps, {r.tokens:,} tokens")
  return results.BaseResult(
      run_dir=str(run_dir),
      tokens=r.tokens,
      steps=r.steps,
      train_seconds=r.seconds,
      eval=r.eval_metrics,
      mixture=weights,
  )
