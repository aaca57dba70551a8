"""Reading checkpoints through storage faults, and checking what was read.

`check_structure` compares a checkpoint's params tree with the model's
before any array is read, so a changed model config names its leaves.

A failed read of a checkpoint is one of three things, and each has one
answer:

- corrupt: the files were read and are wrong or missing (a truncated or
  overwritten array file, metadata that is not JSON, an item or file that
  is gone). Retrying reads the same bytes again, so the step is named and
  skipped loudly (an error-level log line and a record in the run
  directory), and the run goes back to its previous checkpoint.
- transient: the storage did not answer (an I/O error, a reset
  connection, a timeout, a gs:// 429/5xx). The same read is tried again
  after each of `RETRY_DELAYS`; if it still fails the run stops with a
  `CheckpointError` naming the path. It never moves on to an older step,
  and never starts from scratch: on a pod a network blip must not retrain
  a stage.
- anything else (a permission error, a bug): raised as is.

Orbax reads array data through TensorStore, whose errors are `ValueError`s
whose message starts with an absl status code (`DATA_LOSS: ...`,
`UNAVAILABLE: ...`); JSON items are read with Python's file and JSON
functions (OSError, JSONDecodeError).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Callable, TypeVar

from absl import logging
from etils import epath
import jax

CORRUPT = "corrupt"
TRANSIENT = "transient"

# Waits before the second, third and fourth try of a transient failure.
RETRY_DELAYS = (1.0, 2.0, 4.0)
# Where a run records the steps it skipped as corrupt (one JSON list).
RECORD = "unreadable_checkpoints.json"

# TensorStore status codes: bytes that were read but are wrong or gone...
_CORRUPT_CODES = frozenset(
    {
        "DATA_LOSS",
        "OUT_OF_RANGE",
        "NOT_FOUND",
        "INVALID_ARGUMENT",
        "FAILED_PRECONDITION",
    }
)
# ...and a storage that did not answer (TensorStore retries gs:// itself
# first; these are what is left after its own retries).
_TRANSIENT_CODES = frozenset(
    {
        "UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        "ABORTED",
        "RESOURCE_EXHAUSTED",
        "CANCELLED",
        "INTERNAL",
        "UNKNOWN",
    }
)
# google-api-core / google-auth errors of a service that did not answer
# (named, so that this module needs neither package).
_TRANSIENT_TYPES = frozenset(
    {
        "ServiceUnavailable",
        "TooManyRequests",
        "InternalServerError",
        "BadGateway",
        "GatewayTimeout",
        "DeadlineExceeded",
        "RetryError",
        "TransportError",
    }
)
_CODE = re.compile(r"^([A-Z_]+):")

T = TypeVar("T")


class CheckpointError(ValueError):
  """No usable checkpoint, or one that does not fit the model."""


class CorruptCheckpointError(CheckpointError):
  """A checkpoint's files were read and are damaged; names the step."""

  def __init__(self, what: str, cause: BaseException):
    self.what = what
    self.cause = cause
    super().__init__(f"{what} is unreadable ({describe(cause)})")


class UnreachableCheckpointError(CheckpointError):
  """Reading a checkpoint kept failing with a transient error."""


def describe(e: BaseException) -> str:
  """`Type: first line` of an exception, short enough for one log line."""
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def _chain(e: BaseException | None):
  seen = set()
  while e is not None and id(e) not in seen:
    yield e
    seen.add(id(e))
    e = e.__cause__ or e.__context__


def classify(e: BaseException) -> str | None:
  """CORRUPT, TRANSIENT, or None (neither: raise it) for a failed read.

  The exception and its causes are looked at from the outside in; the
  first one that says something decides.

  Args:
    e: what a checkpoint read raised.

  Returns:
    The kind of failure.
  """
  for x in _chain(e):
    if isinstance(
        x, (FileNotFoundError, IsADirectoryError, NotADirectoryError)
    ):
      return CORRUPT  # a listed checkpoint lacks a file it wrote
    if isinstance(x, PermissionError):
      return None  # no retry mends it, and the files may be fine
    if isinstance(x, OSError):  # EIO, resets, timeouts (gcsfs, epath)
      return TRANSIENT
    if type(x).__name__ in _TRANSIENT_TYPES:
      return TRANSIENT
    if isinstance(x, (json.JSONDecodeError, UnicodeDecodeError, KeyError)):
      return CORRUPT  # KeyError: Orbax's "item ... was not found"
    if isinstance(x, ValueError):
      m = _CODE.match(str(x).strip())
      code = m.group(1) if m else ""
      if code in _TRANSIENT_CODES:
        return TRANSIENT
      if code in _CORRUPT_CODES or not code:
        return CORRUPT
      return None  # PERMISSION_DENIED, UNAUTHENTICATED, ...
  return None


def wait(seconds: float) -> None:
  """The pause between tries (tests replace it to record the delays)."""
  time.sleep(seconds)


def read(
    fn: Callable[[], T],
    what: str,
    delays: tuple[float, ...] | None = None,
) -> T:
  """`fn()`, retried after each of `delays` while it fails transiently.

  Args:
    fn: the read.
    what: the checkpoint (path and step), for messages.
    delays: seconds to wait before each further try (default:
      `RETRY_DELAYS`, read when called).

  Returns:
    What `fn` returned.

  Raises:
    CorruptCheckpointError: the read failed with a corrupt kind of error.
    UnreachableCheckpointError: it failed transiently on every try.
    Exception: any other error of `fn`, unchanged.
  """
  delays = RETRY_DELAYS if delays is None else tuple(delays)
  for attempt in range(len(delays) + 1):
    try:
      return fn()
    except Exception as e:  # pylint: disable=broad-except  # sorted below
      kind = classify(e)
      if kind == CORRUPT:
        raise CorruptCheckpointError(what, e) from e
      if kind != TRANSIENT:
        raise
      if attempt == len(delays):
        raise UnreachableCheckpointError(
            f"{what} could not be read: {len(delays) + 1} tries failed, the"
            f" last with {describe(e)}. Nothing was restarted or skipped."
            " Fix: check that the storage is reachable and run the same"
            " command again; the run resumes from this checkpoint"
        ) from e
      logging.warning(
          "reading %s failed (%s); try %d of %d in %.1f s",
          what,
          describe(e),
          attempt + 2,
          len(delays) + 1,
          delays[attempt],
      )
      wait(delays[attempt])
  raise AssertionError("unreachable")


def record_skipped(run_dir: Any, entries: list[dict[str, Any]]) -> None:
  """Appends skipped steps to `<run_dir>/unreadable_checkpoints.json`.

  Args:
    run_dir: the run directory.
    entries: one dict per skipped step (step, path, moved_to, error).
  """
  from demix_jax import storage  # pylint: disable=g-import-not-at-top  # numpy-only, but keep this module light

  path = epath.Path(run_dir) / RECORD
  old: list[Any] = []
  if path.exists():
    try:
      old = json.loads(path.read_text())
    except ValueError:
      old = [{"unreadable_record": path.read_text()[:1000]}]
    if not isinstance(old, list):
      old = [old]
  storage.atomic_write_json(
      path, old + [dict(e, time=time.time()) for e in entries]
  )


def check_structure(expected: Any, found: Any, source: str) -> None:
  """Raises CheckpointError naming the leaves where two trees differ."""
  exp = {
      jax.tree_util.keystr(p): x
      for p, x in jax.tree_util.tree_leaves_with_path(expected)
  }
  got = {
      jax.tree_util.keystr(p): x
      for p, x in jax.tree_util.tree_leaves_with_path(found)
  }
  problems = []
  for k in sorted(set(exp) - set(got)):
    problems.append(f"missing {k}")
  for k in sorted(set(got) - set(exp)):
    problems.append(f"unexpected {k}")
  for k in sorted(set(exp) & set(got)):
    if tuple(exp[k].shape) != tuple(got[k].shape):
      problems.append(
          f"{k}: checkpoint shape {tuple(got[k].shape)} != model "
          f"shape {tuple(exp[k].shape)}"
      )
  if problems:
    head = "; ".join(problems[:8])
    more = f" (+{len(problems) - 8} more)" if len(problems) > 8 else ""
    raise CheckpointError(
        f"checkpoint {source} does not match the model config: {head}{more}. "
        "Initialise from a run with the same config.model"
    )
