"""Quiet output: progress lines, warnings and results, not library chatter.

The CLI calls `quiet_logging()` unless `--verbosity` is given; notebooks can
call `dx.quiet_logging()` for the same effect. INFO logging is turned off
everywhere, and warnings of the packages below (Orbax's read-only managers,
tfds's builder configs, ...) are dropped; errors always pass, and
demix_jax's own warnings (e.g. the loss-barrier warning) still show.
"""

import logging as py_logging
import os

from absl import logging

# Libraries that log routine events at INFO/WARNING (Orbax's read-only
# managers, tfds's builder configs) through absl or Python logging.
_QUIET_PACKAGES = (
    "orbax",
    "tensorflow_datasets",
    "tensorflow",
    "grain",
    "etils",
    "jax",
    "seqio",
    "clu",
)


class ThirdPartyFilter(py_logging.Filter):
  """Drops other packages' records below ERROR; ours pass from WARNING."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if record.levelno >= py_logging.ERROR:
      return True
    path = record.pathname.replace(os.sep, "/")
    return not any(f"/{p}/" in path for p in _QUIET_PACKAGES)


def _import_tensorflow_quietly() -> None:
  """Loads TensorFlow with stderr muted.

  TF's C++ start-up lines (oneDNN, CUDA probing) go through absl's C++
  logging before TF_CPP_MIN_LOG_LEVEL is consulted, so the only way to keep
  them off the terminal is to mute file descriptor 2 while TF loads. An
  import error is not hidden: the real import later raises it.
  """
  saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(null, 2)
  try:
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import  # noqa: F401
  except ImportError:
    pass
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(null)


_FILTER = ThirdPartyFilter()


def quiet_logging() -> None:
  """INFO off everywhere, third-party warnings off: progress and tables."""
  _import_tensorflow_quietly()
  logging.set_verbosity(logging.WARNING)
  logging.get_absl_handler().addFilter(_FILTER)  # a set: idempotent
  for name in _QUIET_PACKAGES:
    py_logging.getLogger(name).setLevel(py_logging.ERROR)
