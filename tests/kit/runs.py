"""The trained runlocal pipeline the slow tests share, and copies of it.

Training the runlocal pipeline is most of a slow test's time, so one
session trains it once (the `runlocal_run` fixture in tests/conftest.py,
built the first time a test asks for it) and every test that only reads a
finished run reads that one. A test that writes into a workdir (reruns a
stage, damages a file, trains more) works on a `copy_run` of it.
"""

import dataclasses
import os
import pathlib
import shutil
import subprocess
from typing import Iterable

from tests.kit import cli
from tests.kit.paths import ROOT


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """A finished runlocal workdir and the `make demo` process that made it."""

  workdir: pathlib.Path
  proc: subprocess.CompletedProcess


def train_runlocal(workdir: pathlib.Path) -> TrainedRun:
  """The README's `make demo` on the runlocal twin, with a relative WORKDIR
  (as a user types it): every stage from data to report."""
  relative = os.path.relpath(workdir, ROOT)
  proc = cli.run_cli(
      cmd=[
          "make",
          "demo",
          "CONFIG=configs/demo.py:runlocal",
          f"WORKDIR={relative}",
      ]
  )
  cli.assert_ok(proc)
  return TrainedRun(pathlib.Path(workdir), proc)


def copy_run(
    src: pathlib.Path,
    dst: pathlib.Path,
    parts: Iterable[str] | None = None,
    ignore: Iterable[str] = (),
) -> pathlib.Path:
  """A copy of a finished workdir (or of some of its stages).

  Args:
    src: the finished workdir.
    dst: where the copy goes (must not exist, or hold none of `parts`).
    parts: top-level entries to copy (e.g. ("data", "base")); default all.
    ignore: file or directory names to leave out (shutil patterns).

  Returns:
    dst. Nothing in it is rewritten: saved results write their paths
    relative to their workdir (demix_jax.stages.results.portable).
  """
  src, dst = pathlib.Path(src), pathlib.Path(dst)
  skip = shutil.ignore_patterns(*ignore) if ignore else None
  if parts is None:
    shutil.copytree(src, dst, ignore=skip)
  else:
    dst.mkdir(parents=True, exist_ok=True)
    for part in parts:
      shutil.copytree(src / part, dst / part, ignore=skip)
  return dst
