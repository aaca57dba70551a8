"""Cloud TPU accelerator types as compile-only devices (needs libtpu).

`devices("v5p-64")` returns the abstract devices of that slice from
`jax.experimental.topologies`, so the compile check can lower and compile
with XLA:TPU on a machine without TPUs (pip install -r
requirements-tpu.txt). Names follow Cloud TPU accelerator types: v4-N and
v5p-N count TensorCores (2 per chip), v5litepod-N and v6e-N count chips.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re

from demix_jax import backend


@dataclasses.dataclass(frozen=True)
class Chip:
  """Per-chip figures (Cloud TPU documentation)."""

  name: str  # the generation as jax's topology names spell it
  cores_per_chip: int  # what N in the accelerator type counts per chip
  hbm_bytes: int
  peak_bf16_flops: float
  dims: int  # physical torus dimensions (3: v4/v5p, 2: v5e/v6e)
  hbm_bandwidth: float  # bytes/s per chip


# HBM bandwidth per chip from the Cloud TPU system-architecture pages
# (cloud.google.com/tpu/docs/v4, v5p, v5e, v6e): v4 1200 GB/s, v5p 2765
# GB/s, v5e 819 GB/s, v6e 1640 GB/s.
CHIPS = {
    "v4": Chip("v4", 2, 32 * 2**30, 275e12, 3, 1200e9),
    "v5p": Chip("v5p", 2, 95 * 2**30, 459e12, 3, 2765e9),
    "v5litepod": Chip("v5e", 1, 16 * 2**30, 197e12, 2, 819e9),
    "v6e": Chip("v6e", 1, 32 * 2**30, 918e12, 2, 1640e9),
}


# Other spellings of a generation, for the suggestion in parse's error.
_ALIASES = {
    "v5e": "v5litepod",
    "v5lite": "v5litepod",
    "v5litepod": "v5litepod",
    "v6": "v6e",
    "trillium": "v6e",
    "v5": "v5p",
}
# Largest slice of each generation that parse accepts (in N).
_MAX_N = {"v4": 4096, "v5p": 8192, "v5litepod": 256, "v6e": 256}
_KINDS = (
    "v4-N, v5p-N (N TensorCores: 2 per chip), v5litepod-N, v6e-N (N chips);"
    " the chips a power of two"
)


def known_names() -> list[str]:
  """Every accelerator type `parse` accepts, smallest slice first."""
  out = []
  for gen, chip in CHIPS.items():
    chips = 1
    while chips * chip.cores_per_chip <= _MAX_N[gen]:
      out.append(f"{gen}-{chips * chip.cores_per_chip}")
      chips *= 2
  return out


def closest(accelerator: str) -> str | None:
  """The known accelerator type a misspelt one most likely means."""
  m = re.fullmatch(r"\s*([a-z]+\d*[a-z]*)[-_:]?(\d*)\s*", accelerator.lower())
  if not m:
    found = difflib.get_close_matches(accelerator, known_names(), n=1)
    return found[0] if found else None
  gen = _ALIASES.get(m.group(1), m.group(1))
  if gen not in CHIPS:
    found = difflib.get_close_matches(gen, list(CHIPS), n=1, cutoff=0.5)
    if not found:
      return None
    gen = found[0]
  names = [n for n in known_names() if n.startswith(gen + "-")]
  if not m.group(2):
    return names[0]
  want = int(m.group(2))
  return min(names, key=lambda n: abs(int(n.split("-")[1]) - want))


def parse(accelerator: str) -> tuple[Chip, int]:
  """'v5p-64' -> (its Chip, number of chips).

  Raises:
    ValueError: not a known accelerator type; the message lists the kinds
      and the closest known name.
  """
  m = re.fullmatch(r"(v4|v5p|v5litepod|v6e)-(\d+)", accelerator.strip())
  chip, chips = None, 0
  if m:
    chip = CHIPS[m.group(1)]
    n = int(m.group(2))
    chips = n // chip.cores_per_chip
    if n > _MAX_N[m.group(1)] or n % chip.cores_per_chip or chips < 1:
      chip = None
    elif chips & (chips - 1):
      chip = None
  if chip is None:
    guess = closest(accelerator)
    hint = f" Did you mean --topology={guess}?" if guess else ""
    raise ValueError(
        f"--topology={accelerator!r} is not a Cloud TPU accelerator type this"
        f" check knows. Fix: use {_KINDS}, e.g. v5p-64, v5litepod-16,"
        f" v6e-8.{hint}"
    )
  return chip, chips


def physical_shape(chip: Chip, chips: int) -> tuple[int, ...]:
  """The torus shape of a slice: 3-D for v4/v5p (2x2x1, 2x2x2, 2x2x4,
  2x4x4, 4x4x4, 4x4x8, ...), 2-D for v5e/v6e (2x2, 2x4, 4x4, 4x8, ...)."""
  if chip.dims == 2:
    if chips == 1:
      return (1, 1)
    a = 2 ** (int(math.log2(chips)) // 2)
    return (a, chips // a)
  if chips < 4:
    return (1, 1, chips)
  # Doubling the smallest axis from 2x2x1 (the last on ties): 2x2x2,
  # 2x2x4, 2x4x4, 4x4x4, 4x4x8, ...
  shape = [1, 2, 2]
  while math.prod(shape) < chips:
    shape[0] *= 2
    shape.sort()
  return tuple(shape)


def devices(accelerator: str):
  """(the slice's compile-only devices, its Chip)."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top

  chip, chips = parse(accelerator)
  quiet_libtpu_off_tpu_vm(accelerator)
  shape = physical_shape(chip, chips)
  per_host: tuple[int, ...] = (2, 2, 1) if chip.dims == 3 else (2, 2)
  per_host = tuple(min(a, b) for a, b in zip(per_host, shape))
  desc = topologies.get_topology_desc(
      platform="tpu",
      topology_name=f"{chip.name}:{'x'.join(map(str, shape))}",
      chip_config_name="default",
      chips_per_host_bounds=per_host + (1,) * (3 - len(per_host)),
      num_slices=1,
  )
  return list(desc.devices), chip


def quiet_libtpu_off_tpu_vm(accelerator: str, env=None, dev_dir="/dev"):
  """Off a TPU VM, tells libtpu the slice so its start-up stays quiet.

  Loading libtpu for compile-only devices runs its host start-up, which
  off a TPU VM asks the metadata server what it runs on and prints several
  lines of errors (no accelerator type, "unexpected worker hostname").
  Naming the slice and a single local worker answers those questions; on a
  TPU VM (where the image sets them) nothing changes.
  """
  env = os.environ if env is None else env
  if backend.tpu_vm_signs(env, dev_dir):
    return
  env.setdefault("TPU_ACCELERATOR_TYPE", accelerator)
  env.setdefault("TPU_WORKER_HOSTNAMES", "localhost")


def process_count(devices) -> int:
  """Hosts of a slice: the distinct process indices of its devices."""
  return len({d.process_index for d in devices})


def libtpu_available() -> bool:
  try:
    import libtpu  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True
