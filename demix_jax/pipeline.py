"""The DeMix pipeline: base -> components -> search -> final -> report.

`run(config, workdir, stages)` is shared by the CLI, tests and notebooks.
Each stage writes under `workdir/<stage>/` and finishes by writing
`workdir/<stage>/done.json` (atomically) with its outputs, cost and the hash
of the config sections it depends on. A stage whose `done.json` exists with
the same hash is skipped, so a killed pipeline resumes where it stopped
(inside a stage, training runs resume from their own Orbax checkpoints and
the search from its state files). A `done.json` with a different hash is
refused with an error rather than silently reused or overwritten: results in
a workdir always belong to one config.
"""

from __future__ import annotations

import json
import time
from typing import Any, Sequence

from absl import logging
from etils import epath
import jax
import ml_collections

from demix_jax import config_lib
from demix_jax import context as context_lib
from demix_jax import multihost

STAGES = ("base", "components", "search", "final", "validate", "report")
# A stage needs the outputs of these stages.
REQUIRES = {
    "base": (),
    "components": ("base",),
    "search": ("components",),
    "final": ("base", "search"),
    "validate": ("base", "components"),
    "report": ("search",),
}


class MissingInputError(RuntimeError):
  """A stage's inputs are missing; the message names the stage to run."""


class StaleStageError(config_lib.ConfigError):
  """A stage's outputs were produced with a different config."""


def check_stages(stages: Sequence[str]) -> None:
  for s in stages:
    if s not in STAGES:
      raise config_lib.ConfigError(
          "stages", f"unknown stage {s!r}", f"use names from {STAGES}"
      )


def validate_inputs(config: ml_collections.ConfigDict) -> None:
  """Input checks that need more than the config (files, sources, weights)."""
  context_lib.RunContext(config, "").validate_inputs()


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes the resolved config to workdir/config.json (process 0 only)."""
  context_lib.write_json(
      epath.Path(workdir) / "config.json", config_lib.to_dict(config)
  )


def stage_done(ctx: context_lib.RunContext, stage: str) -> dict | None:
  """The stage's done.json if complete for this config, else None."""
  path = ctx.workdir / stage / "done.json"
  if not path.exists():
    return None
  done = json.loads(path.read_text())
  if stage in context_lib.STAGE_SECTIONS:
    want = context_lib.section_hash(ctx.config, stage)
    if done.get("config_hash") != want:
      raise StaleStageError(
          f"<workdir>/{stage}",
          f"{path} was produced with a different config (sections "
          f"{context_lib.STAGE_SECTIONS[stage]})",
          f"use a new --workdir, or delete {ctx.workdir / stage} to redo it",
      )
  return done


def mark_done(
    ctx: context_lib.RunContext, stage: str, outputs: dict[str, Any]
) -> dict[str, Any]:
  done = dict(outputs)
  if stage in context_lib.STAGE_SECTIONS:
    done["config_hash"] = context_lib.section_hash(ctx.config, stage)
  context_lib.write_json(ctx.workdir / stage / "done.json", done)
  # Process 0 wrote it; later stages read it on every process.
  multihost.barrier(f"done_{stage}")
  return done


def require(ctx: context_lib.RunContext, stage: str) -> dict[str, Any]:
  done = stage_done(ctx, stage)
  if done is None:
    raise MissingInputError(
        f"stage {stage!r} has not finished in {ctx.workdir}: run it first "
        f"(--stages={stage}) or run the whole pipeline"
    )
  return done


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    stages: Sequence[str] | None = None,
) -> dict[str, Any]:
  """Runs the requested stages in order and returns a short summary.

  Args:
    config: the pipeline config (validated by the caller or here).
    workdir: output directory (local or gs://).
    stages: subset of STAGES, run in pipeline order (default config.stages).

  Returns:
    {stage: its done.json} for the stages run or skipped.
  """
  # Stage bodies live in their own modules; imported here so `validate`-only
  # calls stay light.
  from demix_jax import stages as stages_lib  # pylint: disable=g-import-not-at-top

  stages = tuple(stages or config.stages)
  check_stages(stages)
  config_lib.validate(config, num_devices=jax.device_count())
  ctx = context_lib.RunContext(config, workdir)
  ctx.validate_inputs()
  save_config(config, workdir)
  ordered = [s for s in STAGES if s in stages]
  if jax.process_count() > 1 and set(ordered) - {"report"}:
    # The data caches under workdir/data (corpora builds, the tokenizer,
    # token counts) are shared files: process 0 builds them, then the
    # others read them.
    if multihost.is_writer():
      _ = ctx.token_counts
    multihost.barrier("data_caches")
  # Check inputs of the first stage up front (later ones are produced here).
  for s in ordered:
    for need in REQUIRES[s]:
      if need not in ordered:
        require(ctx, need)
  summary = {}
  for s in ordered:
    done = stage_done(ctx, s) if s != "report" else None
    if done is not None:
      logging.info(
          "stage %s: complete, skipping (%s)", s, ctx.workdir / s / "done.json"
      )
      summary[s] = done
      continue
    logging.info("stage %s: starting", s)
    t0 = time.time()
    outputs = getattr(stages_lib, f"run_{s}")(ctx)
    outputs.setdefault("seconds", time.time() - t0)
    summary[s] = mark_done(ctx, s, outputs)
    logging.info("stage %s: done in %.1f s", s, outputs["seconds"])
  return summary
