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

Loader memory of raw sources read in place: for a raw Parquet source
(row groups of `--rss_group_rows` rows) and a paragraph text source, a
synthetic corpus of `--rss_docs` documents (1x) and 10 times as many (10x)
is written, and each is opened (index, hash split) and read for the same
rows by the training iterator in a fresh process, which reports its peak
RSS; the same 10x files read whole into a list, as these kinds were read
before, are measured beside them. In-place RSS should stay within 10% from
1x to 10x.

Command (CPU):
  python bench/data_throughput.py [--steps 300] [--cache_dir /tmp/dj_cache]
  python bench/data_throughput.py --rss_only   # just the memory part
The last line is one JSON object with `loader_tokens_per_s` (the default
configuration: in-process, thread prefetch of 2 batches),
`trainer_tokens_per_s` and their `ratio`, and `raw_rss` (per kind: peak
MiB at 1x and 10x, their growth, the whole-file reading's peak at 10x).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top
import numpy as np

from demix_jax import models
from demix_jax.data import pipeline
from demix_jax.data import sources
from demix_jax.data import tokenizer
from demix_jax.training import optim
from demix_jax.training import step as step_lib
from demix_jax.training import synthetic

CORPORA = {"general": "wiki", "math": "math", "code": "code"}
_MACHINE = {"date": "2026-12-03", "machine": "2-core x86 CPU box, loaded"}


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


RSS_KINDS = ("parquet", "paragraph")


def _synthetic_docs(n: int, seed: int) -> list[str]:
  """n documents of 20-300 words drawn from a fixed 5,000-word list."""
  rng = np.random.default_rng(12345)
  letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
  words = [
      "".join(rng.choice(letters, int(k))) for k in rng.integers(2, 9, 5000)
  ]
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    ids = rng.zipf(1.3, int(rng.integers(20, 300))) % len(words)
    out.append(f"doc {seed}.{i}: " + " ".join(words[j] for j in ids))
  return out


def write_raw_corpus(kind: str, path: str, n_docs: int, group_rows: int):
  """A raw corpus of n_docs documents, written in chunks of 10k documents."""
  if kind == "parquet":
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("text", pa.string())])
    with pq.ParquetWriter(path, schema) as w:
      for k, start in enumerate(range(0, n_docs, 10_000)):
        docs = _synthetic_docs(min(10_000, n_docs - start), k)
        w.write_table(pa.table({"text": docs}), row_group_size=group_rows)
  else:
    with open(path, "w", encoding="utf-8") as f:
      for k, start in enumerate(range(0, n_docs, 10_000)):
        docs = _synthetic_docs(min(10_000, n_docs - start), k)
        f.write("".join(d + "\n\n" for d in docs))


def _raw_spec(kind: str, path: str):
  if kind == "parquet":
    return sources.spec_from_dict("s", {"kind": "parquet", "paths": [path]})
  d = {"kind": "text", "paths": [path], "unit": "paragraph"}
  return sources.spec_from_dict("s", d)


def _peak_rss_mib() -> float:
  """This process's peak RSS since it started (MiB).

  /proc's VmHWM belongs to the process's own memory map, made at exec;
  getrusage's ru_maxrss would also count the parent's RSS at the fork.
  """
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _ListSource:
  """A source whose training documents are a list in memory."""

  prepared = None

  def __init__(self, docs: list[str]):
    self._docs = docs

  def docs(self, split: str) -> list[str]:
    del split
    return self._docs


def rss_child(kind, path, vocab_path, mode, rows, seq_len, batch) -> None:
  """Opens one raw source, reads `rows` rows, prints peak RSS (a JSON line).

  mode "in_place" reads through the source's index; "whole" first reads
  every document into a list, the way these kinds were read before.
  """
  import psutil

  vocab = tokenizer.load_vocab(vocab_path)
  t0 = time.perf_counter()
  src = sources.Source(_raw_spec(kind, path))
  if mode == "whole":
    src = _ListSource(list(src.docs("train")))
  docs = src.docs("train")
  open_s = time.perf_counter() - t0
  it = pipeline.make_train_iterator(
      {"s": src}, {"s": 1.0}, vocab, seq_len, batch, seed=0, prefetch=2
  )
  t0 = time.perf_counter()
  n = sum(next(it)["tokens"].size for _ in range(max(1, rows // batch)))
  read_s = time.perf_counter() - t0
  peak = _peak_rss_mib()
  print(
      json.dumps(
          {
              "peak_rss_mib": round(peak, 1),
              "rss_mib": round(psutil.Process().memory_info().rss / 2**20, 1),
              "docs": len(docs),
              "open_s": round(open_s, 2),
              "loader_tokens_per_s": round(n / read_s),
          }
      )
  )


def raw_rss(args) -> dict:
  """Peak loader RSS of each raw kind at 1x and 10x (one process each)."""
  with tempfile.TemporaryDirectory(prefix="demix_raw_rss_") as work:
    return _raw_rss(args, work)


def _raw_rss(args, work: str) -> dict:
  vocab_path = f"{work}/v.model"
  tokenizer.train_vocab(
      {"s": _synthetic_docs(2000, 99)}, 512, vocab_path, sample_chars=300_000
  )
  out = {}
  for kind in RSS_KINDS:
    runs = {}
    for mult, mode in ((1, "in_place"), (10, "in_place"), (10, "whole")):
      path = f"{work}/{kind}{mult}x" + (
          ".parquet" if kind == "parquet" else ".txt"
      )
      if not os.path.exists(path):
        write_raw_corpus(kind, path, args.rss_docs * mult, args.rss_group_rows)
      cmd = [sys.executable, os.path.abspath(__file__), "--rss_child", kind,
             path, vocab_path, mode, "--seq_len", str(args.seq_len),
             "--batch", str(args.batch), "--rss_rows", str(args.rss_rows)]  # fmt: skip
      res = subprocess.run(cmd, capture_output=True, text=True, check=True)
      r = json.loads(res.stdout.strip().splitlines()[-1])
      r["file_mib"] = round(os.path.getsize(path) / 2**20, 1)
      runs[f"{mult}x_{mode}"] = r
      print(
          f"raw {kind:9s} {mult:2d}x {mode:8s}: {r['docs']:>9,} docs,"
          f" file {r['file_mib']:7.1f} MiB, peak RSS {r['peak_rss_mib']:7.1f}"
          f" MiB, open {r['open_s']:6.1f}s,"
          f" loader {r['loader_tokens_per_s']:>9,} tokens/s"
      )
    one, ten = runs["1x_in_place"], runs["10x_in_place"]
    growth = ten["peak_rss_mib"] / one["peak_rss_mib"] - 1
    whole = runs["10x_whole"]["peak_rss_mib"]
    print(
        f"raw {kind}: in place 10x / 1x peak RSS = {1 + growth:.3f};"
        f" whole-file 10x / in place 10x = {whole / ten['peak_rss_mib']:.2f}"
    )
    out[kind] = {
        "rss_1x_mib": one["peak_rss_mib"],
        "rss_10x_mib": ten["peak_rss_mib"],
        "rss_growth": round(growth, 4),
        "rss_growth_mib": round(ten["peak_rss_mib"] - one["peak_rss_mib"], 1),
        "rss_target_met": abs(growth) <= 0.10,
        "whole_file_rss_10x_mib": whole,
        "runs": runs,
    }
  return out


def trainer_tokens_per_s(
    preset: str, batch: int, seq_len: int, steps: int
) -> tuple[float, float]:
  """(tokens/s, compile seconds) of the trainer's jitted step on `preset`.

  Batches are on device already (what the loader must keep up with is the
  step itself); the rate is the median step, robust to other processes.
  """
  import jax

  cfg = models.get_preset(preset)
  params = models.init_params(cfg, jax.random.key(0))
  tx = optim.make_optimizer(optim.OptimConfig(peak_lr=1e-3), 1000, params)
  opt_state = tx.init(params)
  step = jax.jit(step_lib.make_train_step(cfg, tx), donate_argnums=(0, 1))
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
  ap.add_argument("--rss_docs", type=int, default=20_000, help="docs at 1x")
  ap.add_argument("--rss_group_rows", type=int, default=1000)
  ap.add_argument("--rss_rows", type=int, default=512, help="rows per run")
  ap.add_argument("--rss_only", action="store_true")
  ap.add_argument("--rss_child", nargs=4, default=None)
  args = ap.parse_args()
  if args.rss_child:
    rss_child(*args.rss_child, args.rss_rows, args.seq_len, args.batch)
    return
  if args.rss_only:
    print(json.dumps({"raw_rss": raw_rss(args), **_MACHINE}))
    return

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
  rss = raw_rss(args)
  print(
      json.dumps(
          {
              **_MACHINE,
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
              "raw_rss": rss,
          }
      )
  )


if __name__ == "__main__":
  main()
