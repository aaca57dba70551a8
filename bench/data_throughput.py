r"""Tokens/s of the Grain training loader on the default offline corpora.

Builds (or reuses) the three offline corpora and a 2048-piece tokenizer in
a cache dir, then times the training iterator of demix_jax.data.pipeline
(shuffle -> repeat -> tokenize -> pack -> mix -> batch) on a 3-source
mixture, after a warm-up. Variants run side by side in one process:
inline, thread prefetch, and grain read threads. The tiny trainer on 2
CPU cores does ~8k tokens/s (0.87M params, batch 16x128, as measured on a
2-core CPU box); the loader must beat that by >= 10x so data never bounds a CPU
run.

Command (CPU; ~30 s once the corpora are cached, ~40 s more the first time):
  python bench/data_throughput.py [--steps 300] [--cache_dir /tmp/dj_cache]
The last line is one JSON object with `loader_tokens_per_s` (the default
configuration: in-process, thread prefetch of 2 batches).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top
from demix_jax.data import pipeline
from demix_jax.data import sources
from demix_jax.data import tokenizer

TRAINER_TOKENS_PER_S = 8_000  # 0.87M model, 2 CPU cores
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


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--steps", type=int, default=300)
  ap.add_argument("--cache_dir", default="/tmp/demix_jax_bench_cache")
  ap.add_argument("--seq_len", type=int, default=128)
  ap.add_argument("--batch", type=int, default=16)
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
  print(
      f"tiny trainer: ~{TRAINER_TOKENS_PER_S:,} tokens/s; "
      f"loader / trainer = {default / TRAINER_TOKENS_PER_S:.0f}x"
  )
  print(
      json.dumps(
          {
              "loader_tokens_per_s": default,
              "trainer_tokens_per_s_reference": TRAINER_TOKENS_PER_S,
              "ratio": round(default / TRAINER_TOKENS_PER_S, 1),
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
