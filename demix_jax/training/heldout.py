"""Held-out loss and bits per byte of one model during training.

Apart from the step loop because it is the one place where evaluation
batches, which come in any per-host size, meet the training mesh: a size
that the mesh's batch shards do not divide is rejected here with the config
field to change, rather than as a sharding error inside jit.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import jax
from jax.experimental import multihost_utils
import numpy as np

from demix_jax.training import sharding
from demix_jax.training import step as step_lib


def take(source: Any, n: int) -> list[Mapping[str, np.ndarray]]:
  """The first n batches of an iterable, or of what a callable returns.

  A callable gives a fresh iterator per evaluation, so every evaluation of
  a run scores the same batches and the curve is comparable over steps.
  """
  it = source() if callable(source) else iter(source)
  out = []
  for b in it:
    out.append(b)
    if len(out) >= n:
      break
  return out


def evaluate(
    eval_fn: Callable[[Any, Mapping[str, jax.Array]], Any],
    params: Any,
    eval_data: Mapping[str, Any] | None,
    n_batches: int,
    mesh: Any,
    rules: Any,
) -> dict[str, float]:
  """{`heldout/<source>/loss`, `heldout/<source>/bpb`} of `params`.

  Sums over a source's batches are divided once, so the loss is per counted
  token over the whole source (not a mean of batch means); bytes are summed
  over every process because each holds its own share of the batch. A
  source whose batches lack `num_bytes` gets its loss only.

  Args:
    eval_fn: jitted (params, global batch) -> (summed NLL, counted targets),
      i.e. `step.batch_loss` with the run's shardings.
    params: the model.
    eval_data: {source: iterable (or callable returning one) of host
      batches}.
    n_batches: batches per source.
    mesh: the training mesh.
    rules: its logical axis rules.

  Returns:
    The metrics (empty without eval data).
  """
  out = {}
  for src, data in (eval_data or {}).items():
    tot = cnt = 0.0
    nbytes, has_bytes = 0.0, True
    for hb in take(data, n_batches):
      ebs = np.shape(hb["tokens"])[0]
      if (ebs * jax.process_count()) % sharding.batch_shards(mesh, rules):
        raise ValueError(
            f"eval source {src!r}: batch of {ebs} per host does not divide "
            f"by the mesh's batch shards; change eval.batch_size"
        )
      gb = sharding.make_global_batch(
          {k: hb[k] for k in step_lib.BATCH_KEYS}, mesh, rules
      )
      s, c = jax.device_get(eval_fn(params, gb))
      tot, cnt = tot + float(s), cnt + float(c)
      if "num_bytes" in hb:
        nbytes += float(np.sum(hb["num_bytes"]))
      else:
        has_bytes = False
    if jax.process_count() > 1 and has_bytes:
      nbytes = float(
          np.sum(multihost_utils.process_allgather(np.asarray([nbytes])))
      )
    out[f"heldout/{src}/loss"] = tot / max(cnt, 1.0)
    if has_bytes and nbytes > 0:
      out[f"heldout/{src}/bpb"] = tot / (math.log(2.0) * nbytes)
  return out
