"""A data iterator's state in a checkpoint: JSON-safe, one per process.

Grain iterators give their state as a dict or as bytes; `encode` makes it
JSON (bytes as base64) for Orbax's JSON item, and `gather_strings` collects
every process's encoded state so process 0's write holds all of them.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jax
import numpy as np


def encode(state: Any) -> dict[str, Any]:
  """Makes an iterator state JSON-safe (bytes become base64)."""
  if isinstance(state, (bytes, bytearray)):
    return {"bytes_b64": base64.b64encode(bytes(state)).decode("ascii")}
  return {"json": json.loads(json.dumps(state))}


def decode(blob: dict[str, Any]) -> Any:
  if "bytes_b64" in blob:
    return base64.b64decode(blob["bytes_b64"])
  return blob["json"]


def gather_strings(s: str) -> list[str]:
  """Every process's string, in process order (a no-op on one process)."""
  if jax.process_count() == 1:
    return [s]
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  raw = np.frombuffer(s.encode("utf-8"), np.uint8)
  lens = multihost_utils.process_allgather(np.asarray([raw.size], np.int64))
  width = int(np.max(lens))
  padded = np.zeros((width,), np.uint8)
  padded[: raw.size] = raw
  alls = multihost_utils.process_allgather(padded)
  return [
      bytes(alls[i][: int(lens[i][0])]).decode("utf-8")
      for i in range(alls.shape[0])
  ]
