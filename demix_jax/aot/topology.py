"""Cloud TPU accelerator types as compile-only devices (needs libtpu).

`devices("v5p-64")` returns the abstract devices of that slice from
`jax.experimental.topologies`, so the compile check can lower and compile
with XLA:TPU on a machine without TPUs (pip install -r
requirements-tpu.txt). Names follow Cloud TPU accelerator types: v4-N and
v5p-N count TensorCores (2 per chip), v5litepod-N and v6e-N count chips.
"""

from __future__ import annotations

import dataclasses
import math
import re


@dataclasses.dataclass(frozen=True)
class Chip:
  """Per-chip figures (Cloud TPU documentation)."""

  name: str  # the generation as jax's topology names spell it
  cores_per_chip: int  # what N in the accelerator type counts per chip
  hbm_bytes: int
  peak_bf16_flops: float
  dims: int  # physical torus dimensions (3: v4/v5p, 2: v5e/v6e)


CHIPS = {
    "v4": Chip("v4", 2, 32 * 2**30, 275e12, 3),
    "v5p": Chip("v5p", 2, 95 * 2**30, 459e12, 3),
    "v5litepod": Chip("v5e", 1, 16 * 2**30, 197e12, 2),
    "v6e": Chip("v6e", 1, 32 * 2**30, 918e12, 2),
}


def parse(accelerator: str) -> tuple[Chip, int]:
  """'v5p-64' -> (its Chip, number of chips)."""
  m = re.fullmatch(r"(v4|v5p|v5litepod|v6e)-(\d+)", accelerator.strip())
  if not m:
    raise ValueError(
        f"--topology={accelerator!r}; use a Cloud TPU accelerator type: "
        "v4-N, v5p-N (N TensorCores), v5litepod-N, v6e-N (N chips)"
    )
  chip = CHIPS[m.group(1)]
  n = int(m.group(2))
  if n % chip.cores_per_chip or n < chip.cores_per_chip:
    raise ValueError(f"{accelerator}: N must be a multiple of 2")
  chips = n // chip.cores_per_chip
  if chips & (chips - 1):
    raise ValueError(f"{accelerator}: {chips} chips is not a power of two")
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


def libtpu_available() -> bool:
  try:
    import libtpu  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True
