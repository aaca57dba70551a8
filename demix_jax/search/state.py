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
Rewrites go through `demix_jax.storage`, so a kill leaves either the old or
the new file (locally a fsynced temporary file renamed over the old one; on
gs:// one whole-object write). Locally results.jsonl is appended to, and a
kill in the middle of an append leaves a partial last line, which
`read_results` drops (and truncates away) so the mixture is scored again.
Object stores cannot append, so there each append rewrites the whole file
atomically (see `append_results`). JSON has no NaN: a non-finite value in
state.json is written as null.
"""

import io
import json
import logging
import math
import os

from etils import epath
import numpy as np

from demix_jax import multihost
from demix_jax import storage

_LOG = logging.getLogger(__name__)

POOL = "pool.npy"
RESULTS = "results.jsonl"
STATE = "state.json"

PathLike = str | os.PathLike


def is_writer() -> bool:
  """True where search files are written (process 0, or a lone process)."""
  return multihost.is_writer()


def barrier(name: str) -> None:
  """Waits for every process (no-op in a single process)."""
  multihost.barrier(name)


def agree(x):
  """Process 0's value of a numpy pytree on every process (else identity).

  Host-side decisions (proposals, alpha*) feed collective evaluations, so
  every process must use the same ones, even if a surrogate library's
  floats differed between hosts.
  """
  return multihost.broadcast(x)


def write_bytes(path: PathLike, data: bytes) -> None:
  """Atomically replaces a search file (process 0 only)."""
  if is_writer():
    storage.atomic_write_bytes(path, data)


def write_json(path: PathLike, obj) -> None:
  """Atomically replaces a search JSON file (process 0 only)."""
  if is_writer():
    storage.atomic_write_json(path, obj)


def save_pool(workdir: PathLike, pool: np.ndarray) -> None:
  buf = io.BytesIO()
  np.save(buf, np.asarray(pool, np.float64))
  write_bytes(epath.Path(workdir) / POOL, buf.getvalue())


def load_pool(workdir: PathLike) -> np.ndarray | None:
  path = epath.Path(workdir) / POOL
  if not path.exists():
    return None
  try:
    return np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)
  except (ValueError, EOFError, OSError) as e:
    raise storage.CorruptFileError(path, f"{type(e).__name__}: {e}") from e


_FIX = "restore it, or delete the search state directory to search again"
_ROW_KEYS = {"id", "round", "alpha", "scores"}


def load_state(
    workdir: PathLike, required: tuple[str, ...] = ()
) -> dict | None:
  """state.json, or None; CorruptFileError if damaged or lacking `required`."""
  path = epath.Path(workdir) / STATE
  if not path.exists():
    return None
  st = storage.read_json(path)
  if not isinstance(st, dict) or any(k not in st for k in required):
    raise storage.CorruptFileError(path, f"needs the keys {required}", _FIX)
  return st


def check_results(workdir: PathLike, results: dict, pool: np.ndarray) -> None:
  """Saved rows must be rows of this pool: a foreign score is never reused."""
  for i, r in results.items():
    if not 0 <= i < len(pool) or not np.allclose(
        r["alpha"], pool[i], rtol=0, atol=1e-12
    ):
      raise storage.CorruptFileError(
          epath.Path(workdir) / RESULTS,
          f"proxy {i} is not row {i} of the pool in {POOL}",
          _FIX,
      )


def save_state(workdir: PathLike, state: dict) -> None:
  write_json(epath.Path(workdir) / STATE, state)


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
  if storage.is_local(path):
    with open(path, "a") as f:
      f.write(lines)
      f.flush()
      os.fsync(f.fileno())
    return
  # The rewrite never leaves a partial line, and read_results has already
  # truncated any older one away, so the old bytes end on a newline.
  old = path.read_bytes() if path.exists() else b""
  storage.atomic_write_bytes(path, old + lines.encode())


def _parse_row(line: bytes) -> dict:
  rec = json.loads(line)
  if not isinstance(rec, dict) or set(rec) != _ROW_KEYS:
    raise ValueError("not a result row {id, round, alpha, scores}")
  if not isinstance(rec["scores"], dict):
    raise ValueError("scores is not an object")
  return _restore(
      {
          "id": int(rec["id"]),
          "round": int(rec["round"]),
          "alpha": [float(a) for a in rec["alpha"]],
          "scores": rec["scores"],
      }
  )


def read_results(workdir: PathLike) -> list[dict]:
  """All complete result rows; a partial trailing line is truncated away.

  Only the last line can be partial (a kill during an append, which never
  writes its final newline). Any other line that is not a result row, or a
  second row for the same id, means the file was damaged or edited: that
  raises CorruptFileError naming the file and line rather than dropping the
  rows after it (which would be scored again) or reusing a wrong one.
  """
  path = epath.Path(workdir) / RESULTS
  if not path.exists():
    return []
  data = path.read_bytes()
  rows, good, seen = [], 0, set()
  *lines, tail = data.split(b"\n")
  if tail:
    _LOG.warning(
        "search state: dropping a partial last line of %s (the "
        "search was killed while writing it)",
        path,
    )
  for lineno, line in enumerate(lines, 1):
    try:
      rec = _parse_row(line)
    except (ValueError, TypeError, KeyError) as e:
      raise storage.CorruptFileError(
          path,
          f"line {lineno}: {type(e).__name__}: {e}",
          _FIX,
      ) from e
    if rec["id"] in seen:
      raise storage.CorruptFileError(
          path,
          f"line {lineno}: proxy {rec['id']} is recorded twice",
          _FIX,
      )
    seen.add(rec["id"])
    rows.append(rec)
    good += len(line) + 1
  if good < len(data) and is_writer():
    if storage.is_local(path):
      with open(path, "r+b") as f:
        f.truncate(good)
    else:
      storage.atomic_write_bytes(path, data[:good])
  return rows
