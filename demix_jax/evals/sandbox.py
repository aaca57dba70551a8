"""Runs untrusted programs (generated code plus its tests), one process each.

`run_programs(programs, limits)` executes every program in its own process,
in parallel over cores (a thread pool whose threads only wait on their
child), and returns one `ExecResult` per program: passed or not, and why.
A program PASSES only if the process exits with status 0 AND its last
stdout line is a random sentinel that the runner prints after the program
(tests included) returned normally; so `sys.exit(0)`, `os._exit(0)` or a
crash before the tests end is a failure ("exited before the tests
finished").

Isolation, per program:

* a fresh temporary directory (mode 0700) as cwd, HOME and TMPDIR, removed
  afterwards; a minimal environment built from scratch (no proxies, no
  PYTHON* variables), the venv python in isolated mode (`-I -B`);
* limits set with `resource.setrlimit` by the child itself, first thing,
  before it reads the program: RLIMIT_CPU (CPU seconds), RLIMIT_AS
  (address space), RLIMIT_FSIZE (largest file it may write) and
  RLIMIT_NPROC (processes). They are set in the child rather than in a
  `preexec_fn`, which the subprocess docs call unsafe in a process with
  threads (the pool is threaded; JAX is too). Note: the kernel does not
  apply RLIMIT_NPROC to root, so as root the fork guard below is what
  stops a fork bomb;
* a wall-clock timeout, after which the whole process group (the child
  runs in its own session) is killed with SIGKILL;
* no network: when `unshare --net` works (root, or unprivileged user
  namespaces), the child runs in a fresh network namespace with no
  interfaces up; always, the runner replaces `socket.socket` and friends
  with functions that raise. The latter is best-effort: code using ctypes
  or raw syscalls could get round it (ctypes imports are refused too);
* best-effort guards in the runner (a "prelude"): fork/exec/spawn/kill/
  setsid and subprocess are refused, and opening a file for writing,
  creating, removing or renaming anything outside the program's directory
  is refused. A refused call raises `PermissionError`, writes
  "sandbox: blocked <what>" to stderr, and fails the program even if the
  code catches the exception.

This is a research harness, not a security boundary: for adversarial code,
run the whole evaluation in a container or VM (gVisor, Firecracker) on top.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# The child's first code. argv: limits; stdin: the sentinel (one line).
_RUNNER = r"""
import os, resource, sys
cpu, mem, fsize, nproc = (int(x) for x in sys.argv[1:5])
for res, val in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, mem),
                 (resource.RLIMIT_FSIZE, fsize),
                 (resource.RLIMIT_NPROC, nproc)):
  if val >= 0:
    resource.setrlimit(res, (val, val))
sentinel = sys.stdin.readline().strip()
fd = os.open(os.devnull, os.O_RDONLY)
os.dup2(fd, 0)
os.close(fd)
sys.stdin = open(os.devnull)
HOME = os.path.realpath(os.getcwd())
VIOLATIONS = []

def _violation(what):
  VIOLATIONS.append(what)
  os.write(2, ("sandbox: blocked " + what + "\n").encode())
  raise PermissionError("sandbox: " + what + " is not allowed")

def _inside(path, dir_fd=None):
  if dir_fd is not None:
    return False
  try:
    p = os.fsdecode(path) if not isinstance(path, int) else None
  except TypeError:
    return False
  if p is None:
    return True  # an already open fd
  real = os.path.realpath(p)
  if real == os.devnull:
    return True
  return real == HOME or real.startswith(HOME + os.sep)

def _refuse(name):
  return lambda *a, **k: _violation(name)

import builtins, io, posix
_open, _os_open = builtins.open, os.open
def _guarded_open(file, mode="r", *a, **k):
  if any(c in mode for c in "wax+") and not _inside(file):
    _violation("write to " + repr(file))
  return _open(file, mode, *a, **k)
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
def _guarded_os_open(path, flags, *a, dir_fd=None, **k):
  if flags & _WRITE and not _inside(path, dir_fd):
    _violation("write to " + repr(path))
  return _os_open(path, flags, *a, dir_fd=dir_fd, **k)
builtins.open = io.open = _guarded_open
os.open = posix.open = _guarded_os_open

def _path_guard(name, fn, nargs=1):
  def guarded(*a, **k):
    paths = a[:nargs]
    if any(not _inside(p, k.get("dir_fd") or k.get("src_dir_fd")
                        or k.get("dst_dir_fd")) for p in paths):
      _violation(name + " of " + repr(paths))
    return fn(*a, **k)
  return guarded
for name, nargs in (("remove", 1), ("unlink", 1), ("rmdir", 1), ("mkdir", 1),
                    ("rename", 2), ("replace", 2), ("symlink", 2),
                    ("link", 2), ("chmod", 1), ("chown", 1),
                    ("truncate", 1), ("utime", 1), ("mkfifo", 1)):
  if hasattr(os, name):
    g = _path_guard(name, getattr(os, name), nargs)
    setattr(os, name, g)
    setattr(posix, name, g)
for name in ("fork", "forkpty", "vfork", "system", "popen", "execv",
             "execve", "execl", "execle", "execlp", "execlpe", "execvp",
             "execvpe", "spawnv", "spawnve", "spawnl", "spawnle", "spawnlp",
             "spawnlpe", "spawnvp", "spawnvpe", "posix_spawn",
             "posix_spawnp", "kill", "killpg", "setsid", "setpgid",
             "setuid", "setgid", "chroot"):
  for mod in (os, posix):
    if hasattr(mod, name):
      setattr(mod, name, _refuse(name))
import socket
class _NoSocket:
  def __init__(self, *a, **k):
    _violation("network (socket)")
for name in ("socket", "create_connection", "create_server", "socketpair",
             "fromfd", "getaddrinfo", "gethostbyname"):
  setattr(socket, name, _NoSocket if name == "socket" else _refuse("network"))
BLOCKED = ("subprocess", "_posixsubprocess", "multiprocessing", "ctypes",
           "_ctypes", "pty", "_socket")
class _Blocker:
  @staticmethod
  def find_spec(name, path=None, target=None):
    if name.split(".")[0] in BLOCKED:
      _violation("import of " + name)
    return None
for name in BLOCKED:
  sys.modules.pop(name, None)
sys.meta_path.insert(0, _Blocker)
del builtins, io, posix, socket, name, mod

import runpy
sys.argv = ["program.py"]
runpy.run_path("program.py", run_name="__main__")
if VIOLATIONS:
  sys.exit(3)
sys.stdout.flush()
print("\n" + sentinel, flush=True)
"""


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
  """Resource limits of one program.

  Attributes:
    timeout_s: wall-clock limit; the process group is killed after it.
    cpu_s: RLIMIT_CPU (CPU seconds).
    memory_bytes: RLIMIT_AS (virtual address space).
    file_bytes: RLIMIT_FSIZE (largest file it may write, stdout included).
    max_procs: RLIMIT_NPROC (-1 = leave unset; 0 = no new processes or
      threads; not enforced by the kernel for root).
    workers: parallel programs (0 = os.cpu_count()).
    network_namespace: run under `unshare --net` when it works.
  """

  timeout_s: float = 10.0
  cpu_s: int = 10
  memory_bytes: int = 1 << 30
  file_bytes: int = 16 << 20
  max_procs: int = 0
  workers: int = 0
  network_namespace: bool = True


@dataclasses.dataclass(frozen=True)
class ExecResult:
  """Outcome of one program.

  Attributes:
    passed: tests ran to the end and the sentinel was printed.
    reason: "passed" or why not (timeout, memory, blocked fork, ...).
    returncode: the exit status (negative: killed by that signal; None on
      timeout).
    seconds: wall-clock time.
    stderr_tail: the last lines of stderr (for reports).
  """

  passed: bool
  reason: str
  returncode: int | None
  seconds: float
  stderr_tail: str = ""


@functools.lru_cache(maxsize=1)
def network_namespace_prefix() -> tuple[str, ...]:
  """`("unshare", "--net", "--")` if that works here, else ()."""
  exe = shutil.which("unshare")
  if not exe:
    return ()
  try:
    ok = subprocess.run(
        [exe, "--net", "--", "true"],
        capture_output=True,
        timeout=10,
        check=False,
    )
  except (OSError, subprocess.TimeoutExpired):
    return ()
  return (exe, "--net", "--") if ok.returncode == 0 else ()


def _environment(home: str) -> dict[str, str]:
  return {
      "PATH": "/usr/bin:/bin",
      "HOME": home,
      "TMPDIR": home,
      "LANG": "C.UTF-8",
      "PYTHONHASHSEED": "0",
      "OPENBLAS_NUM_THREADS": "1",
      "OMP_NUM_THREADS": "1",
      "MKL_NUM_THREADS": "1",
  }


def _tail(text: str, n: int = 6) -> str:
  return "\n".join(text.strip().splitlines()[-n:])


def _classify(rc: int | None, stdout: str, stderr: str, sentinel: str) -> str:
  lines = stdout.rstrip("\n").splitlines()
  if rc == 0 and lines and lines[-1] == sentinel:
    return "passed"
  blocked = [
      ln for ln in stderr.splitlines() if ln.startswith("sandbox: blocked")
  ]
  if blocked:
    return blocked[0][len("sandbox: ") :]
  if rc is not None and rc < 0:
    sig = -rc
    if sig == signal.SIGXCPU or sig == signal.SIGKILL:
      return "cpu time limit"
    if sig == signal.SIGXFSZ:
      return "file size limit"
    return f"killed by signal {signal.Signals(sig).name}"
  if "MemoryError" in stderr:
    return "memory limit (MemoryError)"
  if rc == 0:
    return "exited before the tests finished (sys.exit?)"
  last = [ln for ln in stderr.strip().splitlines() if ln.strip()]
  if last:
    return last[-1].strip()[:200]
  return f"exit status {rc}"


DEFAULT_LIMITS = SandboxLimits()


def run_program(program: str, limits: SandboxLimits = DEFAULT_LIMITS):
  """Runs one program (its tests included) in the sandbox.

  Args:
    program: Python source; it passes if it runs to its end.
    limits: resource limits.

  Returns:
    The ExecResult.
  """
  home = tempfile.mkdtemp(prefix="demix_sandbox_")
  sentinel = "DEMIX-SANDBOX-OK-" + secrets.token_hex(16)
  t0 = time.monotonic()
  try:
    with open(os.path.join(home, "program.py"), "w", encoding="utf-8") as f:
      f.write(program)
    out_path = os.path.join(home, ".stdout")
    err_path = os.path.join(home, ".stderr")
    prefix = network_namespace_prefix() if limits.network_namespace else ()
    cmd = list(prefix) + [
        sys.executable,
        "-I",
        "-B",
        "-c",
        _RUNNER,
        str(limits.cpu_s),
        str(limits.memory_bytes),
        str(limits.file_bytes),
        str(limits.max_procs),
    ]
    rc = None
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
      proc = subprocess.Popen(
          cmd,
          cwd=home,
          env=_environment(home),
          stdin=subprocess.PIPE,
          stdout=out,
          stderr=err,
          start_new_session=True,
          close_fds=True,
      )
      assert proc.stdin is not None  # stdin=PIPE
      try:
        proc.stdin.write((sentinel + "\n").encode())
        proc.stdin.close()
      except OSError:
        pass
      try:
        rc = proc.wait(timeout=limits.timeout_s)
      except subprocess.TimeoutExpired:
        rc = None
      finally:
        try:
          os.killpg(proc.pid, signal.SIGKILL)  # stragglers, forks included
        except (ProcessLookupError, PermissionError):
          pass
        proc.wait()
    seconds = time.monotonic() - t0
    with open(out_path, "rb") as f:
      stdout = f.read()[-4096:].decode("utf-8", "replace")
    with open(err_path, "rb") as f:
      stderr = f.read()[-8192:].decode("utf-8", "replace")
    if rc is None:
      reason = f"timeout after {limits.timeout_s:g}s (killed)"
    else:
      reason = _classify(rc, stdout, stderr, sentinel)
    return ExecResult(
        passed=reason == "passed",
        reason=reason,
        returncode=rc,
        seconds=seconds,
        stderr_tail=_tail(stderr),
    )
  finally:
    shutil.rmtree(home, ignore_errors=True)


def run_programs(
    programs: list[str], limits: SandboxLimits = DEFAULT_LIMITS
) -> list[ExecResult]:
  """`run_program` for each program, in parallel; results in input order."""
  workers = limits.workers or os.cpu_count() or 1
  workers = max(1, min(workers, len(programs)))
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    return list(pool.map(lambda p: run_program(p, limits), programs))
