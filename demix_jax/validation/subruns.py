"""Pipeline runs a study launches: one subprocess per workdir, shared parts.

The recipe study (`study.py`) and the base sweep (`base_sweep.py`) each run
the ordinary pipeline (`python -m demix_jax.main`) once per point, so every
point is a normal workdir that resumes like any run, and share the parts
that do not change between points by symlink.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any, Mapping, Sequence


def run_pipeline(
    config: str,
    workdir: str,
    overrides: Mapping[str, Any],
    extra: Sequence[str] = (),
) -> None:
  """Runs the pipeline on `config` with `--config.<k>=<v>` overrides.

  Args:
    config: the config file (e.g. configs/validate_small.py).
    workdir: the run's workdir (a rerun resumes it).
    overrides: {dotted field: value}.
    extra: more overrides already written as "field=value".

  Raises:
    subprocess.CalledProcessError: the run failed (its output is inherited).
  """
  cmd = [
      sys.executable,
      "-m",
      "demix_jax.main",
      f"--config={config}",
      f"--workdir={workdir}",
  ]
  cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
  cmd += [f"--config.{s}" for s in extra]
  print("run:", " ".join(cmd[2:]), flush=True)
  subprocess.run(cmd, check=True)


def share(
    first: str,
    other: str,
    dirs: Sequence[str],
    scores: Sequence[str] = (),
) -> None:
  """Points `other`'s `dirs` at `first`'s; copies validate score caches."""
  os.makedirs(os.path.join(other, "validate", "scores"), exist_ok=True)
  for name in dirs:
    link = os.path.join(other, name)
    if not os.path.lexists(link):
      os.symlink(os.path.abspath(os.path.join(first, name)), link)
  for name in scores:
    src = os.path.join(first, "validate", "scores", name)
    dst = os.path.join(other, "validate", "scores", name)
    if os.path.exists(src) and not os.path.exists(dst):
      shutil.copyfile(src, dst)
