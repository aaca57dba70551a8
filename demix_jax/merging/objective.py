"""Differentiable objectives of one mixture: alpha -> weighted bpb / loss.

Apart from the engine's batched scoring because a gradient search needs a
different program: one mixture at a time, only the rows the objective
weighs, and a compiled value-and-gradient that takes the components as
arguments (so they are never baked into the program as constants).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from demix_jax.evals import rows as rows_lib
from demix_jax.evals import scoring


class BoundObjective:
  """alpha -> scalar objective with its arrays bound as jit arguments.

  Calling it (or `.value_and_grad`) runs a compiled function that takes the
  stacked components and row batches as arguments, so they are never baked
  into a program as constants and the compiled value-and-gradient is reused
  across steps. It is also an ordinary JAX-differentiable function of alpha.
  """

  def __init__(self, fn, value_and_grad_fn, args):
    self._fn = fn
    self._vg = value_and_grad_fn
    self._args = args

  def __call__(self, alpha):
    return self._fn(alpha, *self._args)

  def value_and_grad(self, alpha):
    """(objective, d objective / d alpha) in one compiled call."""
    return self._vg(alpha, *self._args)


def target_weights(
    targets: Sequence[str] | Mapping[str, float] | None,
    available: Sequence[str],
    domain_metrics: Mapping[str, str],
) -> dict[str, float]:
  """{target: weight} of an objective, rejecting what cannot be minimised.

  Args:
    targets: names (equal weights 1/n), {name: weight}, or None for the
      mean of the `domain/<d>` targets in `available` (else "heldout/bpb").
    available: every target the evaluator reports.
    domain_metrics: {domain: metric}.

  Returns:
    The weights.

  Raises:
    ValueError: a higher-is-better target (accuracy is a step function of
      the NLLs, with no useful gradient).
  """
  if targets is None:
    doms = [t for t in available if t.startswith("domain/")]
    targets = doms or ["heldout/bpb"]
  if not isinstance(targets, Mapping):
    targets = {t: 1.0 / len(targets) for t in targets}
  for t in targets:
    if scoring.higher_is_better(t, domain_metrics):
      raise ValueError(
          f"objective target {t!r} is higher-is-better and "
          "not differentiable; use bpb or loss targets"
      )
  return dict(targets)


def subset_rows(
    suite: rows_lib.EvalSuite, w: np.ndarray, mesh: Mesh | None
) -> tuple[dict[str, jax.Array], np.ndarray]:
  """Row batches holding only rows with w != 0, and their weights.

  Rows are padded to a whole batch with masked copies of the first kept
  row (weight 0, target_mask 0), so they never count.
  """
  rows = np.flatnonzero(w)
  if rows.size == 0:
    raise ValueError("the objective has no rows with non-zero weight")
  bs = suite.batch_size
  pad = (-rows.size) % bs
  idx = np.concatenate([rows, np.full(pad, rows[0])])
  arrays = {}
  for k in ("tokens", "positions", "segment_ids", "target_mask"):
    a = getattr(suite, k)[idx]
    if k == "target_mask" and pad:
      a[rows.size :] = 0
    arrays[k] = a.reshape((-1, bs) + a.shape[1:])
  weights = np.concatenate([w[rows], np.zeros(pad)])
  if mesh is not None:
    arrays = jax.device_put(arrays, NamedSharding(mesh, P()))
  else:
    arrays = jax.device_put(arrays)
  return arrays, weights


def bind(
    rows_of_mixture: Callable[..., jax.Array],
    store: Any,
    suite: rows_lib.EvalSuite,
    targets: Mapping[str, float],
    domain_metrics: Mapping[str, str],
    mesh: Mesh | None,
) -> BoundObjective:
  """The compiled objective sum_t c_t * target_t(alpha).

  Args:
    rows_of_mixture: traceable (alpha, stacked, base, batches) -> [R] row
      NLLs of the merge of one mixture (the engine's).
    store: the ComponentStore (its stacked components and base).
    suite: the evaluation rows.
    targets: {target: weight} (see `target_weights`).
    domain_metrics: {domain: metric}.
    mesh: where the rows go (None = the default device).

  Returns:
    The BoundObjective.
  """
  w = sum(
      c * scoring.linear_weights(suite, t, domain_metrics)
      for t, c in targets.items()
  )
  # Only rows with a non-zero weight enter the objective (e.g. the gold
  # continuations of multiple-choice items, not the distractors), so the
  # forward and backward passes run on those rows alone.
  batches, w = subset_rows(suite, np.asarray(w), mesh)
  w_dev = jnp.asarray(w, jnp.float32)

  def objective(alpha, stacked, base, batches):
    return (
        rows_of_mixture(jnp.asarray(alpha, jnp.float32), stacked, base, batches)
        @ w_dev
    )

  return BoundObjective(
      jax.jit(objective),
      jax.jit(jax.value_and_grad(objective)),
      (store.stacked, store.base, batches),
  )
