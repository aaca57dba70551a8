r"""Tokens/s of the Grain training loader on the default offline corpora.

Builds (or reuses) the three offline corpora and a 2048-piece tokenizer in
a cache dir, then times the training iterator of demix_jax.data.pipeline
(shuffle -> repeat -> tokenize -> pack -> mix -> batch) on a 3-source
mixture, after a warm-up. Variants run side by side in one process:
inline, thread prefetch, and grain read threads. In the same run it times
the trainer's jitted train step on the demo's model (`--preset`, default
tiny_1m) at the same batch shape (median of `--train_steps` steps after a
compile step), so the printed ratio loader / trainer compares two numbers
measured on the same machine under the same load: the loader must beat the
trainer by a wide margin so data never bounds a CPU run.

Command (CPU):
  python bench/data_throughput.py [--steps 300] [--cache_dir /tmp/dj_cache]
The last line is one JSON object with `loader_tokens_per_s` (the default
configuration: in-process, thread prefetch of 2 batches),
`trainer_tokens_per_s` and their `ratio`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top
import jax

from demix_jax import models
from demix_jax.data import pipeline
from demix_jax.data import sources
from demix_jax.data import tokenizer
from demix_jax.training import optim
from demix_jax.training import synthetic
from demix_jax.training import trainer

CORPORA = {"general": "wiki", "math": "math", "code": "code"}


def _time(make, steps: int, warmup: int = 20) -> tuple[float, float]:
  """(tokens/s, seconds to first batch) of an iterator factory."""
  t0 = time.perf_counter()
  it = make()
  first = next(it)
  first_s = time.perf_counter() - t0
  for _ in range(warmup):
    next(it)
  t0 = time.perf_counter()
  n = 0
  for _ in range(steps):
    n += next(it)["tokens"].size
  rate = n / (time.perf_counter() - t0)
  del first
  if hasattr(it, "close"):
    it.close()
  return rate, first_s


def trainer_tokens_per_s(
    preset: str, batch: int, seq_len: int, steps: int
) -> tuple[float, float]:
  """(tokens/s, compile seconds) of the trainer's jitted step on `preset`.

  Batches are on device already (what the loader must keep up with is the
  step itself); the rate is the median step, robust to other processes.
  """
  cfg = models.get_preset(preset)
  params = models.init_params(cfg, jax.random.key(0))
  tx = optim.make_optimizer(optim.OptimConfig(peak_lr=1e-3), 1000, params)
  opt_state = tx.init(params)
  step = jax.jit(trainer.make_train_step(cfg, tx), donate_argnums=(0, 1))
  it = synthetic.SyntheticIterator(batch, seq_len, cfg.vocab_size)
  batches = [jax.device_put(dict(next(it))) for _ in range(4)]
  t0 = time.perf_counter()
  params, opt_state, m = step(params, opt_state, batches[0])
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  times = []
  for i in range(steps):
    t0 = time.perf_counter()
    params, opt_state, m = step(params, opt_state, batches[i % len(batches)])
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  step_s = sorted(times)[len(times) // 2]
  return batch * seq_len / step_s, compile_s


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--steps", type=int, default=300)
  ap.add_argument("--cache_dir", default="/tmp/demix_jax_bench_cache")
  ap.add_argument("--seq_len", type=int, default=128)
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--preset", default="tiny_1m")
  ap.add_argument("--train_steps", type=int, default=20)
  args = ap.parse_args()

  t0 = time.perf_counter()
  specs = {
      n: sources.spec_from_dict(n, {"kind": "offline", "corpus": c})
      for n, c in CORPORA.items()
  }
  srcs = sources.open_sources(specs, args.cache_dir)
  texts = {n: s.docs("train") for n, s in srcs.items()}
  build_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  vocab = tokenizer.train_vocab(
      texts,
      2048,
      f"{args.cache_dir}/spm/demo2048.model",
      seed=0,
      sample_chars=2_000_000,
  )
  vocab_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  counts = {n: s.token_count(vocab, "train") for n, s in srcs.items()}
  count_s = time.perf_counter() - t0
  print(
      f"corpora ready in {build_s:.1f}s, tokenizer {vocab_s:.1f}s, "
      f"token counts {count_s:.1f}s: {counts}"
  )

  weights = {"general": 0.5, "math": 0.25, "code": 0.25}
  variants = {
      "inline": dict(prefetch=0),
      "thread_prefetch": dict(prefetch=2),
      "read_threads_2": dict(prefetch=2, read_threads=2),
  }
  results = {}
  for name, kw in variants.items():
    make = lambda kw=kw: pipeline.make_train_iterator(
        srcs, weights, vocab, args.seq_len, args.batch, seed=0, **kw
    )
    rate, first = _time(make, args.steps)
    results[name] = {
        "tokens_per_s": round(rate),
        "first_batch_s": round(first, 3),
    }
    print(f"{name:16s} {rate:12,.0f} tokens/s  first batch {first:.2f}s")
  default = results["thread_prefetch"]["tokens_per_s"]
  train_rate, compile_s = trainer_tokens_per_s(
      args.preset, args.batch, args.seq_len, args.train_steps
  )
  print(
      f"trainer ({args.preset}, measured now) {train_rate:12,.0f} tokens/s"
      f" (compile {compile_s:.1f}s); loader / trainer ="
      f" {default / train_rate:.1f}x"
  )
  print(
      json.dumps(
          {
              "loader_tokens_per_s": default,
              "trainer_tokens_per_s": round(train_rate),
              "trainer_preset": args.preset,
              "trainer_compile_s": round(compile_s, 2),
              "ratio": round(default / train_rate, 1),
              "variants": results,
              "token_counts": counts,
              "seq_len": args.seq_len,
              "batch": args.batch,
              "steps": args.steps,
          }
      )
  )


if __name__ == "__main__":
  main()
