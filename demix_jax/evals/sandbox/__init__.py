"""Runs model-written programs isolated by the kernel, judged from outside.

  checks = [sandbox.Check(program=src, tests=asserts, trusted=helpers,
                          remote=("f",)), ...]
  results = sandbox.run_checks(checks, sandbox.SandboxLimits())

Isolation (`eval.generation.sandbox.isolation`):

* "bwrap" (default): every program runs under bubblewrap (`apt-get install
  bubblewrap`) with new user/PID/mount/network/IPC/UTS namespaces, uid
  65534, no capabilities, a read-only root holding only /usr and the
  Python runtime (no installed packages), a private tmpfs /tmp, hard
  rlimits set before exec, and a seccomp filter that refuses process
  creation (details in `isolation`). `check_isolation()` runs a trivial
  program that way and raises a ConfigError naming the fix when it cannot.
* "none_unsafe": plain processes with the in-process guards of `guards`
  (the program can undo them) and a warning at every run. An explicit,
  loud opt-in for machines without bubblewrap and trusted code only.

Verdict. The trusted test code (HumanEval's `check`, MBPP's asserts) runs
in a second process, the judge, sandboxed the same way. The program's
process (the worker) loads the program and answers calls; arguments and
return values cross the pipe between the two as plain data (`wire`), and
the judge rebuilds builtin values from them. The verdict is the judge's:
the tests ran to their end. It is read from the judge's stdout, which the
program cannot reach.

Threat model. The program is hostile: it may use any syscall the filter
lets through, ctypes, signals, forks, its own exit status and output, and
may rewrite everything in its own process (the worker's code included).
It is trusted for nothing: its answers are just values to test.

* Can it make a wrong solution pass? Its return values reach the tests
  only as builtin data, so no object of its own answers `==`, `bool()` or
  anything else for itself; exiting early (`sys.exit`, `os._exit`, an
  exception in `__del__`), printing markers, patching builtins or
  `assert` in its own process, or closing or corrupting the pipe, all fail
  the check. It never receives the tests or the expected values, and no
  file holding them (the benchmark data lives in installed packages) is in
  its file system.
* Can it harm the host or other programs? No host file is visible except
  /usr and the interpreter, read-only; no network of any family (the
  namespace's loopback only; host Unix sockets are not in its file
  system; abstract ones are per network namespace); no other process is
  visible or signalable (PID namespace); nothing outlives the run (the
  namespace is killed with its PID 1, and `--die-with-parent` kills it if
  the runner dies); memory, CPU, file size, open files and scratch space
  are bounded; it cannot fork.
* Not covered: kernel vulnerabilities (bubblewrap relies on the kernel's
  namespaces and seccomp), side channels (timing, cache, Spectre-class),
  CPU and memory-bandwidth contention with other programs running at the
  same time, and the benchmark's own test code, which is trusted (it runs
  sandboxed too, but its verdict is believed). Programs see only the
  standard library (no numpy).
"""

from demix_jax.evals.sandbox.isolation import ISOLATIONS
from demix_jax.evals.sandbox.isolation import SandboxLimits
from demix_jax.evals.sandbox.runner import DEFAULT_LIMITS
from demix_jax.evals.sandbox.runner import Check
from demix_jax.evals.sandbox.runner import ExecResult
from demix_jax.evals.sandbox.runner import check_isolation
from demix_jax.evals.sandbox.runner import run_check
from demix_jax.evals.sandbox.runner import run_checks
from demix_jax.evals.sandbox.runner import run_program
from demix_jax.evals.sandbox.runner import run_programs

__all__ = [
    "Check",
    "DEFAULT_LIMITS",
    "ExecResult",
    "ISOLATIONS",
    "SandboxLimits",
    "check_isolation",
    "run_check",
    "run_checks",
    "run_program",
    "run_programs",
]
