"""FLOP accounting for MFU: model FLOPs per token and a measured peak.

MFU here uses the common 6 * N * tokens estimate (forward + backward matmuls
of N parameters; attention score FLOPs are ignored, which understates MFU
slightly for long sequences). On machines without a published peak (CPUs),
the denominator is measured: a large square matmul timed in the same process.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from demix_jax.models import presets
from demix_jax.models.transformer import ModelConfig


def train_flops_per_token(cfg: ModelConfig) -> float:
  """6 * N: training FLOPs per token of a model with N parameters."""
  return 6.0 * presets.num_params(cfg)


_PEAK_CACHE: dict[tuple, float] = {}


def measure_matmul_flops(
    n: int = 2048,
    dtype=jnp.float32,
    repeats: int = 5,
    device: jax.Device | None = None,
) -> float:
  """Measured FLOP/s of one device on an n x n x n matmul (best of repeats).

  Args:
    n: matrix size.
    dtype: operand dtype.
    repeats: timed runs after one warm-up; the fastest is used.
    device: the device (default: the first local device).

  Returns:
    FLOP/s (2 n^3 per matmul).
  """
  device = device or jax.local_devices()[0]
  # One measurement per process: a pipeline trains many runs, and the peak
  # of a device does not change between them.
  key = (n, jnp.dtype(dtype).name, repeats, device.id)
  if key in _PEAK_CACHE:
    return _PEAK_CACHE[key]
  a = jax.device_put(jnp.ones((n, n), dtype), device)
  b = jax.device_put(jnp.ones((n, n), dtype), device)
  f = jax.jit(jnp.dot)
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t)
  _PEAK_CACHE[key] = 2.0 * n**3 / best
  return _PEAK_CACHE[key]
