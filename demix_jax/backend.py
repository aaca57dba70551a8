"""Refuses to run on the wrong backend: no silent CPU fallback on a TPU VM.

When another process holds the TPU (a stale run, a notebook), JAX logs a
warning and starts on the host CPU instead; a pod-sized config would then
"run" on the CPU for hours. `require_expected_platform` (called once by
`demix_jax.main`, after `jax.distributed` and before the pipeline) checks:

* whether this machine is a Cloud TPU VM (`tpu_vm_signs`: the TPU_* variables
  the VM image sets, or accelerator device files /dev/accel* or
  /dev/vfio/<N>);
* which platform is expected: the TPU there, or the first platform named in
  JAX_PLATFORMS where the user set it (JAX_PLATFORMS=cpu runs on the CPU on
  purpose);
* that `jax.default_backend()` is that platform.

Otherwise it exits with code 2 and names who holds the TPU: processes with
an accelerator device open (their /proc/PID/fd links) and the libtpu lock
file's owner. Every path is a parameter so tests can point them at fakes.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pwd
import re
import sys
from typing import Callable, Mapping, Sequence

LIBTPU_LOCKFILE = "/tmp/libtpu_lockfile"
# Set on Cloud TPU VMs by the image (one or more, depending on the version).
TPU_VM_ENV = ("TPU_WORKER_HOSTNAMES", "TPU_ACCELERATOR_TYPE", "TPU_WORKER_ID")
# jax.default_backend() names for JAX_PLATFORMS entries.
_PLATFORM_ALIASES = {"cuda": "gpu", "rocm": "gpu"}


@dataclasses.dataclass(frozen=True)
class Holder:
  """A process that has an accelerator device open."""

  pid: int
  user: str
  command: str
  device: str


def accelerator_devices(dev_dir: str = "/dev") -> list[str]:
  """TPU device files: /dev/accel* (v2-v4, v5e) and /dev/vfio/N (v5p, v6e)."""
  found = glob.glob(os.path.join(dev_dir, "accel*"))
  found += [
      p
      for p in glob.glob(os.path.join(dev_dir, "vfio", "*"))
      if os.path.basename(p).isdigit()
  ]
  return sorted(found)


def tpu_vm_signs(
    env: Mapping[str, str] | None = None, dev_dir: str = "/dev"
) -> list[str]:
  """Why this machine looks like a Cloud TPU VM (empty: it does not)."""
  env = os.environ if env is None else env
  signs = [f"{k}={env[k]}" for k in TPU_VM_ENV if env.get(k)]
  devices = accelerator_devices(dev_dir)
  if devices:
    signs.append(", ".join(devices))
  return signs


def _user(uid: int) -> str:
  try:
    return pwd.getpwuid(uid).pw_name
  except KeyError:
    return f"uid {uid}"


def _command(proc_dir: str, pid: int) -> str:
  try:
    with open(os.path.join(proc_dir, str(pid), "cmdline"), "rb") as f:
      raw = f.read()
  except OSError:
    return "?"
  return " ".join(a.decode(errors="replace") for a in raw.split(b"\0") if a)


def find_holders(
    devices: Sequence[str],
    proc_dir: str = "/proc",
    exclude_pid: int | None = None,
) -> tuple[list[Holder], int]:
  """Processes with one of `devices` open, from /proc/PID/fd links.

  Args:
    devices: device file paths (accelerator_devices()).
    proc_dir: the proc file system.
    exclude_pid: a pid to leave out (this process; default os.getpid()).

  Returns:
    (holders, how many processes could not be inspected: those of other
    users unless run as root).
  """
  exclude_pid = os.getpid() if exclude_pid is None else exclude_pid
  wanted = {os.path.realpath(d) for d in devices} | set(devices)
  holders, hidden = [], 0
  for entry in sorted(os.listdir(proc_dir)):
    if not entry.isdigit() or int(entry) == exclude_pid:
      continue
    fd_dir = os.path.join(proc_dir, entry, "fd")
    try:
      fds = os.listdir(fd_dir)
    except PermissionError:
      hidden += 1
      continue
    except OSError:  # exited meanwhile, or not a process directory
      continue
    for fd in fds:
      try:
        target = os.readlink(os.path.join(fd_dir, fd))
      except OSError:
        continue
      if target in wanted:
        pid = int(entry)
        try:
          uid = os.stat(os.path.join(proc_dir, entry)).st_uid
        except OSError:
          uid = -1
        holders.append(Holder(pid, _user(uid), _command(proc_dir, pid), target))
        break
  return holders, hidden


def describe_lockfile(path: str, proc_dir: str = "/proc") -> str | None:
  """A sentence on libtpu's lock file, or None if there is none."""
  try:
    st = os.stat(path)
    with open(path, errors="replace") as f:
      text = f.read(64).strip()
  except FileNotFoundError:
    return None
  except OSError as e:
    return f"the lock file {path} exists but cannot be read ({e})"
  out = f"the lock file {path} exists (owner {_user(st.st_uid)})"
  if re.fullmatch(r"\d+", text):
    pid = int(text)
    if os.path.isdir(os.path.join(proc_dir, text)):
      out += f", naming pid {pid}: {_command(proc_dir, pid)}"
    else:
      out += f", naming pid {pid}, which is gone (a stale lock)"
  return out


def expected_platform(
    env: Mapping[str, str] | None = None, dev_dir: str = "/dev"
) -> tuple[str | None, str]:
  """(the platform JAX must start on or None for any, why)."""
  env = os.environ if env is None else env
  named = [p.strip() for p in env.get("JAX_PLATFORMS", "").split(",")]
  named = [p for p in named if p]
  if named:
    return _PLATFORM_ALIASES.get(named[0], named[0]), (
        f"JAX_PLATFORMS={env['JAX_PLATFORMS']}"
    )
  signs = tpu_vm_signs(env, dev_dir)
  if signs:
    return "tpu", f"this is a Cloud TPU VM ({'; '.join(signs)})"
  return None, "no accelerator is expected here"


def check_platform(
    default_backend: Callable[[], str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    dev_dir: str = "/dev",
    proc_dir: str = "/proc",
    lockfile: str = LIBTPU_LOCKFILE,
    exclude_pid: int | None = None,
) -> str | None:
  """The problem with the backend JAX started, as a message, or None.

  Args:
    default_backend: returns the platform JAX runs on (default
      jax.default_backend; called only where a platform is expected).
    env: the environment (default os.environ).
    dev_dir: where the accelerator device files are.
    proc_dir: the proc file system (to name the TPU's holders).
    lockfile: libtpu's lock file.
    exclude_pid: left out of the holders (default this process).

  Returns:
    None when the backend is the expected one (or nothing is expected).
  """
  want, why = expected_platform(env, dev_dir)
  if want is None:
    return None
  if default_backend is None:
    import jax  # pylint: disable=g-import-not-at-top

    default_backend = jax.default_backend
  got = default_backend()
  if got == want:
    return None
  msg = f"{why}, but JAX started on {got!r}, not {want!r}."
  if want == "tpu":
    msg += " " + _who_holds_the_tpu(dev_dir, proc_dir, lockfile, exclude_pid)
    msg += (
        " Fix: stop that process (launch/run.sh stops stale runs on every"
        f" worker), remove a stale lock (sudo rm -f {lockfile}) and rerun;"
        " to run on the CPU on purpose set JAX_PLATFORMS=cpu."
    )
  else:
    msg += (
        f" Fix: make {want!r} available, or set JAX_PLATFORMS to the"
        " platform to run on."
    )
  return msg


def _who_holds_the_tpu(dev_dir, proc_dir, lockfile, exclude_pid) -> str:
  devices = accelerator_devices(dev_dir)
  holders, hidden = find_holders(devices, proc_dir, exclude_pid)
  parts = [
      f"pid {h.pid} (user {h.user}) holds {h.device}: {h.command}"
      for h in holders
  ]
  lock = describe_lockfile(lockfile, proc_dir)
  if lock:
    parts.append(lock)
  if not devices:
    parts.append("no accelerator device file is present")
  elif not holders and hidden:
    parts.append(
        f"{hidden} processes of other users could not be inspected (see"
        f" sudo lsof -w {' '.join(devices)})"
    )
  elif not holders:
    parts.append(f"no process has {', '.join(devices)} open")
  return "The TPU is busy or unusable: " + "; ".join(parts) + "."


def require_expected_platform(**kwargs) -> None:
  """`check_platform`, exiting with code 2 and the message on a problem."""
  problem = check_platform(**kwargs)
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    sys.stderr.flush()
    sys.exit(2)
