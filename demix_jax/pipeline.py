"""The DeMix pipeline: base -> components -> search -> final -> report.

`run(config, workdir, stages)` is shared by the CLI, tests and notebooks.
The pipeline alone orders the stages, checks their prerequisites, and saves
and loads their results: each stage's result is written (atomically) to
`workdir/<stage>/done.json` with the hash of the config fields that change
it (its record's `hashed`, `stages/stage.py`). A finished stage with the same hash is skipped, so a
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
from demix_jax.evals import sandbox as sandbox_lib
from demix_jax.evals import scoring
from demix_jax.stages import common
from demix_jax.stages import registry
from demix_jax.stages import results as results_lib
from demix_jax.stages import stage as stage_lib


class MissingInputError(RuntimeError):
  """A stage's inputs are missing; the message names the stage to run."""


class StaleStageError(ConfigError):
  """A stage's outputs were produced with a different config."""


class CorruptResultError(storage.CorruptFileError):
  """A done.json cannot be read as its stage's result; names the file."""


def load_result(
    spec: spec_lib.RunSpec, workdir: Any, name: str
) -> results_lib.Result | None:
  """Stage `name`'s saved result if finished for this config, else None."""
  stage = registry.get(name)
  path = epath.Path(workdir) / stage.name / "done.json"
  if not path.exists():
    return None
  try:
    done = json.loads(path.read_bytes().decode("utf-8"))
    if not isinstance(done, dict):
      raise ValueError("not a JSON object")
    saved_hash = done.pop("config_hash", None)
    done = results_lib.localize(done, workdir)
    result = stage.result.from_json(done, str(path))
  except (ValueError, results_lib.ResultError) as e:
    raise CorruptResultError(
        path,
        f"{type(e).__name__}: {e}",
        f"delete it to redo stage {stage.name!r}",
    ) from e
  want = stage.config_hash(spec)
  if want and saved_hash != want:
    raise StaleStageError(
        f"<workdir>/{stage.name}",
        f"{path} was produced with a different config (fields"
        f" {stage.hashed})",
        f"use a new --workdir, or delete {path.parent} to redo it",
    )
  return result


def save_result(
    spec: spec_lib.RunSpec, workdir: Any, name: str, result: results_lib.Result
) -> None:
  """Writes stage `name`'s result as its done.json, with its config hash."""
  stage = registry.get(name)
  done = results_lib.portable(result.to_json(), workdir)
  if stage.reused:
    done["config_hash"] = stage.config_hash(spec)
  if multihost.is_writer():
    storage.atomic_write_json(workdir / stage.name / "done.json", done)
  # Process 0 wrote it; later stages read it on every process.
  multihost.barrier(f"done_{stage.name}")


def preflight(spec: spec_lib.RunSpec, workdir: str) -> workspace_lib.Workspace:
  """Cheap checks that read files, before any training; the run's Workspace.

  Source files and fields are checked without reading them in full; then,
  when a stage of `spec.stages` reads data, the tokenizer and token counts
  are built (cached for the stages), so bad data fails here, not after the
  base model trained. The returned Workspace is the one the stages share.
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
  for stage in _ordered(spec):
    if stage.check is not None:
      # Each stage's own inputs, before any data is read or written.
      stage.check(spec, workdir)
  if any(s.reads_data for s in _ordered(spec)) and any(
      scoring.pass_k(m) is not None for m in spec.eval.domain_metrics.values()
  ):
    # Programs the model writes will run: the isolation tool must work.
    sandbox_lib.check_isolation(spec.eval.sandbox)
  ws = workspace_lib.Workspace(adapted(spec, workdir), workdir)
  ordered = _ordered(spec)
  pending = [
      s
      for s in ordered
      if s.prepares_data and load_result(ws.spec, workdir, s.name) is None
  ]
  if any(s.reads_data for s in ordered) and not pending:
    _build_data_caches(ws)
  return ws


def adapted(spec: spec_lib.RunSpec, workdir: str) -> spec_lib.RunSpec:
  """The spec after the `adapt` of each stage in the run or finished."""
  for s in registry.STAGES:
    if s.adapt is not None and (
        s.name in spec.stages
        or (epath.Path(workdir) / s.name / "done.json").exists()
    ):
      spec = s.adapt(spec, workdir)
  return spec


def _build_data_caches(ws: workspace_lib.Workspace) -> None:
  # The data caches under workdir/data (corpora, the tokenizer, token
  # counts) are shared files: process 0 builds them, then the others read
  # them. Building them finds bad data before any training.
  if multihost.is_writer():
    ws.data.preflight()
  multihost.barrier("data_caches")
  ws.data.preflight()
  ws.bounds.alpha_bounds()  # constraints feasible under the epoch caps


def save_config(ws: workspace_lib.Workspace) -> None:
  """Writes the config to workdir/config.json (process 0 only)."""
  if multihost.is_writer():
    storage.atomic_write_json(ws.workdir / "config.json", dict(ws.spec.config))


def _ordered(spec: spec_lib.RunSpec) -> list[stage_lib.Stage]:
  return [s for s in registry.STAGES if s.name in spec.stages]


def _missing(need: str, workdir: Any) -> MissingInputError:
  return MissingInputError(
      f"stage {need!r} has not finished in {workdir}: run it first"
      f" (--stages={need}) or run the whole pipeline"
  )


def _inputs(ws, stage: stage_lib.Stage, have: Mapping[str, Any]):
  """The stage's required results, then the optional ones that exist."""
  res = {}
  required = stage.required(ws.spec)
  for name in required + stage.optional:
    r = have.get(name) or load_result(ws.spec, ws.workdir, name)
    if r is None and name in required:
      raise _missing(name, ws.workdir)
    if r is not None:
      res[name] = r
  return common.Inputs(
      ws=ws, results=res, config_hash=stage.config_hash(ws.spec)
  )


def run(
    config: ml_collections.ConfigDict | spec_lib.RunSpec,
    workdir: str,
    stages: Sequence[str] | None = None,
    *,
    workspace: workspace_lib.Workspace | None = None,
) -> dict[str, results_lib.Result]:
  """Runs the requested stages in order.

  Args:
    config: the pipeline config, or a RunSpec already resolved from it.
    workdir: output directory (local or gs://).
    stages: subset of `stage.ORDER`, run in pipeline order (default: the
      config's).
    workspace: the run's Workspace from `preflight(spec, workdir)` when the
      caller ran it already (the CLI does, to report bad data first);
      otherwise preflight runs here.

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
  if workspace is not None and (
      workspace.spec.config is not spec.config
      or workspace.spec.stages != spec.stages
  ):
    raise ValueError(
        "workspace: built for another RunSpec; pass the one"
        " preflight(spec, workdir) returned for this spec, or none"
    )
  ws = workspace or preflight(spec, workdir)
  spec = ws.spec  # as the stages' `adapt` left it
  save_config(ws)
  ordered = _ordered(spec)
  # The first stage's inputs must exist (later ones are produced here).
  names = {s.name for s in ordered}
  for s in ordered:
    for need in s.required(spec):
      if need not in names and (load_result(spec, ws.workdir, need) is None):
        raise _missing(need, ws.workdir)
  out: dict[str, results_lib.Result] = {}
  for s in ordered:
    done = load_result(spec, ws.workdir, s.name) if s.reused else None
    if done is not None:
      logging.info("stage %s: complete, skipping", s.name)
      if jax.process_index() == 0:
        print(
            f"[{s.name}] complete, skipped ({ws.workdir / s.name / 'done.json'})"
        )
      out[s.name] = done
      continue
    logging.info("stage %s: starting", s.name)
    t0 = time.time()
    result = s.run(spec, _inputs(ws, s, out))
    result = dataclasses.replace(result, seconds=time.time() - t0)
    save_result(spec, ws.workdir, s.name, result)
    out[s.name] = result
    logging.info("stage %s: done in %.1f s", s.name, result.seconds)
    if s.prepares_data and any(
        t.reads_data for t in ordered[ordered.index(s) + 1 :]
    ):
      # The later stages read what it wrote: caches from the new data.
      ws.data.reset()
      _build_data_caches(ws)
  return out
