"""Atomic file writes, local and on object stores (gs://): one of each.

A reader must never see half a file: a killed or failed write leaves the
previous version. Locally that means a temporary file in the same directory,
flushed and fsynced, then `os.replace` over the target and an fsync of the
directory (so the rename itself survives a power cut). On object stores a
single whole-object write is already atomic. Callers decide which process
writes; nothing here looks at the process index.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

from etils import epath
import numpy as np

PathLike = str | os.PathLike | epath.Path


def _is_local(path: PathLike) -> bool:
  return "://" not in os.fspath(path)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
  """Replaces `path` with `data`, all or nothing."""
  if not _is_local(path):
    p = epath.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return
  path = os.fspath(path)
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  fd, tmp = tempfile.mkstemp(
      dir=parent, prefix="." + os.path.basename(path) + ".", suffix=".tmp"
  )
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  dir_fd = os.open(parent, os.O_RDONLY)
  try:
    os.fsync(dir_fd)
  finally:
    os.close(dir_fd)


def atomic_write_text(path: PathLike, text: str) -> None:
  atomic_write_bytes(path, text.encode())


def json_default(x: Any) -> Any:
  """JSON for numpy values; anything else becomes its str()."""
  if isinstance(x, (np.floating, np.integer, np.bool_)):
    return _finite(x.item())
  if isinstance(x, np.ndarray):
    return [
        json_default(v) if not isinstance(v, list) else v for v in x.tolist()
    ]
  return str(x)


def _finite(x: Any) -> Any:
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def _clean(obj: Any) -> Any:
  """Non-finite floats -> None (JSON has no NaN), recursively."""
  if isinstance(obj, dict):
    return {k: _clean(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_clean(v) for v in obj]
  if isinstance(obj, (np.floating, np.integer, np.bool_)):
    return _finite(obj.item())
  if isinstance(obj, np.ndarray):
    return _clean(obj.tolist())
  return _finite(obj)


def atomic_write_json(path: PathLike, obj: Any) -> None:
  """Writes `obj` as indented, key-sorted JSON, atomically."""
  text = json.dumps(_clean(obj), indent=1, sort_keys=True, default=json_default)
  atomic_write_text(path, text)


def read_json(path: PathLike) -> Any:
  return json.loads(epath.Path(path).read_text())
