r"""prepare and prepared-shard loader throughput, and loader memory vs size.

Measured side by side in one run, on text that ships with Python (the
standard library's .py files, as JSONL documents of ~4 KB):
  1. tokenizer alone, one thread: a byte-level BPE (Hugging Face
     `tokenizers`, trained here on a sample, GPT-2 style pre-tokenizer as
     Qwen3's) and the default SentencePiece BPE, tokens/s per core;
  2. prepare per core: `beam_pipeline.process_unit` (read JSONL, tokenize,
     hash split, write ArrayRecord shards) on one core with the BPE, and the
     whole Beam pipeline (in-process runner, one worker) for its overhead;
  3. the shard loader per host: `make_train_iterator` over the prepared
     shards (seq 8192, this host's batch of rows), tokens/s, against what the
     1.7B train step needs per host on v5p-64: global batch x seq_len of
     configs/qwen3_1p7b.py over 8 hosts (32 chips, 4 per host) at the
     README's compile-check step-time bound (>= 3.75 s);
  4. loader peak RSS at 1x and 10x corpus size, each in its own process
     (synthetic token shards, the same number of rows read).
Per-core rates are given per wall second and per CPU second of the process
(on a shared machine the second is the per-core figure). Targets: prepare
>= 500k tokens per CPU second with the byte-level BPE; loader
>= 10x the step's need per host; RSS within 10% from 1x to 10x.

Command (CPU):
  python bench/prepare_throughput.py [--mb 16] [--rss_tokens 10000000]
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

# One tokenizer thread: figures are per core.
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top
import numpy as np

from demix_jax.prepare import manifest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP_BOUND_S = 3.75  # README, compile check: qwen3_1p7b train on v5p-64
V5P64_HOSTS = 8  # 32 chips, 4 per v5p host
SEQ = 8192


class BpeVocab:
  """The byte-level BPE behind the names prepare uses (encode_batch, ...)."""

  def __init__(self, tok_json: str):
    from tokenizers import Tokenizer

    self._json = tok_json
    self._tok = Tokenizer.from_str(tok_json)
    self.fingerprint = hashlib.sha256(tok_json.encode()).hexdigest()
    self.eos_id = self._tok.token_to_id("<|endoftext|>")
    self.path = ""

  def encode_batch(self, texts):
    out = self._tok.encode_batch(list(texts), add_special_tokens=False)
    return [e.ids for e in out]

  def __getstate__(self):
    return {"json": self._json}

  def __setstate__(self, state):
    self.__init__(state["json"])


class SyntheticIds:
  """Stand-in tokenizer identity for the synthetic RSS shards."""

  fingerprint = "synthetic-ids"
  eos_id = 1


def _stdlib_docs(mb: float) -> list[str]:
  lib = os.path.dirname(os.__file__)
  docs, total = [], 0
  for d, _, files in sorted(os.walk(lib)):
    if "site-packages" in d:
      continue
    for f in sorted(files):
      if not f.endswith(".py"):
        continue
      try:
        with open(os.path.join(d, f), encoding="utf-8") as fh:
          text = fh.read()
      except (UnicodeDecodeError, OSError):
        continue
      for i in range(0, len(text), 4096):
        docs.append(text[i : i + 4096])
        total += len(docs[-1])
        if total >= mb * (1 << 20):
          return docs
  return docs


def _train_bpe(docs: list[str], vocab_size: int) -> str:
  from tokenizers import Tokenizer
  from tokenizers import decoders
  from tokenizers import models
  from tokenizers import pre_tokenizers
  from tokenizers import trainers

  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size,
      special_tokens=["<|endoftext|>"],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
  )
  tok.train_from_iterator(docs, trainer)
  return tok.to_str()


def _rate(fn, docs) -> tuple[float, float]:
  """(tokens per wall second, tokens per CPU second of this process)."""
  t0, c0 = time.perf_counter(), time.process_time()
  n = 0
  for i in range(0, len(docs), 1024):
    n += sum(len(x) for x in fn(docs[i : i + 1024]))
  return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def _write_synthetic(out: str, tokens: int, shard_tokens: int) -> None:
  """Prepared-format shards of random ids (the loader does not care)."""
  from array_record.python import array_record_module

  rng = np.random.default_rng(0)
  shards, n, k = [], 0, 0
  while n < tokens:
    name = manifest.shard_name("train", k, 0)
    w = array_record_module.ArrayRecordWriter(f"{out}/{name}", "group_size:1")
    docs = ids = 0
    while ids < shard_tokens and n < tokens:
      m = int(rng.integers(200, 2000))
      w.write(manifest.encode_ids(rng.integers(2, 50_000, m)))
      docs, ids, n = docs + 1, ids + m, n + m
    w.close()
    shards.append(dict(path=name, documents=docs, ids=ids, tokens=ids + docs))
    k += 1
  split = {
      "documents": sum(s["documents"] for s in shards),
      "ids": sum(s["ids"] for s in shards),
      "tokens": sum(s["tokens"] for s in shards),
      "shards": shards,
  }
  m = {
      "format_version": manifest.FORMAT_VERSION,
      "dtype": manifest.DTYPE,
      "eos_id": SyntheticIds.eos_id,
      "tokenizer_fingerprint": SyntheticIds.fingerprint,
      "splits": {"train": split, "heldout": dict(split, shards=shards[:1])},
  }
  with open(f"{out}/{manifest.MANIFEST}", "w") as f:
    json.dump(m, f)


def _loader(directory: str, vocab, rows: int, batch_rows: int):
  from demix_jax.data import pipeline
  from demix_jax.data import sources

  spec = sources.spec_from_dict(
      "s", {"kind": "prepared", "data_dir": directory}
  )
  src = {"s": sources.Source(spec)}
  return (
      pipeline.make_train_iterator(
          src, {"s": 1.0}, vocab, SEQ, batch_rows, seed=0, prefetch=2
      ),
      rows // batch_rows,
  )


def _rss_child(directory: str, rows: int) -> None:
  import psutil

  it, steps = _loader(directory, SyntheticIds(), rows, 16)
  for _ in range(steps):
    next(it)
  peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  rss = psutil.Process().memory_info().rss
  print(json.dumps({"peak_rss_mib": peak_kib / 1024, "rss_mib": rss / 2**20}))


def _rss(directory: str, rows: int) -> dict:
  out = subprocess.run(
      [sys.executable, __file__, "--rss_child", directory, "--rows", str(rows)],
      capture_output=True,
      text=True,
      check=True,
  )
  return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--mb", type=float, default=16, help="corpus MiB")
  ap.add_argument("--bpe_vocab", type=int, default=16384)
  ap.add_argument("--rss_tokens", type=int, default=10_000_000)
  ap.add_argument("--rows", type=int, default=512, help="rows per RSS run")
  ap.add_argument("--rss_child", default="")
  ap.add_argument("--dir", default="")
  args = ap.parse_args()
  if args.rss_child:
    _rss_child(args.rss_child, args.rows)
    return
  from demix_jax.data import sources
  from demix_jax.data import tokenizer
  from demix_jax.prepare import beam_pipeline
  from demix_jax.prepare import runner
  from demix_jax.prepare import units

  work = args.dir or tempfile.mkdtemp(prefix="demix_prepare_bench_")
  docs = _stdlib_docs(args.mb)
  random.Random(0).shuffle(docs)
  corpus = f"{work}/corpus.jsonl"
  with open(corpus, "w") as f:
    f.writelines(json.dumps({"text": t}) + "\n" for t in docs)
  n_chars = sum(len(t) for t in docs)
  print(f"corpus: {len(docs):,} documents, {n_chars / 2**20:.1f} MiB")
  t0 = time.perf_counter()
  bpe = BpeVocab(_train_bpe(docs[: len(docs) // 4], args.bpe_vocab))
  print(f"byte-level BPE ({args.bpe_vocab}) trained in"
        f" {time.perf_counter() - t0:.0f}s")  # fmt: skip
  spm = tokenizer.train_vocab(
      {"c": docs}, 8192, f"{work}/spm.model", sample_chars=2_000_000
  )
  bpe_tok_s, bpe_cpu = _rate(bpe.encode_batch, docs)
  spm_tok_s, spm_cpu = _rate(spm.encode_batch, docs)
  print(f"tokenizer alone, 1 thread: byte-level BPE {bpe_tok_s:,.0f} tok/s"
        f" ({bpe_cpu:,.0f} per CPU second), SentencePiece {spm_tok_s:,.0f}"
        f" ({spm_cpu:,.0f}); BPE / SentencePiece {bpe_cpu / spm_cpu:.2f}")  # fmt: skip

  spec = sources.spec_from_dict("c", {"kind": "jsonl", "paths": [corpus]})
  opts = units.PrepareOptions(out_dir=f"{work}/unit", unit_bytes=1 << 40)
  unit_list, _ = units.plan_source(spec, opts)
  job = dict(source="c", index=0, n_units=1, dir=f"{work}/unit/c",
             unit=unit_list[0], spec=units.spec_dict(spec), cache="")  # fmt: skip
  t0, c0 = time.perf_counter(), time.process_time()
  rec = beam_pipeline.process_unit(job, bpe, 1024)
  unit_s, unit_cpu = time.perf_counter() - t0, time.process_time() - c0
  tokens = sum(s["tokens"] for s in rec["splits"].values())
  prep_core, prep_cpu = tokens / unit_s, tokens / unit_cpu
  beam_opts = units.PrepareOptions(out_dir=f"{work}/beam", unit_bytes=4 << 20)
  t0 = time.perf_counter()
  runner.prepare_sources({"c": spec}, bpe, beam_opts)
  beam_s = time.perf_counter() - t0
  print(f"prepare on 1 core (process_unit, BPE): {prep_core:,.0f} tok/s"
        f" ({prep_cpu:,.0f} per CPU second; {tokens:,} tokens in"
        f" {unit_s:.1f}s); whole Beam pipeline"
        f" (in-process, 1 worker, incl. pre-pass and start):"
        f" {tokens / beam_s:,.0f} tok/s")  # fmt: skip

  import configs.qwen3_1p7b as q  # pylint: disable=import-outside-toplevel

  cfg = q.get_config()
  gbs, seq = cfg.train.global_batch_size, cfg.data.seq_len
  need = gbs * seq / V5P64_HOSTS / STEP_BOUND_S
  batch_rows = gbs // V5P64_HOSTS // 8  # a slice of the host's batch
  it, steps = _loader(f"{work}/beam/c", bpe, batch_rows * 24, batch_rows)
  next(it)
  t0 = time.perf_counter()
  n = sum(next(it)["tokens"].size for _ in range(steps))
  loader = n / (time.perf_counter() - t0)
  print(f"loader per host: {loader:,.0f} tok/s; the 1.7B step needs"
        f" {gbs} x {seq} / {V5P64_HOSTS} hosts / {STEP_BOUND_S} s (README"
        f" compile-check bound, v5p-64) = {need:,.0f} tok/s per host:"
        f" {loader / need:.1f}x")  # fmt: skip

  rss = {}
  for mult in (1, 10):
    d = f"{work}/rss{mult}x"
    os.makedirs(d, exist_ok=True)
    _write_synthetic(d, args.rss_tokens * mult, 4_000_000)
    rss[mult] = _rss(d, args.rows)
    print(f"loader at {mult}x ({args.rss_tokens * mult:,} tokens): peak RSS"
          f" {rss[mult]['peak_rss_mib']:.0f} MiB")  # fmt: skip
  growth = rss[10]["peak_rss_mib"] / rss[1]["peak_rss_mib"] - 1
  result = {
      "date": "2026-12-03",
      "machine": "2-core x86 CPU box, loaded",
      "bpe_tokenize_tokens_per_s_per_core": round(bpe_tok_s),
      "bpe_tokenize_tokens_per_cpu_s": round(bpe_cpu),
      "spm_tokenize_tokens_per_s_per_core": round(spm_tok_s),
      "spm_tokenize_tokens_per_cpu_s": round(spm_cpu),
      "prepare_tokens_per_s_per_core": round(prep_core),
      "prepare_tokens_per_cpu_s": round(prep_cpu),
      "prepare_beam_in_process_tokens_per_s": round(tokens / beam_s),
      "prepare_target_met": prep_cpu >= 500_000,
      "loader_tokens_per_s_per_host": round(loader),
      "step_need_tokens_per_s_per_host": round(need),
      "loader_over_need": round(loader / need, 2),
      "loader_target_met": loader / need >= 10,
      "rss_1x_mib": round(rss[1]["peak_rss_mib"], 1),
      "rss_10x_mib": round(rss[10]["peak_rss_mib"], 1),
      "rss_growth": round(growth, 4),
      "rss_target_met": abs(growth) <= 0.10,
  }
  print(json.dumps(result))


if __name__ == "__main__":
  main()
