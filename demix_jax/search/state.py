"""Search state on disk: crash-safe files a killed search resumes from.

Layout of a search directory:
  pool.npy        the candidate pool [P, K] (written once).
  results.jsonl   one line per scored mixture, appended (and fsynced) as
                  soon as `evaluate_fn` returns its chunk:
                  {"id": pool row, "round": r, "alpha": [...], "scores": {...}}
                  Non-finite scores are stored as null and read back as NaN.
  state.json      round number, the proposals of the round in progress, the
                  RNG state after drawing them, per-round summaries and the
                  search settings (checked on resume). Rewritten atomically.

Multi-host: the files are shared; only process 0 writes them (the other
processes compute the same results and keep them in memory), see
`is_writer`, `barrier` and `agree` below.

Every rewrite goes to a temporary file that is fsynced and renamed over the
old one, so a kill leaves either the old or the new file. A kill in the
middle of an append leaves a partial last line, which `read_results` drops
(and truncates away) so the mixture is scored again.
"""

import io
import json
import logging
import math
import os
import sys

import numpy as np

_LOG = logging.getLogger(__name__)

POOL = "pool.npy"
RESULTS = "results.jsonl"
STATE = "state.json"


def _multihost():
  """demix_jax.multihost when JAX runs several processes, else None."""
  # The search itself is numpy-only: JAX is consulted only if loaded.
  jax = sys.modules.get("jax")
  if jax is None or jax.process_count() == 1:
    return None
  from demix_jax import multihost  # pylint: disable=g-import-not-at-top
  return multihost


def is_writer() -> bool:
  """True where search files are written (process 0, or a lone process)."""
  mh = _multihost()
  return mh is None or mh.is_writer()


def barrier(name: str) -> None:
  """Waits for every process (no-op in a single process)."""
  mh = _multihost()
  if mh is not None:
    mh.barrier(name)


def agree(x):
  """Process 0's value of a numpy pytree on every process (else identity).

  Host-side decisions (proposals, alpha*) feed collective evaluations, so
  every process must use the same ones, even if a surrogate library's
  floats differed between hosts.
  """
  mh = _multihost()
  return x if mh is None else mh.broadcast(x)


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` via a fsynced temporary file and a rename."""
  if not is_writer():
    return
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def atomic_write_json(path: str, obj) -> None:
  atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def save_pool(workdir: str, pool: np.ndarray) -> None:
  buf = io.BytesIO()
  np.save(buf, np.asarray(pool, np.float64))
  atomic_write_bytes(os.path.join(workdir, POOL), buf.getvalue())


def load_pool(workdir: str) -> np.ndarray | None:
  path = os.path.join(workdir, POOL)
  return np.load(path) if os.path.exists(path) else None


def load_state(workdir: str) -> dict | None:
  path = os.path.join(workdir, STATE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def save_state(workdir: str, state: dict) -> None:
  atomic_write_json(os.path.join(workdir, STATE), state)


def _clean(v: float):
  v = float(v)
  return v if math.isfinite(v) else None


def _record(r: dict) -> dict:
  return {
      "id": int(r["id"]),
      "round": int(r["round"]),
      "alpha": [float(a) for a in r["alpha"]],
      "scores": {k: _clean(v) for k, v in r["scores"].items()},
  }


def _restore(rec: dict) -> dict:
  rec["scores"] = {
      k: math.nan if v is None else float(v) for k, v in rec["scores"].items()
  }
  return rec


def read_results_row(row: dict) -> dict:
  """A row exactly as `read_results` would return it after a restart."""
  return _restore(_record(row))


def append_results(workdir: str, rows: list[dict]) -> None:
  """Appends scored rows ({id, round, alpha, scores}) and fsyncs."""
  if not is_writer():
    return
  lines = [json.dumps(_record(r), sort_keys=True) + "\n" for r in rows]
  with open(os.path.join(workdir, RESULTS), "a") as f:
    f.write("".join(lines))
    f.flush()
    os.fsync(f.fileno())


def read_results(workdir: str) -> list[dict]:
  """All complete result rows; a partial trailing line is truncated away."""
  path = os.path.join(workdir, RESULTS)
  if not os.path.exists(path):
    return []
  with open(path, "rb") as f:
    data = f.read()
  rows, good = [], 0
  for line in data.splitlines(keepends=True):
    try:
      if not line.endswith(b"\n"):
        raise ValueError("no newline")
      rec = json.loads(line)
    except ValueError:
      _LOG.warning(
          "search state: dropping a partial last line of %s (the "
          "search was killed while writing it)",
          path,
      )
      break
    rows.append(_restore(rec))
    good += len(line)
  if good < len(data) and is_writer():
    with open(path, "r+b") as f:
      f.truncate(good)
  return rows
