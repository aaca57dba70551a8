"""The DeMix pipeline: base -> components -> search -> final -> report.

`run(config, workdir, stages)` is shared by the CLI, tests and notebooks.
The pipeline alone orders the stages, checks their prerequisites, and saves
and loads their results: each stage's result is written (atomically) to
`workdir/<stage>/done.json` with the hash of the config fields that change
it (`RESULT_FIELDS`). A finished stage with the same hash is skipped, so a
killed pipeline resumes where it stopped (inside a stage, training runs
resume from their own Orbax checkpoints and the search from its state
files). A finished stage with a different hash is refused rather than
silently reused or overwritten: results in a workdir belong to one config.
Fields that do not change a result (chunk sizes, logging and checkpoint
cadence, the mesh) are not hashed, so changing them resumes. A training run
that was stopped before it finished is checked the same way: its newest
checkpoint records the hash, and another one refuses to continue it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Mapping, Sequence

from absl import logging
from etils import epath
import jax
import ml_collections

from demix_jax import guards
from demix_jax import multihost
from demix_jax import spec as spec_lib
from demix_jax import storage
from demix_jax import workspace as workspace_lib
from demix_jax.config_lib import ConfigError
from demix_jax.stages import MODULES
from demix_jax.stages import common
from demix_jax.stages import results as results_lib
from demix_jax.training import init_from as init_from_lib

STAGES = spec_lib.STAGES
# A stage needs the results of these stages...
REQUIRES = {
    "base": (),
    "components": ("base",),
    "search": ("base", "components"),
    "final": ("base", "components", "search"),
    "validate": ("base", "components"),
    "report": ("search",),
}
# ...and reads these when they are finished.
OPTIONAL = {
    "validate": ("final",),
    "report": ("base", "components", "final", "validate"),
}

# The config fields each stage's result depends on (dotted prefixes).
# Left out on purpose: train.log_every_steps, train.eval_every_steps,
# train.checkpoint_every_steps, train.keep_last, train.peak_flops,
# merge.chunk_size, mesh.*, report.*, stages: they change speed, logging or
# layout, never a result (the mesh only the order of float sums, see
# tests/training/test_mesh_equivalence.py). data.worker_count is hashed:
# Grain's worker processes each read a slice of the documents, so the
# stream differs from the in-process one (tests/data/test_workers.py).
_TRAINING = (
    "seed",
    "model",
    "optim",
    "data.sources",
    "data.candidates",
    "data.general",
    "data.beta",
    "data.seq_len",
    "data.pretrain_mixture",
    "data.max_epochs",
    "data.on_overrun",
    "data.normalize_weights",
    "data.shuffle_seed",
    "data.worker_count",
    "data.tokenizer",
    "data.offline_max_docs",
    "train.global_batch_size",
    "train.grad_accum_steps",
    "train.eval_batches",
    "base.tokens",
    "base.init_from",
)
_COMPONENTS = _TRAINING + (
    "components.tokens",
    "components.budgets",
    "components.optim",
)
_SCORING = _COMPONENTS + (
    "components.use_budget",
    "eval",
    "merge.method",
    "merge.density",
    "merge.gamma",
    "merge.epsilon",
    "merge.lambda_",
    "merge.rescale",
)
RESULT_FIELDS = {
    "base": _TRAINING,
    "components": _COMPONENTS,
    # The final run's token count sets the epoch caps on alpha.
    "search": _SCORING + ("search", "final.tokens"),
    "final": _SCORING + ("search", "final"),
    "validate": _SCORING + ("search", "final.tokens", "validate"),
}


class MissingInputError(RuntimeError):
  """A stage's inputs are missing; the message names the stage to run."""


class StaleStageError(ConfigError):
  """A stage's outputs were produced with a different config."""


class CorruptResultError(storage.CorruptFileError):
  """A done.json cannot be read as its stage's result; names the file."""


def stage_hash(spec: spec_lib.RunSpec, stage: str) -> str:
  return (
      spec.fields_hash(RESULT_FIELDS[stage]) if stage in RESULT_FIELDS else ""
  )


def load_result(
    spec: spec_lib.RunSpec, workdir: Any, stage: str
) -> results_lib.Result | None:
  """The stage's saved result if finished for this config, else None."""
  path = epath.Path(workdir) / stage / "done.json"
  if not path.exists():
    return None
  try:
    done = json.loads(path.read_bytes().decode("utf-8"))
    if not isinstance(done, dict):
      raise ValueError("not a JSON object")
    saved_hash = done.pop("config_hash", None)
    result = results_lib.TYPES[stage].from_json(done, str(path))
  except (ValueError, results_lib.ResultError) as e:
    raise CorruptResultError(
        path, f"{type(e).__name__}: {e}", f"delete it to redo stage {stage!r}"
    ) from e
  want = stage_hash(spec, stage)
  if want and saved_hash != want:
    raise StaleStageError(
        f"<workdir>/{stage}",
        f"{path} was produced with a different config (fields"
        f" {RESULT_FIELDS[stage]})",
        f"use a new --workdir, or delete {path.parent} to redo it",
    )
  return result


def save_result(
    spec: spec_lib.RunSpec, workdir: Any, stage: str, result: results_lib.Result
) -> None:
  done = result.to_json()
  if stage in RESULT_FIELDS:
    done["config_hash"] = stage_hash(spec, stage)
  if multihost.is_writer():
    storage.atomic_write_json(workdir / stage / "done.json", done)
  # Process 0 wrote it; later stages read it on every process.
  multihost.barrier(f"done_{stage}")


def preflight(spec: spec_lib.RunSpec, workdir: str) -> workspace_lib.Workspace:
  """Cheap checks that read files, before any training.

  Source files and fields are checked without reading them in full; then
  the tokenizer and token counts are built (cached for the stages), so bad
  data fails here, not after the base model trained.
  """
  from demix_jax.data import sources as sources_lib  # pylint: disable=g-import-not-at-top  # cycle-free but heavy

  try:
    with guards.readable(spec.data.sources):
      sources_lib.validate_sources(spec.data.sources)
  except ValueError as e:
    if isinstance(e, ConfigError):
      raise
    raise ConfigError(
        spec_lib.library_error_field(e, "data.sources"),
        getattr(e, "problem", None) or str(e),
        getattr(e, "fix", None) or "check the source's paths and fields",
    ) from e
  if (
      "base" in spec.stages
      and not epath.Path(f"{workdir}/base/done.json").exists()
  ):
    init_from_lib.check(spec.budgets.base_init_from, spec.model)
  return workspace_lib.Workspace(spec, workdir)


def save_config(spec: spec_lib.RunSpec, workdir: str) -> None:
  """Writes the config to workdir/config.json (process 0 only)."""
  if multihost.is_writer():
    path = workspace_lib.Workspace(spec, workdir).workdir / "config.json"
    storage.atomic_write_json(path, dict(spec.config))


def _inputs(ws, spec, stage, have: Mapping[str, results_lib.Result]):
  res = {}
  for need in REQUIRES[stage]:
    r = have.get(need) or load_result(spec, ws.workdir, need)
    if r is None:
      raise MissingInputError(
          f"stage {need!r} has not finished in {ws.workdir}: run it first"
          f" (--stages={need}) or run the whole pipeline"
      )
    res[need] = r
  for opt in OPTIONAL.get(stage, ()):
    r = have.get(opt) or load_result(spec, ws.workdir, opt)
    if r is not None:
      res[opt] = r
  if stage == "report":  # the summary's cost table lists search first
    res = {"search": res["search"], **res}
  return common.Inputs(ws=ws, results=res, config_hash=stage_hash(spec, stage))


def run(
    config: ml_collections.ConfigDict | spec_lib.RunSpec,
    workdir: str,
    stages: Sequence[str] | None = None,
) -> dict[str, results_lib.Result]:
  """Runs the requested stages in order.

  Args:
    config: the pipeline config, or a RunSpec already resolved from it.
    workdir: output directory (local or gs://).
    stages: subset of STAGES, run in pipeline order (default: the config's).

  Returns:
    {stage: its result} for the stages run or skipped.
  """
  if isinstance(config, spec_lib.RunSpec):
    spec = config
    if stages is not None:
      spec = dataclasses.replace(spec, stages=tuple(stages))
  else:
    spec = spec_lib.resolve(
        config,
        num_devices=jax.device_count(),
        stages=tuple(stages) if stages else None,
    )
  ws = preflight(spec, workdir)
  save_config(spec, workdir)
  ordered = [s for s in STAGES if s in spec.stages]
  if set(ordered) - {"report"}:
    # The data caches under workdir/data (corpora, the tokenizer, token
    # counts) are shared files: process 0 builds them, then the others read
    # them. Building them here also finds bad data before any training.
    if multihost.is_writer():
      ws.preflight()
    multihost.barrier("data_caches")
    ws.preflight()
  # The first stage's inputs must exist (later ones are produced here).
  for s in ordered:
    for need in REQUIRES[s]:
      if need not in ordered and load_result(spec, ws.workdir, need) is None:
        raise MissingInputError(
            f"stage {need!r} has not finished in {ws.workdir}: run it first"
            f" (--stages={need}) or run the whole pipeline"
        )
  out: dict[str, results_lib.Result] = {}
  for s in ordered:
    done = load_result(spec, ws.workdir, s) if s != "report" else None
    if done is not None:
      logging.info("stage %s: complete, skipping", s)
      if jax.process_index() == 0:
        print(f"[{s}] complete, skipped ({ws.workdir / s / 'done.json'})")
      out[s] = done
      continue
    logging.info("stage %s: starting", s)
    t0 = time.time()
    result = MODULES[s].run(spec, _inputs(ws, spec, s, out))
    result = dataclasses.replace(result, seconds=time.time() - t0)
    save_result(spec, ws.workdir, s, result)
    out[s] = result
    logging.info("stage %s: done in %.1f s", s, result.seconds)
  return out
