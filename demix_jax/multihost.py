"""Multi-host helpers: who writes, barriers, agreeing on host-side decisions.

On a pod slice every host runs the same program under `jax.distributed`.
The rules the pipeline follows:

* shared files (config.json, done.json, search state, the report) are
  written by process 0 only (`is_writer`), and every process reads them
  only after a barrier (`barrier`) that follows the write;
* host-side decisions that feed collective computations (which mixtures to
  score next, the chosen mixture) are made on process 0 and broadcast
  (`broadcast`), so a platform-dependent float difference in a host library
  (LightGBM, numpy BLAS) can never make hosts diverge and deadlock;
* device results that span hosts are gathered before they reach numpy
  (`to_numpy`).

Every helper is a cheap no-op in a single process, so library code calls
them unconditionally. In a single process nothing here imports
`jax.experimental.multihost_utils`.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np


def is_writer() -> bool:
  """True on the process that writes shared files (process 0)."""
  return jax.process_index() == 0


def initialize() -> None:
  """`jax.distributed.initialize()`, with local-cluster settings from env.

  On Cloud TPU VMs JAX finds the coordinator, process count and process id
  by itself. Elsewhere (several local processes in tests, or a cluster JAX
  does not detect) it reads JAX_COORDINATOR_ADDRESS itself, but the
  process count and id only as arguments: this passes JAX_NUM_PROCESSES and
  JAX_PROCESS_ID when they are set.
  """
  kwargs: dict[str, Any] = {}
  if os.environ.get("JAX_NUM_PROCESSES"):
    kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
  if os.environ.get("JAX_PROCESS_ID"):
    kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
  jax.distributed.initialize(**kwargs)


def barrier(name: str) -> None:
  """Blocks until every process reaches the barrier `name` (no-op alone).

  Args:
    name: the same string on every process (it names the barrier in
      timeouts and must not be reused concurrently).
  """
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    multihost_utils.sync_global_devices(name)


def broadcast(x: Any) -> Any:
  """Process 0's value of a numpy pytree on every process (identity alone).

  The values travel as raw bytes, so float64 and int64 arrays arrive
  bit-exact (a plain device broadcast would cast them to 32 bits unless
  jax_enable_x64 is on).

  Args:
    x: a pytree of numpy arrays (or scalars) with the same structure, shapes
      and dtypes on every process.

  Returns:
    Process 0's values, as numpy arrays.
  """
  if jax.process_count() == 1:
    return x
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  leaves, treedef = jax.tree.flatten(x)
  arrays = [np.asarray(v) for v in leaves]
  raw = [
      np.frombuffer(np.ascontiguousarray(a).tobytes(), np.uint8) for a in arrays
  ]
  got = multihost_utils.broadcast_one_to_all(raw)
  out = [
      np.frombuffer(np.asarray(g, np.uint8).tobytes(), a.dtype).reshape(a.shape)
      for g, a in zip(got, arrays)
  ]
  return jax.tree.unflatten(treedef, out)


def to_numpy(x: jax.Array | np.ndarray) -> np.ndarray:
  """A global array's full value on this host, gathering across hosts.

  `np.asarray` refuses arrays whose shards live on other processes (e.g.
  scores sharded over a `mixtures` axis that spans hosts); this gathers
  them first. Every process must call it for such arrays (a collective).

  Args:
    x: a jax.Array (any sharding) or a numpy array.

  Returns:
    The full numpy value.
  """
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)
