"""Search state on disk: crash-safe files a killed search resumes from.

Layout of a search directory:
  pool.npy        the candidate pool [P, K] (written once).
  results.jsonl   one line per scored mixture, appended (and fsynced; on
                  gs:// rewritten) as soon as `evaluate_fn` returns its
                  chunk:
                  {"id": pool row, "round": r, "alpha": [...], "scores": {...}}
                  Non-finite scores are stored as null and read back as NaN.
  state.json      round number, the proposals of the round in progress, the
                  RNG state after drawing them, per-round summaries and the
                  search settings (checked on resume). Rewritten atomically.

Multi-host: the files are shared; only process 0 writes them (the other
processes compute the same results and keep them in memory), see
`is_writer`, `barrier` and `agree` below.

Paths go through etils.epath, so the directory may be local or on gs://.
Every rewrite goes to a temporary file that is renamed over the old one, so
a kill leaves either the old or the new file (locally the temporary file is
fsynced first; on gs:// the rename is a copy and a delete: the copy replaces
the object atomically, a kill before the delete only leaves a stray
temporary file). Locally results.jsonl is appended to, and a kill in the
middle of an append leaves a partial last line, which `read_results` drops
(and truncates away) so the mixture is scored again. Object stores cannot
append, so there each append rewrites the whole file atomically (see
`append_results`).
"""

import io
import json
import logging
import math
import os
import sys

from etils import epath
import numpy as np

_LOG = logging.getLogger(__name__)

POOL = "pool.npy"
RESULTS = "results.jsonl"
STATE = "state.json"

PathLike = str | os.PathLike


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


def _is_local(path: PathLike) -> bool:
  """True for a plain local path (not gs:// or another object store)."""
  # epath keeps the scheme in the string form of a URI path.
  return "://" not in os.fspath(path)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
  """Writes `data` to `path` via a temporary file and a rename."""
  if not is_writer():
    return
  path = epath.Path(path)
  tmp = path.parent / f"{path.name}.tmp.{os.getpid()}"
  if _is_local(path):
    # A local rename is only crash-safe once the data reached the disk.
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
  else:
    # An object is durable once its upload returns; nothing to fsync.
    tmp.write_bytes(data)
  tmp.replace(path)


def atomic_write_json(path: PathLike, obj) -> None:
  atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def save_pool(workdir: PathLike, pool: np.ndarray) -> None:
  buf = io.BytesIO()
  np.save(buf, np.asarray(pool, np.float64))
  atomic_write_bytes(epath.Path(workdir) / POOL, buf.getvalue())


def load_pool(workdir: PathLike) -> np.ndarray | None:
  path = epath.Path(workdir) / POOL
  if not path.exists():
    return None
  return np.load(io.BytesIO(path.read_bytes()))


def load_state(workdir: PathLike) -> dict | None:
  path = epath.Path(workdir) / STATE
  if not path.exists():
    return None
  return json.loads(path.read_text())


def save_state(workdir: PathLike, state: dict) -> None:
  atomic_write_json(epath.Path(workdir) / STATE, state)


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


def append_results(workdir: PathLike, rows: list[dict]) -> None:
  """Appends scored rows ({id, round, alpha, scores}), durably.

  Locally: an append and an fsync. On an object store (gs://), which cannot
  append, the whole file is rewritten atomically instead. We keep the one
  results.jsonl rather than one object per chunk so both backends share a
  single layout and reader; the file holds a few hundred short lines at
  most, so rewriting it per chunk costs little next to scoring the chunk.

  Args:
    workdir: the search directory.
    rows: the rows of one evaluated chunk.
  """
  if not is_writer():
    return
  lines = "".join(json.dumps(_record(r), sort_keys=True) + "\n" for r in rows)
  path = epath.Path(workdir) / RESULTS
  if _is_local(path):
    with open(path, "a") as f:
      f.write(lines)
      f.flush()
      os.fsync(f.fileno())
    return
  # The rewrite never leaves a partial line, and read_results has already
  # truncated any older one away, so the old bytes end on a newline.
  old = path.read_bytes() if path.exists() else b""
  atomic_write_bytes(path, old + lines.encode())


def read_results(workdir: PathLike) -> list[dict]:
  """All complete result rows; a partial trailing line is truncated away."""
  path = epath.Path(workdir) / RESULTS
  if not path.exists():
    return []
  data = path.read_bytes()
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
    if _is_local(path):
      with open(path, "r+b") as f:
        f.truncate(good)
    else:
      atomic_write_bytes(path, data[:good])
  return rows
