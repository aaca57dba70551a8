"""Running the CLI (`python -m demix_jax.main ...`) in a subprocess.

Timeouts here are hang guards, not speed checks: a loaded 2-core machine
runs a stage several times slower than an idle one, so the guard is far
above any honest run time, and ending past it fails with a message that
says so. A process ended by a signal is reported by the signal's name.
"""

import os
import signal
import subprocess
import sys
from typing import Sequence

from tests.kit.paths import ROOT

# Far above what any CLI run of the tests takes on a loaded 2-core box.
HANG_GUARD_S = 3600


def cli_env(devices: int = 1, **extra: str) -> dict[str, str]:
  """This process's environment with `devices` fake CPU devices (the CLI's
  default is the machine's one CPU device)."""
  return dict(
      os.environ,
      XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
      TF_CPP_MIN_LOG_LEVEL="2",
      **extra,
  )


def outcome(proc: subprocess.CompletedProcess) -> str:
  """How a process ended, in words (a negative code is a signal)."""
  rc = proc.returncode
  if rc >= 0:
    return f"exit code {rc}"
  name = signal.Signals(-rc).name
  if -rc == signal.SIGTERM:
    # Neither demix_jax nor a test sends SIGTERM to a run (timeouts here
    # kill with SIGKILL after HANG_GUARD_S): it came from outside.
    return (
        f"killed by {name} from another process on this machine (no test"
        " and no demix_jax code sends it; e.g. a `pkill -f demix_jax`)"
    )
  return f"killed by {name}"


def assert_ok(proc: subprocess.CompletedProcess, tail: int = 4000) -> None:
  """Fails with how the process ended and the end of its stderr."""
  assert (
      proc.returncode == 0
  ), f"{outcome(proc)}; stderr ends with:\n{proc.stderr[-tail:]}"


def run_cli(
    *args: str,
    module: str = "demix_jax.main",
    devices: int = 1,
    env: dict[str, str] | None = None,
    timeout: float = HANG_GUARD_S,
    cmd: Sequence[str] | None = None,
) -> subprocess.CompletedProcess:
  """Runs `python -m module args` (or `cmd`) in the repository root.

  Args:
    *args: the command line after the module.
    module: the module to run.
    devices: fake CPU devices (XLA_FLAGS), unless `env` is given.
    env: the whole environment (default: cli_env(devices)).
    timeout: the hang guard in seconds.
    cmd: a whole command line instead of the module (e.g. `make demo`).

  Returns:
    The finished process, its output captured as text.
  """
  cmd = list(cmd) if cmd else [sys.executable, "-m", module, *args]
  try:
    return subprocess.run(
        cmd,
        cwd=ROOT,
        env=cli_env(devices) if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
  except subprocess.TimeoutExpired as e:
    err = e.stderr.decode() if isinstance(e.stderr, bytes) else e.stderr
    raise AssertionError(
        f"{' '.join(cmd)} still ran after the {timeout:.0f} s hang guard"
        f" (not a speed check: far above a loaded machine's time); its"
        f" stderr ends with:\n{(err or '')[-3000:]}"
    ) from None
