"""Runs checks: the program in one sandbox, its trusted tests in another.

Each `Check` starts two processes, each under `isolation.command` (or, in
the "none_unsafe" mode, as plain processes): the worker (`worker.py`),
which loads the untrusted program and answers calls, and the judge
(`judge.py`), which runs the trusted tests and calls the program through
two pipes that connect only these two processes. The verdict is the one
JSON line the judge writes to its stdout, which only the runner reads.
After the judge ends, or at `timeout_s`, both are killed (SIGKILL to the
outer bwrap: the namespace's PID 1 dies and takes every process in it).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Sequence

from demix_jax.config_lib import ConfigError
from demix_jax.evals.sandbox import guards
from demix_jax.evals.sandbox import isolation
from demix_jax.evals.sandbox.isolation import SandboxLimits

_HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_LIMITS = SandboxLimits()


@dataclasses.dataclass(frozen=True)
class Check:
  """A program and the trusted tests that judge it.

  Attributes:
    program: untrusted source, run as a module in the worker.
    tests: trusted source, run in the judge; it passes iff it runs to its
      end. Its free names that `trusted` does not define resolve to the
      program's globals (plain data, or a callable proxy).
    trusted: trusted source run in the judge before `tests` (definitions
      the tests may use, which the program cannot replace).
    remote: names bound to the program's objects even where `trusted`
      defines them (e.g. the function under test, stubbed in `trusted`).
  """

  program: str
  tests: str = ""
  trusted: str = ""
  remote: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ExecResult:
  """Outcome of one check.

  Attributes:
    passed: the judge ran the tests to their end.
    reason: "passed" or why not (timeout, memory, an assert, ...).
    returncode: the worker's exit status (bwrap reports 128 + signal for a
      killed program); None on timeout.
    seconds: wall-clock time.
    stderr_tail: the last lines of the program's output (for reports).
  """

  passed: bool
  reason: str
  returncode: int | None
  seconds: float
  stderr_tail: str = ""


@functools.lru_cache(maxsize=4)
def bootstrap(kind: str, guarded: bool = False) -> str:
  """The `python -c` source of the worker or the judge (stdlib only)."""

  def read(name):
    with open(os.path.join(_HERE, name), encoding="utf-8") as f:
      return f.read()

  lines = [
      "import sys, types",
      "def _load(name, src):",
      "  m = types.ModuleType(name)",
      "  sys.modules[name] = m",
      "  exec(compile(src, name + '.py', 'exec'), m.__dict__)",
      "  return m",
      f"_load('_sandbox_wire', {read('wire.py')!r})",
  ]
  if guarded:
    lines.append(guards.PRELUDE)
  lines.append(f"_load('_sandbox_{kind}', {read(kind + '.py')!r}).main()")
  return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=1)
def _unshare_net() -> tuple[str, ...]:
  exe = shutil.which("unshare")
  if not exe:
    return ()
  try:
    ok = subprocess.run(
        [exe, "--net", "--", "true"], capture_output=True, timeout=10
    )
  except (OSError, subprocess.TimeoutExpired):
    return ()
  return (exe, "--net", "--") if ok.returncode == 0 else ()


def _spawn(kind, args, limits, workdir, pass_fds, **popen):
  unsafe = limits.isolation == "none_unsafe"
  boot = bootstrap(kind, guarded=unsafe and kind == "worker")
  argv = [isolation.interpreter(), "-I", "-S", "-c", boot, *args]
  env = dict(isolation.ENV)
  sfd = None
  if unsafe:
    env.update(HOME=workdir, TMPDIR=workdir)
    net = _unshare_net() if limits.network_namespace else ()
    prlimit = shutil.which("prlimit")
    lim = [prlimit, *isolation.rlimit_args(limits), "--"] if prlimit else []
    cmd = [*lim, *net, *argv]
  else:
    sfd = isolation.seccomp_fd()
    cmd = isolation.command(argv, limits, sfd)
    pass_fds = (*pass_fds, sfd)
  try:
    return subprocess.Popen(
        cmd,
        cwd=workdir,
        env=env,
        pass_fds=pass_fds,
        start_new_session=True,
        close_fds=True,
        **popen,
    )
  finally:
    if sfd is not None:
      os.close(sfd)


def _kill(proc, unsafe):
  if proc is None:
    return None
  try:
    if unsafe:
      os.killpg(proc.pid, signal.SIGKILL)  # forks included
    else:
      proc.kill()  # the outer bwrap; PID 1 inside dies with it
  except (ProcessLookupError, PermissionError):
    pass
  return proc.wait()


def _death(rc: int | None, unsafe: bool, log: str) -> str:
  """Why the worker died, from its exit status."""
  sig = -rc if unsafe and rc is not None and rc < 0 else None
  if not unsafe and rc is not None and rc > 128:
    sig = rc - 128
  if "MemoryError" in log:
    return "memory limit (MemoryError)"
  if sig in (signal.SIGXCPU, signal.SIGKILL):
    return "cpu time limit"
  if sig == signal.SIGXFSZ:
    return "file size limit"
  if sig is not None:
    try:
      return f"killed by signal {signal.Signals(sig).name}"
    except ValueError:
      return f"killed by signal {sig}"
  if rc is None:
    return "program closed its channel"
  return f"exited with status {rc} before the tests finished"


def _tail(text: str, n: int = 6) -> str:
  return "\n".join(text.strip().splitlines()[-n:])


def run_check(check: Check, limits: SandboxLimits = DEFAULT_LIMITS):
  """Runs one check (see the package docstring); returns its ExecResult."""
  unsafe = limits.isolation == "none_unsafe"
  t0 = time.monotonic()
  job = json.dumps(dataclasses.asdict(check)).encode()
  workdir = tempfile.mkdtemp(prefix="demix_sandbox_")
  req_r, req_w = os.pipe()
  rep_r, rep_w = os.pipe()
  open_fds = {req_r, req_w, rep_r, rep_w}
  worker = judge = None
  timed_out, rc, out, err = False, None, b"", b""

  def close(*fds):
    for fd in fds:
      if fd in open_fds:
        open_fds.discard(fd)
        os.close(fd)

  try:
    with tempfile.TemporaryFile(dir=workdir) as log:
      try:
        worker = _spawn(
            "worker", [str(rep_w)], limits, workdir, (rep_w,),
            stdin=req_r, stdout=log, stderr=log,
        )  # fmt: skip
        close(req_r, rep_w)
        judge = _spawn(
            "judge", [str(req_w), str(rep_r)], limits, workdir,
            (req_w, rep_r), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        close(req_w, rep_r)
        left = limits.timeout_s - (time.monotonic() - t0)
        try:
          out, err = judge.communicate(job, timeout=max(left, 0.01))
        except subprocess.TimeoutExpired:
          timed_out = True
        if not timed_out:
          try:  # a worker that died on its own has its status by now
            rc = worker.wait(timeout=0.5)
          except subprocess.TimeoutExpired:
            rc = None
      finally:
        close(*list(open_fds))
        wrc = _kill(worker, unsafe)
        rc = wrc if rc is None and not timed_out else rc
        _kill(judge, unsafe)
      log.seek(0)
      text = log.read()[-8192:].decode("utf-8", "replace")
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  seconds = time.monotonic() - t0
  blocked = [
      ln for ln in text.splitlines() if ln.startswith("sandbox: blocked")
  ]
  if timed_out:
    reason = f"timeout after {limits.timeout_s:g}s (killed)"
    rc = None
  else:
    try:
      verdict = json.loads(out.decode().strip().splitlines()[-1])
      passed, reason = bool(verdict["passed"]), str(verdict["reason"])
    except (ValueError, IndexError, KeyError, TypeError):
      tail = _tail(err.decode("utf-8", "replace"))
      passed, reason = False, f"judge failed: {tail or 'no verdict'}"
      verdict = {}
    if verdict.get("died"):
      reason = _death(rc if rc is not None else None, unsafe, text)
    elif "MemoryError" in reason:
      reason = f"memory limit ({reason})"
  if blocked:  # none_unsafe: a refused call fails even if it was caught
    reason = blocked[0][len("sandbox: ") :]
  passed = reason == "passed"
  return ExecResult(passed, reason, rc, seconds, _tail(text))


def _warn_unsafe():
  logging.warning(
      "UNSAFE: %s = 'none_unsafe': model-written programs run WITHOUT"
      " isolation (plain processes with in-process guards that the program"
      " can undo). Use 'bwrap' (%s) for any model you do not trust.",
      isolation.FIELD,
      isolation.INSTALL,
  )


def run_checks(
    checks: Sequence[Check | str], limits: SandboxLimits = DEFAULT_LIMITS
) -> list[ExecResult]:
  """`run_check` of each, in parallel; results in input order.

  A plain string is `Check(program=s)`: it passes iff it runs to its end,
  a verdict the program itself can forge (tests of the isolation only).
  """
  if limits.isolation == "none_unsafe":
    _warn_unsafe()
  elif isolation.missing_tools():
    raise isolation.not_installed_error()
  items = [Check(program=c) if isinstance(c, str) else c for c in checks]
  if not items:
    return []
  workers = limits.workers or os.cpu_count() or 1
  workers = max(1, min(workers, len(items)))
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    return list(pool.map(lambda c: run_check(c, limits), items))


run_programs = run_checks


def run_program(program: str, limits: SandboxLimits = DEFAULT_LIMITS):
  """One program run to its end (its own verdict: see `run_checks`)."""
  return run_checks([program], limits)[0]


_PROBE = Check(
    program="import os\ndef ids():\n  return os.getuid(), os.getgid()\n",
    tests="assert ids() == (65534, 65534)\n",
)


def check_isolation(limits: SandboxLimits = DEFAULT_LIMITS) -> None:
  """Checks that programs can run isolated here (runs a trivial one).

  Raises:
    ConfigError: naming `eval.generation.sandbox.isolation`, when bwrap or
      prlimit is missing (fix: apt-get install bubblewrap) or cannot make
      the namespaces here. In "none_unsafe" mode it only warns.
  """
  if limits.isolation == "none_unsafe":
    _warn_unsafe()
    return
  if isolation.missing_tools():
    raise isolation.not_installed_error()
  probe = dataclasses.replace(limits, timeout_s=max(limits.timeout_s, 30.0))
  r = run_check(_PROBE, probe)
  if not r.passed:
    raise ConfigError(
        isolation.FIELD,
        "bubblewrap is installed but could not run an isolated program"
        f" here ({r.reason}; {r.stderr_tail or 'no output'})",
        "run as root, or allow unprivileged user namespaces (sysctl"
        " kernel.unprivileged_userns_clone=1; on Ubuntu also"
        " kernel.apparmor_restrict_unprivileged_userns=0; in a container,"
        " one that permits them), or set it to 'none_unsafe' (unsafe)",
    )
