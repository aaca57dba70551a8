"""Training throughput and MFU of the tiny presets on this machine.

Command (from the repository root):

  python bench/train_throughput.py [--presets tiny_1m,tiny_5m,tiny_20m]
      [--batch 16] [--seq_len 128] [--steps 8]

For each preset it times the trainer's jitted train step (AdamW, clipping,
the same function `training.trainer.train` runs) on one device with batches
already on device, after one warm-up step. MFU = 6 * N * tokens/s divided by
the peak measured in the same run: the best time of a large float32
`jnp.dot` (2048^3) on the same device. The last line is one JSON object:
{"peak_flops": ..., "presets": {name: {"tokens_per_s", "mfu", ...}},
 "tokens_per_s": {name: ...}, "mfu": {name: ...}}.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp

from demix_jax import models
from demix_jax.training import flops as flops_lib
from demix_jax.training import optim
from demix_jax.training import step as step_lib
from demix_jax.training import synthetic


def bench_preset(name: str, batch: int, seq_len: int, steps: int) -> dict:
  cfg = models.get_preset(name)
  params = models.init_params(cfg, jax.random.key(0))
  tx = optim.make_optimizer(optim.OptimConfig(peak_lr=1e-3), 1000, params)
  opt_state = tx.init(params)
  step = jax.jit(step_lib.make_train_step(cfg, tx), donate_argnums=(0, 1))
  it = synthetic.SyntheticIterator(batch, seq_len, cfg.vocab_size)
  batches = [
      jax.device_put({k: v for k, v in next(it).items()}) for _ in range(4)
  ]
  t = time.perf_counter()
  params, opt_state, m = step(params, opt_state, batches[0])
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t
  times = []
  for i in range(steps):
    t = time.perf_counter()
    params, opt_state, m = step(params, opt_state, batches[i % len(batches)])
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  # Median step time: robust to other processes sharing the cores.
  step_s = sorted(times)[len(times) // 2]
  tok_s = batch * seq_len / step_s
  return {
      "params": models.num_params(cfg),
      "step_ms": 1e3 * step_s,
      "tokens_per_s": tok_s,
      "compile_s": compile_s,
      "model_flops_per_s": flops_lib.train_flops_per_token(cfg) * tok_s,
      "final_loss": float(m["loss"]),
  }


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--presets", default="tiny_1m,tiny_5m,tiny_20m")
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--seq_len", type=int, default=128)
  ap.add_argument("--steps", type=int, default=8)
  args = ap.parse_args()
  peak_before = flops_lib.measure_matmul_flops(2048, jnp.float32)
  results = {}
  for name in args.presets.split(","):
    results[name] = bench_preset(name, args.batch, args.seq_len, args.steps)
    print(name, json.dumps(results[name]), flush=True)
  peak_after = flops_lib.measure_matmul_flops(2048, jnp.float32)
  # The higher of two measurements (before and after) is the peak.
  peak = max(peak_before, peak_after)
  for r in results.values():
    r["mfu"] = r["model_flops_per_s"] / peak
  print(
      json.dumps(
          {
              "device": str(jax.devices()[0]),
              "peak_flops": peak,
              "peak_flops_before_after": [peak_before, peak_after],
              "batch": args.batch,
              "seq_len": args.seq_len,
              "presets": results,
              "tokens_per_s": {
                  k: r["tokens_per_s"] for k, r in results.items()
              },
              "mfu": {k: r["mfu"] for k, r in results.items()},
          }
      )
  )


if __name__ == "__main__":
  main()
