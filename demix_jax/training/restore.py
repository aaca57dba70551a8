"""Where a training run starts: its own checkpoint, another run's, or fresh.

The order (the trainer's docstring explains why): this run's own newest
checkpoint, then `resume_from` (both continue exactly: params, optimizer
and data-iterator state, step), then `init_from` (params only), then a fresh
initialisation from the seed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from absl import logging
import jax

from demix_jax import models
from demix_jax.training import checkpoint_reads
from demix_jax.training import checkpointing
from demix_jax.training import config as train_config
from demix_jax.training import step as step_lib


@dataclasses.dataclass
class Start:
  """The state a run starts its step loop from."""

  params: Any
  opt_state: Any
  step: int
  restored_from: str


def restore_full_state(
    train_cfg: train_config.TrainConfig,
    layout: step_lib.TrainLayout,
    ckpt: checkpointing.Checkpointer,
    workdir: str,
) -> tuple[checkpointing.Restored | None, str]:
  """This run's own newest checkpoint, else `resume_from`'s, else None.

  Both carry the optimizer and data-iterator state, so the run continues
  exactly; each checkpoint's structure is checked before its arrays are
  read, so a changed model config fails with the leaf named rather than
  deep inside Orbax. A run that has checkpoints resumes from one of them or
  stops with a CheckpointError (corrupt ones are skipped, transient errors
  retried; see checkpoint_reads): it never falls through to `resume_from`,
  `init_from` or a fresh start.
  """
  del workdir  # the Checkpointer knows its run directory
  if ckpt.all_steps():
    return ckpt.restore_latest(layout.params, layout.opt_state), "own"
  if not train_cfg.resume_from:
    return None, "fresh"
  src = train_cfg.resume_from
  checkpointing.find_step(src)  # names a run that has no checkpoints/
  r = checkpointing.restore_newest(src, layout.params, layout.opt_state)
  if r is None:
    raise checkpoint_reads.CheckpointError(
        f"resume_from={src} has no checkpoint"
    )
  return r, "resume_from"


def start_state(
    model_cfg: models.ModelConfig,
    train_cfg: train_config.TrainConfig,
    layout: step_lib.TrainLayout,
    ckpt: checkpointing.Checkpointer,
    workdir: str,
    train_iter: Any,
) -> Start:
  """Restores or initialises the state in the order of the module docstring.

  Own checkpoint first, so a killed run resumes instead of starting over
  from its `resume_from`/`init_from`; `init_from` takes params only, since
  a component starts its own schedule and data from the base.
  """
  init_opt = jax.jit(
      layout.tx.init,
      in_shardings=(layout.param_shardings,),
      out_shardings=layout.opt_shardings,
  )
  r, restored_from = restore_full_state(train_cfg, layout, ckpt, workdir)
  if r is not None:
    if r.iter_state is not None:
      train_iter.set_state(r.iter_state)
    logging.info("restored step %d from %s", r.step, restored_from)
    return Start(r.params, r.opt_state, r.step, restored_from)
  if train_cfg.init_from:
    params = checkpointing.load_params(
        train_cfg.init_from, train_cfg.init_from_tokens, target=layout.params
    )
    logging.info(
        "initialised params from %s (tokens=%s)",
        train_cfg.init_from,
        train_cfg.init_from_tokens,
    )
    return Start(params, init_opt(params), 0, "init_from")
  params = jax.jit(
      lambda k: models.init_params(model_cfg, k),
      out_shardings=layout.param_shardings,
  )(jax.random.key(train_cfg.seed))
  return Start(params, init_opt(params), 0, "fresh")
