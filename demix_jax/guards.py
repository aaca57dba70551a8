"""Checks at the edge that name the field or the file at fault.

Used by the workspace and the pipeline before and around training: source
files that are not UTF-8 (named with the file and byte), a run stopped
part-way under another config, SentencePiece's multi-line errors cut to
their last line. Errors are `config_lib.ConfigError` (exit code 2).
"""

from __future__ import annotations

import contextlib
import glob
import os
from typing import Mapping

from etils import epath
import numpy as np

from demix_jax import multihost
from demix_jax.config_lib import ConfigError
from demix_jax.data import errors as data_errors
from demix_jax.data import sources as sources_lib


def check_unfinished_run(run_dir, config_hash: str, what: str) -> None:
  """A run stopped part-way continues only under the config it began with."""
  from demix_jax.training import checkpoint_reads  # pylint: disable=g-import-not-at-top  # orbax
  from demix_jax.training import checkpointing  # pylint: disable=g-import-not-at-top  # orbax

  # Process 0's view on every process: Orbax's readers synchronise, so all
  # processes must take the same branch, before any of them starts the run.
  started = checkpointing.checkpoint_dir(run_dir).exists()
  if not bool(multihost.broadcast(np.asarray(started))):
    return
  try:
    saved = checkpointing.read_metadata(run_dir).get("config_hash", "")
  except checkpoint_reads.CheckpointError:
    return  # nothing readable: the restore names the damaged checkpoints
  if saved and saved != config_hash:
    raise ConfigError(
        f"<workdir>/{epath.Path(run_dir).parent.name}",
        f"{run_dir} holds {what} stopped part-way under another config"
        f" (checkpoint hash {saved[:12]}, this config {config_hash[:12]}):"
        " the fields that change results differ",
        f"use a new --workdir, or delete {run_dir} to start it again",
    )


def last_line(e: BaseException) -> str:
  lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
  return (lines[-1] if lines else type(e).__name__)[:200]


def undecodable_file(spec: sources_lib.SourceSpec) -> str:
  """'<file> (byte N)' of a source's first local file that is not UTF-8."""
  if spec.kind not in ("text", "jsonl"):
    return ""
  for pattern in spec.paths + spec.heldout_paths:
    if "://" in pattern:
      continue
    for f in sorted(glob.glob(os.path.expanduser(pattern), recursive=True)):
      try:
        epath.Path(f).read_bytes().decode("utf-8")
      except UnicodeDecodeError as e:
        return f"{f} (byte {e.start})"
  return ""


@contextlib.contextmanager
def readable(specs: Mapping[str, sources_lib.SourceSpec]):
  """Reading sources: their errors become ConfigErrors naming the field.

  A `data.errors.SourceError` (no documents, a line that is not JSON, ...)
  names `data.sources.<source>.<key>`; bytes that are not UTF-8 name the
  source and the file.

  Args:
    specs: the sources read inside the block.

  Yields:
    Nothing.
  """
  try:
    yield
  except data_errors.SourceError as e:
    raise ConfigError(
        f"data.sources.{e.source}" + (f".{e.key}" if e.key else ""),
        e.problem,
        e.fix,
    ) from e
  except UnicodeDecodeError as e:
    for name, spec in specs.items():
      where = undecodable_file(spec)
      if where or len(specs) == 1:
        raise ConfigError(
            f"data.sources.{name}",
            f"{where or 'a document'} is not UTF-8 text ({e.reason} at byte"
            f" {e.start})",
            "convert it to UTF-8, or remove it from the source's paths",
        ) from e
    raise ConfigError(
        "data.sources",
        f"a document is not UTF-8 text ({e.reason} at byte {e.start})",
        "convert the sources' files to UTF-8",
    ) from e
