"""Atomic file writes, local and on object stores (gs://): the one writer.

A reader must never see half a file: a killed or failed write leaves the
previous version. Locally that means a temporary file in the same directory
(hidden, `.<name>.<pid>.<random>.tmp`, so no glob for the real name matches
it), flushed and fsynced, then `os.replace` over the target and an fsync of
the directory, so that the rename itself survives a power cut. On object
stores a single whole-object write is already atomic (the new object becomes
visible only once its upload completes), so it is written directly: a
temporary object and a "rename" would be a copy and a delete there, and a
kill between them would leave a stray object behind.

Callers decide which process writes; nothing here looks at the process
index (multi-host callers gate on `demix_jax.multihost.is_writer`).
"""

from __future__ import annotations

from collections.abc import Mapping
import json
import math
import os
import secrets
from typing import Any, TypeAlias

from etils import epath
import numpy as np

PathLike: TypeAlias = str | os.PathLike | epath.Path


def is_local(path: PathLike) -> bool:
  """True for a plain local path (not gs:// or another object store)."""
  # epath keeps the scheme in the string form of a URI path.
  return "://" not in os.fspath(path)


def _fsync_dir(directory: str) -> None:
  fd = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _write_local(path: str, data: bytes) -> None:
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(
      parent,
      f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp",
  )
  # O_EXCL: never write through a file someone else is writing; mode 0o666
  # under the umask, like open(path, "w") (mkstemp's 0o600 would make the
  # results unreadable to the other users of a shared workdir).
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.lexists(tmp):
      os.unlink(tmp)
    raise
  _fsync_dir(parent)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
  """Replaces `path` with `data`, all or nothing; creates parent dirs.

  Args:
    path: a local path or an epath URI (gs://...).
    data: the whole new content.
  """
  if is_local(path):
    _write_local(os.fspath(path), bytes(data))
    return
  p = epath.Path(path)
  p.parent.mkdir(parents=True, exist_ok=True)
  p.write_bytes(bytes(data))


def atomic_write_text(path: PathLike, text: str) -> None:
  """Replaces `path` with `text` (UTF-8), all or nothing."""
  atomic_write_bytes(path, text.encode("utf-8"))


def _finite(x: Any) -> Any:
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def to_jsonable(obj: Any) -> Any:
  """`obj` with numpy values as Python ones and non-finite floats as None.

  Recurses through mappings, lists and tuples (JSON has no NaN or inf: a
  missing score is written as null). Other objects are left for
  `json_default`.

  Args:
    obj: a tree of dicts, lists, tuples, numbers, numpy values.

  Returns:
    The same tree made of plain Python values.
  """
  if isinstance(obj, Mapping):
    return {k: to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return to_jsonable(obj.tolist())
  if isinstance(obj, np.generic):
    return _finite(obj.item())
  return _finite(obj)


def json_default(x: Any) -> Any:
  """json.dumps `default`: numpy values as Python ones, anything else str()."""
  if isinstance(x, (np.ndarray, np.generic)):
    return to_jsonable(x)
  return str(x)


def dumps_json(obj: Any, sort_keys: bool = True) -> str:
  """The JSON text `atomic_write_json` writes (indent 1, keys sorted)."""
  return json.dumps(
      to_jsonable(obj),
      indent=1,
      sort_keys=sort_keys,
      allow_nan=False,
      default=json_default,
  )


def atomic_write_json(path: PathLike, obj: Any, sort_keys: bool = True) -> None:
  """Writes `obj` as indented JSON, atomically (see `dumps_json`).

  Args:
    path: a local path or an epath URI (gs://...).
    obj: a tree of dicts, lists, numbers, strings and numpy values;
      non-finite floats are written as null, unknown objects as their str().
    sort_keys: sort mapping keys (False keeps insertion order, for files
      whose key order carries meaning, e.g. table columns).
  """
  atomic_write_text(path, dumps_json(obj, sort_keys=sort_keys))


class CorruptFileError(ValueError):
  """A saved file cannot be read back: its message names the file.

  Raised instead of a bare decode error, so a truncated or overwritten
  result is reported (the CLI exits with code 4) and never half-read.
  """

  def __init__(self, path: PathLike, problem: str, fix: str = ""):
    self.path = os.fspath(path)
    fix = fix or "delete it to redo the step that wrote it"
    super().__init__(f"{self.path} is corrupt or truncated ({problem}); {fix}")


def read_json(path: PathLike) -> Any:
  """Parses the JSON file at `path` (local or gs://).

  Raises:
    CorruptFileError: the file is not valid UTF-8 JSON (names the file).
  """
  data = epath.Path(path).read_bytes()
  try:
    return json.loads(data.decode("utf-8"))
  except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
    raise CorruptFileError(path, f"{type(e).__name__}: {e}") from e
