"""Non-finite steps: counted on device every step, checked at every host look.

The train step leaves params and optimizer state unchanged when the loss,
gradient norm or update is not finite (`step.make_train_step`, metric
`ok`). On accelerators the host does not read every step's metrics (that
would stall dispatch), so a masked step between two looks would pass
unnoticed and training would go on. `track` therefore carries a small
replicated record from step to step on device (`HEALTH_KEYS`: the step
count, how many steps were non-finite, the first and the last of them);
the trainer reads it, four int32 scalars, whenever it syncs anyway (a log
step, a step callback, a held-out evaluation, before every checkpoint, at
the end) and `check` stops the run naming the steps. Nothing is saved after
a non-finite step, so the newest checkpoint is the last good state, and a
rerun restarts there and replays the same batches.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

HEALTH_KEYS = ("step", "nonfinite", "first", "last")


class TrainingDivergedError(RuntimeError):
  """The loss, gradient or update became NaN/Inf."""


def initial(step: int) -> dict[str, jax.Array]:
  """The record at the start of a run that resumes after `step`."""
  return {
      "step": jnp.int32(step),
      "nonfinite": jnp.int32(0),
      "first": jnp.int32(0),
      "last": jnp.int32(0),
  }


def abstract() -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of the record (for lowering the step on abstract values)."""
  return {k: jax.ShapeDtypeStruct((), jnp.int32) for k in HEALTH_KEYS}


def track(step_fn: Callable) -> Callable:
  """(params, opt, batch) -> (params, opt, m) becomes
  (params, opt, batch, health) -> (params, opt, m, health)."""

  def tracked(params, opt_state, batch, health):
    params, opt_state, metrics = step_fn(params, opt_state, batch)
    step = health["step"] + 1
    bad = jnp.logical_not(metrics["ok"])
    n = health["nonfinite"]
    return (
        params,
        opt_state,
        metrics,
        {
            "step": step,
            "nonfinite": n + bad.astype(jnp.int32),
            "first": jnp.where(bad & (n == 0), step, health["first"]),
            "last": jnp.where(bad, step, health["last"]),
        },
    )

  return tracked


def check(
    health: Mapping[str, Any],
    *,
    step: int,
    since: int,
    last_good: int,
    checkpoints: str,
    metrics: Mapping[str, Any] | None = None,
) -> None:
  """Raises TrainingDivergedError if any step so far was non-finite.

  Args:
    health: the record, on host (`jax.device_get`).
    step: the step the host is looking at now.
    since: the step of the previous look (nothing was read in between).
    last_good: the newest checkpoint's step.
    checkpoints: the checkpoint folder (for the message).
    metrics: this step's host metrics, quoted when this step is non-finite.
  """
  n = int(np.asarray(health["nonfinite"]))
  if n == 0:
    return
  first, last = int(health["first"]), int(health["last"])
  where = f"step {first}" if first == last else f"steps {first}-{last}"
  now = ""
  if metrics is not None and not bool(metrics["ok"]):
    now = (
        f" (step {step}: loss={float(metrics['loss'])}, "
        f"grad_norm={float(metrics['grad_norm'])})"
    )
  raise TrainingDivergedError(
      f"{where}: non-finite loss/gradients in {n} step"
      f"{'s' if n > 1 else ''} between steps {since + 1} and {step}{now}; "
      f"those steps were not applied and the run stopped at step {step}, "
      f"the host's first look since step {since}. Nothing is saved after a "
      f"non-finite step: the last good checkpoint is step {last_good} in "
      f"{checkpoints}, and a rerun restarts there and replays the same "
      "batches. Lower optim.peak_lr or check the data"
  )
