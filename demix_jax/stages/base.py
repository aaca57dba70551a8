"""Stage `base`: the shared base model every component continues from.

From scratch on `data.pretrain_mixture` by default. With `base.init_from`
the base starts from a checkpoint: a Hugging Face Qwen3 directory (imported
once into `base/imported/` as an ordinary run, after its config and
tokenizer are checked against the model) or a demix_jax run directory; with
`base.tokens = 0` that checkpoint is the base as is, as in the paper, where
the base is a released Qwen3 model.
"""

from __future__ import annotations

from etils import epath

from demix_jax import multihost
from demix_jax import progress as progress_lib
from demix_jax import spec as spec_lib
from demix_jax.config_lib import ConfigError
from demix_jax.interop import hf as hf_lib
from demix_jax.interop import hf_config
from demix_jax.stages import common
from demix_jax.stages import results
from demix_jax.stages import stage as stage_lib
from demix_jax.training import init_from as init_from_lib

NAME = "base"


def _start_dir(spec: spec_lib.RunSpec, ws) -> str:
  """The run directory the base starts from ("" = from scratch)."""
  src = spec.budgets.base_init_from
  if not src or not (epath.Path(src) / "config.json").exists():
    return src
  # A Hugging Face directory: refuse a config or vocabulary that does not
  # match the model before anything trains, then import it once.
  try:
    hf_config.check_config(src, spec.model)
    hf_config.check_vocab(src, spec.model, ws.data.vocab)
  except hf_config.HFCheckpointError as e:
    raise ConfigError(
        "base.init_from",
        str(e),
        "match model.* and data.tokenizer.path to the checkpoint",
    ) from e
  run_dir = ws.workdir / "base" / "imported"
  if multihost.is_writer() and not (run_dir / "checkpoints").exists():
    hf_lib.import_as_run(src, run_dir, spec.model)
  multihost.barrier("base_import")
  return str(run_dir)


def run(spec: spec_lib.RunSpec, inputs: common.Inputs) -> results.BaseResult:
  ws = inputs.ws
  weights = dict(spec.data.pretrain_mixture)
  tokens = spec.budgets.base_tokens
  start = _start_dir(spec, ws)
  if start and tokens == 0:
    return results.BaseResult(
        run_dir=start, steps=0, train_seconds=0.0, mixture={}, tokens=0
    )
  run_dir = ws.workdir / "base" / "run"
  bar = progress_lib.Progress(NAME, common.steps_of(spec, tokens), "steps")
  r = ws.recipe.train(
      run_dir,
      weights,
      tokens,
      what="data.pretrain_mixture",
      init_from=start,
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


def check(spec: spec_lib.RunSpec, workdir: str) -> None:
  """base.init_from is readable and fits the model, before any data work.

  Skipped once the base has finished (its result is reused then).
  """
  if not (epath.Path(workdir) / NAME / "done.json").exists():
    init_from_lib.check(spec.budgets.base_init_from, spec.model)


STAGE = stage_lib.Stage(
    name=NAME,
    requires=(),
    result=results.BaseResult,
    run=run,
    hashed=stage_lib.TRAINING,
    check=check,
)
