"""The kernel's isolation of one sandboxed process: bubblewrap + rlimits.

`command(argv, limits, seccomp_fd)` wraps an interpreter command line in

  prlimit --cpu --as --fsize --nofile --core -- bwrap <namespaces, mounts>

so the limits are hard limits set before `bwrap` execs (a process can
lower a hard limit but never raise it without CAP_SYS_RESOURCE in the
initial user namespace, which nothing in the sandbox has), and `bwrap`
gives the process:

* new user, PID, mount, network, IPC, UTS and cgroup namespaces
  (`--unshare-all --unshare-user`), uid/gid 65534 inside, no capabilities
  (`--cap-drop ALL`), no further user namespaces (`--disable-userns`);
* a root of its own: an empty read-only tmpfs holding only `/usr` (and the
  host's `/bin`, `/lib*`, `/sbin` links), the interpreter and its standard
  library read-only (its `site-packages` hidden under an empty tmpfs, so no
  installed package, benchmark data included, is readable), a minimal
  `/dev`, a `/proc` of its own PID namespace, and a private writable `/tmp`
  (tmpfs of `scratch_bytes`) as cwd and HOME. Nothing of `/root`, `/home`,
  `/work`, `/run`, `/var`, the host's `/tmp` or the caller's cwd exists in
  it, so no host file can be read or written and no Unix socket of the host
  is reachable by path; abstract Unix sockets and every IP socket belong to
  the new network namespace (loopback only, nobody else in it);
* a seccomp filter (`seccomp_filter`): process creation (fork, vfork,
  clone without CLONE_THREAD, clone3) fails with EPERM/ENOSYS, so a fork
  bomb cannot start (threads still work); ptrace, process_vm_*, keyctl,
  mount, unshare, setns, bpf, perf_event_open, userfaultfd, io_uring and
  module/kexec calls fail with EPERM; other architectures' syscall ABIs
  (x32, 32-bit) kill the process;
* `--die-with-parent` and `--new-session`: it dies when the caller does,
  and cannot inject input into the caller's terminal. Killing the outer
  `bwrap` kills the namespace's PID 1 and with it every process inside.

RLIMIT_NPROC is not used: it counts every process of the same host user
and is ignored for root, so it cannot bound one sandbox; the seccomp rule
above does.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import shutil
import struct
import sys
import sysconfig

from demix_jax.config_lib import ConfigError

ISOLATIONS = ("bwrap", "none_unsafe")
FIELD = "eval.generation.sandbox.isolation"
INSTALL = "apt-get install bubblewrap"


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
  """Isolation and resource limits of each program.

  Attributes:
    timeout_s: wall-clock limit of one program and its tests; every process
      of the run is killed after it.
    cpu_s: RLIMIT_CPU (CPU seconds; SIGXCPU, then SIGKILL one second later).
    memory_bytes: RLIMIT_AS (virtual address space).
    file_bytes: RLIMIT_FSIZE (largest file it may write, its output too).
    max_procs: 0 = no new processes (seccomp; threads are allowed). Kept
      for the "none_unsafe" mode, where the in-process guard refuses fork.
    workers: parallel programs (0 = os.cpu_count()).
    network_namespace: "none_unsafe" only: run under `unshare --net` when
      that works (under "bwrap" the network namespace is always new).
    isolation: "bwrap" (kernel isolation, the default) or "none_unsafe"
      (plain processes with best-effort in-process guards: only for
      machines without bubblewrap, never for untrusted models).
    scratch_bytes: size of the private writable /tmp (bwrap).
    open_files: RLIMIT_NOFILE.
  """

  timeout_s: float = 10.0
  cpu_s: int = 10
  memory_bytes: int = 1 << 30
  file_bytes: int = 16 << 20
  max_procs: int = 0
  workers: int = 0
  network_namespace: bool = True
  isolation: str = "bwrap"
  scratch_bytes: int = 64 << 20
  open_files: int = 64

  def __post_init__(self):
    if self.isolation not in ISOLATIONS:
      raise ValueError(
          f"isolation must be one of {ISOLATIONS}, got {self.isolation!r}"
      )


# ----------------------------------------------------------------- seccomp
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# name: (x86_64, aarch64); None where the architecture lacks the call.
_SYSCALLS = {
    "fork": (57, None),
    "vfork": (58, None),
    "clone": (56, 220),
    "clone3": (435, 435),
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "unshare": (272, 97),
    "setns": (308, 268),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "kexec_load": (246, 104),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
}
_DENIED = [
    n for n in _SYSCALLS if n not in ("fork", "vfork", "clone", "clone3")
]
_CLONE_THREAD = 0x00010000
_EPERM, _ENOSYS = 1, 38
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL = 0x80000000
# BPF opcodes: ld w abs, jeq k, jge k, jset k, ret k.
_LD, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06


def seccomp_filter(machine: str | None = None) -> bytes:
  """The classic-BPF program (struct sock_filter[]) for bwrap --seccomp."""
  machine = machine or platform.machine()
  if machine not in _AUDIT_ARCH:
    raise ValueError(f"no seccomp filter for architecture {machine!r}")
  col = 0 if machine == "x86_64" else 1
  nr = {n: v[col] for n, v in _SYSCALLS.items() if v[col] is not None}
  # (code, jump if true, jump if false, k) with labels for the jumps, or a
  # label name alone; resolved to relative offsets below.
  prog: list = [
      (_LD, None, None, 4),  # seccomp_data.arch
      (_JEQ, None, "kill", _AUDIT_ARCH[machine]),
      (_LD, None, None, 0),  # seccomp_data.nr
  ]
  if machine == "x86_64":  # the x32 ABI sets bit 30 of the number
    prog.append((_JGE, "kill", None, 0x40000000))
  for name in _DENIED + ["fork", "vfork"]:
    if name in nr:
      prog.append((_JEQ, "eperm", None, nr[name]))
  prog += [
      (_JEQ, "enosys", None, nr["clone3"]),  # libc falls back to clone
      (_JEQ, "clone", None, nr["clone"]),
      (_RET, None, None, _RET_ALLOW),
      "clone",
      (_LD, None, None, 16),  # low word of args[0]: the clone flags
      (_JSET, "allow", "eperm", _CLONE_THREAD),
      "allow",
      (_RET, None, None, _RET_ALLOW),
      "kill",
      (_RET, None, None, _RET_KILL),
      "eperm",
      (_RET, None, None, _RET_ERRNO | _EPERM),
      "enosys",
      (_RET, None, None, _RET_ERRNO | _ENOSYS),
  ]
  labels, pc = {}, 0
  for ins in prog:
    if isinstance(ins, str):
      labels[ins] = pc
    else:
      pc += 1
  out, pc = [], 0
  for ins in prog:
    if isinstance(ins, str):
      continue
    code, jt, jf, k = ins
    jt = labels[jt] - pc - 1 if jt else 0
    jf = labels[jf] - pc - 1 if jf else 0
    out.append(struct.pack("=HBBI", code, jt, jf, k))
    pc += 1
  return b"".join(out)


# ------------------------------------------------------------------ bwrap
@functools.lru_cache(maxsize=1)
def interpreter() -> str:
  """The base interpreter (not a venv's wrapper): it runs with -I -S."""
  exe = getattr(sys, "_base_executable", None) or sys.executable
  return os.path.realpath(exe)


@functools.lru_cache(maxsize=1)
def _runtime_binds() -> tuple[str, ...]:
  """bwrap arguments that make /usr, the interpreter and stdlib visible."""
  args = ["--ro-bind", "/usr", "/usr"]
  for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
    path = "/" + top
    if os.path.islink(path):
      args += ["--symlink", os.readlink(path), path]
    elif os.path.isdir(path):
      args += ["--ro-bind", path, path]
  exe = interpreter()
  libdir = sysconfig.get_config_var("LIBDIR") or ""
  stdlib = sysconfig.get_path(
      "stdlib", vars={"installed_base": sys.base_prefix}
  )
  bound = ["/usr"]
  for path in (exe, libdir, stdlib):
    if not path or not os.path.exists(path):
      continue
    if not any(path == b or path.startswith(b + "/") for b in bound):
      args += ["--ro-bind", path, path]
      bound.append(path)
  base = {"base": sys.base_prefix, "platbase": sys.base_prefix}
  hidden = {sysconfig.get_path(k, vars=base) for k in ("purelib", "platlib")}
  for path in sorted(hidden):
    if os.path.isdir(path):  # installed packages (benchmark data among them)
      args += ["--perms", "0555", "--tmpfs", path]
  return tuple(args)


ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
}


def rlimit_args(limits: SandboxLimits) -> list[str]:
  """prlimit options: hard limits (CPU: soft, then hard one second later)."""
  return [
      f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}",
      f"--as={limits.memory_bytes}",
      f"--fsize={limits.file_bytes}",
      f"--nofile={limits.open_files}",
      "--core=0",
  ]


def command(
    argv: list[str], limits: SandboxLimits, seccomp_fd: int
) -> list[str]:
  """`argv` (an interpreter command line) run isolated by bwrap."""
  bwrap = shutil.which("bwrap") or "bwrap"
  prlimit = shutil.which("prlimit") or "prlimit"
  cmd = [prlimit, *rlimit_args(limits), "--", bwrap]
  cmd += ["--unshare-all", "--unshare-user", "--disable-userns"]
  cmd += ["--uid", "65534", "--gid", "65534", "--hostname", "sandbox"]
  cmd += ["--cap-drop", "ALL", "--die-with-parent", "--new-session"]
  cmd += _runtime_binds()
  cmd += ["--dev", "/dev", "--proc", "/proc"]
  cmd += ["--size", str(limits.scratch_bytes), "--tmpfs", "/tmp"]
  cmd += ["--remount-ro", "/", "--remount-ro", "/dev"]
  cmd += ["--chdir", "/tmp", "--clearenv"]
  for k, v in ENV.items():
    cmd += ["--setenv", k, v]
  cmd += ["--seccomp", str(seccomp_fd), "--", *argv]
  return cmd


def seccomp_fd() -> int:
  """A fresh read fd holding the seccomp program (bwrap reads it once)."""
  fd = os.memfd_create("demix-sandbox-seccomp", 0)
  os.write(fd, seccomp_filter())
  os.lseek(fd, 0, os.SEEK_SET)
  return fd


def missing_tools() -> list[str]:
  return [t for t in ("bwrap", "prlimit") if shutil.which(t) is None]


def not_installed_error() -> ConfigError:
  return ConfigError(
      FIELD,
      f"bubblewrap is needed to run model-written programs isolated, and"
      f" {', '.join(missing_tools())} is not on PATH",
      f"install it ({INSTALL}; prlimit is in util-linux), or set {FIELD}"
      " = 'none_unsafe' to run them without isolation (unsafe: only for"
      " trusted code)",
  )
