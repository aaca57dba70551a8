"""The compile check's input checks and platform choice (before any work).

Every bad flag, config or topology name exits with code 2 and one line that
names the flag and the fix (the exit-code table of `demix_jax.main`), before
JAX starts a backend or anything is lowered.

The platform the default backend starts on (`choose_platform`):
  * with `--topology`, the CPU: the compile uses the topology's compile-only
    devices, and process and device counts come from them, so nothing here
    starts the TPU runtime. On worker 0 of a multi-host slice starting it
    would wait for every other host; on a laptop with libtpu installed it
    would print libtpu's start-up errors.
  * without it, `--platform` if given, else JAX_PLATFORMS if set, else the
    TPU on a TPU VM, else the CPU where libtpu is installed (the same
    start-up errors otherwise), else JAX's own choice.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import sys
from typing import Mapping, NoReturn, Sequence

from absl import flags

from demix_jax import aot
from demix_jax import backend
from demix_jax.aot import topology as topology_lib
from demix_jax.config_lib import ConfigError

STEPS = ("train", "merge", "generate")
PLATFORMS = ("cpu", "tpu", "cuda", "rocm")


def fail(message: str) -> NoReturn:
  """Prints `error: message` and exits with code 2 (bad input)."""
  print(f"error: {message}", file=sys.stderr)
  sys.stderr.flush()
  sys.exit(2)


def _cause(e: BaseException | None, kind) -> BaseException | None:
  seen = set()
  while e is not None and id(e) not in seen:
    if isinstance(e, kind):
      return e
    seen.add(id(e))
    e = e.__cause__ or e.__context__
  return None


def flag_error_message(e: BaseException) -> str:
  """One line for a bad flag, config file or --config override."""
  config_error = _cause(e, ConfigError)
  if config_error is not None:
    return str(config_error)
  text = str(e).strip()
  if isinstance(e, OSError) and "Failed loading config file" in text:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (
        f"--config: cannot load the config file ({'; '.join(lines[1:])})."
        " Fix: give a path such as configs/qwen3_1p7b.py[:runlocal]"
    )
  missing = _cause(e, (KeyError, AttributeError))
  if missing is not None and not isinstance(e, flags.Error):
    return (
        f"a --config override names no config field ({missing}). Fix: check"
        " the spelling against the config file"
    )
  if isinstance(e, flags.Error):
    return f"{text.rstrip('.')}. Fix: see --helpshort"
  return (
      f"--config: loading the config raised {type(e).__name__}: {text}."
      " Fix: correct the config file or its argument"
  )


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with bad flags exiting 2 instead of 1."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except  # flags, config files, overrides
    fail(flag_error_message(e))


def load_config(holder):
  """The config flag's value; a file that fails to load exits 2."""
  try:
    config = holder.value
    if config is None:
      fail("--config is required. Fix: --config=configs/qwen3_1p7b.py")
    config.keys()  # a file that failed to load raises on first use
    return config
  except Exception as e:  # pylint: disable=broad-except  # any error of the user's file
    fail(flag_error_message(e))


def check_steps(steps: Sequence[str]) -> list[str]:
  """--steps entries, each train, merge or generate (closest suggested)."""
  steps = [s.strip() for s in steps if s.strip()]
  if not steps:
    fail(
        "--steps is empty. Fix: --steps=train,merge,generate (or some of"
        " them)"
    )
  for s in steps:
    if s not in STEPS:
      guess = difflib.get_close_matches(s, STEPS, n=1, cutoff=0.4)
      hint = f" (did you mean {guess[0]}?)" if guess else ""
      fail(
          f"--steps: unknown step {s!r}{hint}. Fix: use train, merge,"
          " generate"
      )
  return steps


def check_mesh(text: str) -> dict[str, int] | None:
  """--mesh as {axis: size} (None when empty)."""
  if not text:
    return None
  try:
    axes = aot.parse_mesh(text)
  except ValueError as e:
    fail(f"{e}. Fix: e.g. --mesh=data:2,fsdp:16 (one size may be -1)")
  if not axes:
    fail("--mesh names no axis. Fix: e.g. --mesh=data:2,fsdp:16")
  return axes


def check_devices(n: int, topology: str, mesh_axes) -> None:
  """--devices: not negative, not with --topology, not below the mesh."""
  if n < 0:
    fail(f"--devices={n} must be >= 0 (0: the mesh size)")
  if n and topology:
    fail(
        "--devices sets fake CPU devices and cannot be used with --topology"
        f" (the topology {topology} fixes the devices). Fix: drop --devices"
    )
  need = aot.mesh_size(mesh_axes) if mesh_axes else 0  # 0: not known here
  if n and need and n != need:
    fail(
        f"--devices={n} but the mesh {dict(mesh_axes)} needs {need} devices."
        f" Fix: --devices={need}, or a --mesh of {n} devices"
    )


def check_topology(name: str):
  """(Chip, chips) of --topology, or exit 2 listing the kinds and a guess."""
  try:
    return topology_lib.parse(name)
  except ValueError as e:
    fail(str(e))


def choose_platform(
    topology: str,
    platform: str,
    env: Mapping[str, str] | None = None,
    dev_dir: str = "/dev",
) -> str | None:
  """The jax_platforms value to set before any backend starts (None: JAX's).

  See the module docstring for the order.
  """
  env = os.environ if env is None else env
  if platform and platform not in PLATFORMS:
    fail(f"--platform={platform!r} unknown. Fix: one of {', '.join(PLATFORMS)}")
  if topology:
    if platform and platform != "cpu":
      fail(
          f"--platform={platform} with --topology: the compile is for the"
          " topology's devices and the default backend stays on the CPU."
          " Fix: drop --platform"
      )
    return "cpu"
  if platform:
    return platform
  if env.get("JAX_PLATFORMS"):
    return None  # the user's choice; JAX reads it
  if backend.tpu_vm_signs(env, dev_dir):
    return "tpu"
  if importlib.util.find_spec("libtpu") is not None:
    return "cpu"
  return None
