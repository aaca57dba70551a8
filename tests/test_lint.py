"""The tree stays formatted (pyink) and lint-clean (ruff), as `make lint`."""

import os
import subprocess
import sys

from tests.kit import ROOT

BIN = os.path.dirname(sys.executable)
PATHS = ["demix_jax", "configs", "tests", "bench", "launch"]


def _run(*cmd):
  return subprocess.run(
      cmd, cwd=ROOT, capture_output=True, text=True, timeout=300
  )


def test_ruff_clean():
  proc = _run(os.path.join(BIN, "ruff"), "check", *PATHS, "notebooks")
  assert proc.returncode == 0, proc.stdout[-3000:]


def test_pyink_formatted():
  proc = _run(os.path.join(BIN, "pyink"), "--check", *PATHS)
  assert proc.returncode == 0, proc.stderr[-3000:]


def test_notebook_outputs_stripped():
  proc = _run(sys.executable, "notebooks/strip_outputs.py", "--check")
  assert proc.returncode == 0, proc.stdout + proc.stderr
