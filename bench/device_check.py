r"""The checks to run on a machine with one accelerator, in one process.

Command (from the repository root; `bench/device_check.sh` wraps it):

  python bench/device_check.py            # on the accelerator, 1.7B shapes
  python bench/device_check.py --dry      # CPU, tiny shapes, a few seconds

Four measurements, each side by side in this run:
  train      the train step (AdamW, clipping, remat: `training.step`) at the
             Qwen3-1.7B shape with the batch cut to fit one chip; median
             step time, tokens/s and MFU = model FLOPs/s (6 N per token plus
             causal attention, as the compile check counts them) over the
             bf16 matmul peak measured in the same run (and over the
             chip's nominal peak where the device kind is known);
  merge      the merge-and-evaluate engine (`merging.engine`, K components,
             a chunk of mixtures per call) against one pre-merged model's
             forward on the same rows: time per mixture over time per
             pre-merged model (the engine's overhead; 1.0 = free merging);
  generate   merge plus greedy decoding of a chunk of mixtures under vmap
             (`evals.generation.Generator.generate_mixtures`) against
             decoding the same prompts from one pre-merged model: the ratio
             time per mixture over time per pre-merged model;
  attention  the accelerator's kernel (`model.attention="auto"`: splash on
             TPU, cuDNN flash on GPU) against the XLA reference at the
             training sequence length: time ratio and the largest absolute
             difference of the outputs. With --dry the kernel is splash in
             Pallas interpret mode (a correctness check, not a timing).
Times are medians over repeats after a warm-up (compilation is reported on
its own). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from demix_jax.evals import generation as generation_lib
from demix_jax.evals import rows as rows_lib
from demix_jax.merging import engine as engine_lib
from demix_jax.merging import store as store_lib
from demix_jax.models import attention as attention_lib
from demix_jax.models import presets
from demix_jax.models import transformer
from demix_jax.training import flops as flops_lib
from demix_jax.training import optim
from demix_jax.training import step as step_lib
from demix_jax.training import synthetic

# Nominal dense bf16 peaks per chip (vendor data sheets), by device kind.
NOMINAL_PEAK = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
}


def nominal_peak(kind: str) -> float | None:
  for prefix, peak in NOMINAL_PEAK.items():
    if kind.startswith(prefix):
      return peak
  return None


def median_time(fn, repeats: int) -> tuple[float, float]:
  """(first call seconds incl. compilation, median of later calls)."""
  t = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return first, statistics.median(times)


def model_flops_per_token(cfg, seq_len: int, train: bool) -> float:
  """6 N (train) or 2 N (forward) plus causal attention, per token."""
  attn = cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len
  n = flops_lib.train_flops_per_token(cfg)
  return n + 6 * attn if train else n / 3 + 2 * attn


def perturbed(params, k: int, scale: float):
  """K components: the base plus independent noise (stand-ins for trained
  components; the timings do not depend on the values)."""
  out = []
  for i in range(k):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(100 + i), len(leaves))
    out.append(
        jax.tree.unflatten(
            treedef,
            [
                x + scale * jax.random.normal(kk, x.shape, x.dtype)
                for x, kk in zip(leaves, keys)
            ],
        )
    )
  return out


def check_train(cfg, args, peak: float) -> dict:
  params = transformer.init_params(cfg, jax.random.key(0))
  tx = optim.make_optimizer(optim.OptimConfig(peak_lr=3e-4), 1000, params)
  opt_state = tx.init(params)
  step = jax.jit(step_lib.make_train_step(cfg, tx), donate_argnums=(0, 1))
  it = synthetic.SyntheticIterator(args.batch, args.seq_len, cfg.vocab_size)
  batch = jax.device_put(dict(next(it)))
  state = {"p": params, "o": opt_state}

  def run():
    state["p"], state["o"], m = step(state["p"], state["o"], batch)
    return m["loss"]

  first, step_s = median_time(run, args.repeats)
  loss = float(run())
  tok_s = args.batch * args.seq_len / step_s
  flops = model_flops_per_token(cfg, args.seq_len, train=True) * tok_s
  return {
      "params": presets.num_params(cfg),
      "batch": args.batch,
      "seq_len": args.seq_len,
      "compile_and_first_step_s": first,
      "step_s": step_s,
      "tokens_per_s": tok_s,
      "model_flops_per_s": flops,
      "mfu_vs_measured_peak": flops / peak,
      "loss_finite": bool(np.isfinite(loss)),
  }


def _evaluator(cfg, args):
  base = transformer.init_params(cfg, jax.random.key(0))
  comps = perturbed(base, args.k, 0.02)
  rng = np.random.default_rng(1)
  toks = rng.integers(3, cfg.vocab_size, (args.rows, args.seq_len))
  held = rows_lib.heldout_rows(
      "device_check", toks, n_bytes=np.full(args.rows, 4.0 * args.seq_len)
  )
  suite = rows_lib.EvalSuite.build([held], args.rows)
  store = store_lib.ComponentStore.from_params(comps, base=base)
  ev = engine_lib.MixtureEvaluator(cfg, store, suite, chunk_size=args.chunk)
  return comps, ev


def check_merge(cfg, args) -> dict:
  comps, ev = _evaluator(cfg, args)
  alphas = np.random.default_rng(2).dirichlet(np.ones(args.k), args.chunk)
  alphas = alphas.astype(np.float32)
  w = jnp.asarray(alphas[0] / alphas[0].sum())
  merged = jax.jit(
      lambda cs: jax.tree.map(
          lambda *xs: sum(wi * x for wi, x in zip(w, xs)), *cs
      )
  )(comps)
  del comps
  first_e, engine_s = median_time(lambda: ev.evaluate_nll(alphas), args.repeats)
  first_f, floor_s = median_time(
      lambda: ev.evaluate_params_nll(merged), args.repeats
  )
  per_mixture = engine_s / args.chunk
  return {
      "components": args.k,
      "mixtures_per_call": args.chunk,
      "rows": args.rows,
      "compile_and_first_call_s": first_e,
      "engine_s_per_mixture": per_mixture,
      "premerged_forward_s": floor_s,
      "overhead_vs_premerged": per_mixture / floor_s,
  }


class _Bytes:
  """A byte codec whose EOS the model never emits (fixed decode lengths)."""

  def __init__(self, vocab_size: int):
    self.eos_id, self.pad_id = vocab_size + 7, 0

  def encode(self, text):
    return [b + 3 for b in text.encode("utf-8")]

  def decode(self, ids):
    return bytes(i - 3 for i in ids if 3 <= i < 259).decode("utf-8", "replace")


def check_generate(cfg, args) -> dict:
  _, ev = _evaluator(cfg, dataclasses.replace(args, rows=1))
  store = ev.store
  rng = np.random.default_rng(3)
  prompts = [
      bytes(rng.integers(97, 123, args.prompt_len)).decode()
      for _ in range(args.prompts)
  ]
  reqs = [generation_lib.Request(p, (), args.new_tokens) for p in prompts]
  gen = generation_lib.Generator(
      cfg,
      _Bytes(cfg.vocab_size),
      generation_lib.GenerationConfig(
          max_new_tokens=args.new_tokens,
          batch_size=args.prompts,
          max_prompt_tokens=args.prompt_len,
          prompt_bucket=args.prompt_len,
          steps_per_call=args.new_tokens,
          mixtures_per_call=args.chunk,
      ),
  )
  spec = ev.spec

  def merge(stacked_and_base, alpha):
    return store_lib.merge_stacked(spec, *stacked_and_base, alpha)

  alphas = rng.dirichlet(np.ones(args.k), args.chunk).astype(np.float32)
  merged = jax.jit(merge)((store.stacked, store.base), jnp.asarray(alphas[0]))
  first_e, engine_s = median_time(
      lambda: gen.generate_mixtures(
          reqs, alphas, stacked=(store.stacked, store.base), merge=merge
      ),
      args.repeats,
  )
  first_f, floor_s = median_time(
      lambda: gen.generate(merged, reqs), args.repeats
  )
  per_mixture = engine_s / args.chunk
  return {
      "prompts": args.prompts,
      "prompt_len": args.prompt_len,
      "new_tokens": args.new_tokens,
      "mixtures_per_call": args.chunk,
      "compile_and_first_call_s": first_e,
      "engine_s_per_mixture": per_mixture,
      "premerged_generate_s": floor_s,
      "overhead_vs_premerged": per_mixture / floor_s,
  }


def check_attention(cfg, args) -> dict:
  kernel = "splash" if args.dry else attention_lib.resolve("auto")
  b, t, h, kv, d = (
      1,
      args.attn_seq_len,
      cfg.n_heads,
      cfg.n_kv_heads,
      cfg.head_dim,
  )
  rng = np.random.default_rng(4)
  dt = jnp.bfloat16
  q = jnp.asarray(rng.standard_normal((b, t, h, d)), dt)
  k = jnp.asarray(rng.standard_normal((b, t, kv, d)), dt)
  v = jnp.asarray(rng.standard_normal((b, t, kv, d)), dt)
  # Two packed documents, so the segment mask is exercised too.
  ids = np.ones((b, t), np.int32)
  ids[:, t // 3 :] = 2
  ids = jnp.asarray(ids)
  mask = transformer.attention_mask(ids)
  segs = attention_lib.Segments(ids)
  ref_fn = jax.jit(lambda q, k, v: attention_lib.attend("xla", q, k, v, mask))
  out = {"kernel": kernel, "seq_len": t}
  if kernel == "xla":
    out["note"] = "no accelerator kernel on this backend"
    return out
  ker_fn = jax.jit(lambda q, k, v: attention_lib.attend(kernel, q, k, v, segs))
  ref = ref_fn(q, k, v)
  got = ker_fn(q, k, v)
  out["max_abs_diff"] = float(
      jnp.max(jnp.abs(ref.astype(jnp.float32) - got.astype(jnp.float32)))
  )
  _, ref_s = median_time(lambda: ref_fn(q, k, v), args.repeats)
  _, ker_s = median_time(lambda: ker_fn(q, k, v), args.repeats)
  out.update(xla_s=ref_s, kernel_s=ker_s, speedup_vs_xla=ref_s / ker_s)
  return out


@dataclasses.dataclass
class Args:
  dry: bool
  batch: int
  seq_len: int
  repeats: int
  k: int
  chunk: int
  rows: int
  prompts: int
  prompt_len: int
  new_tokens: int
  attn_seq_len: int


def parse(argv=None) -> Args:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--dry", action="store_true", help="CPU, tiny shapes")
  ap.add_argument("--batch", type=int, default=None)
  ap.add_argument("--seq_len", type=int, default=None)
  ap.add_argument("--repeats", type=int, default=None)
  a = ap.parse_args(argv)
  if a.dry:
    d = dict(batch=2, seq_len=64, repeats=2, k=3, chunk=2, rows=2)
    d.update(prompts=2, prompt_len=8, new_tokens=4, attn_seq_len=256)
  else:
    # One chip: 4 x 8192 tokens per step keeps the 1.7B train state
    # (f32 weights + AdamW, ~27 GB) and remat'd activations in 80+ GB HBM.
    d = dict(batch=4, seq_len=8192, repeats=5, k=3, chunk=4, rows=2)
    d.update(prompts=8, prompt_len=256, new_tokens=64, attn_seq_len=8192)
  for name in ("batch", "seq_len", "repeats"):
    if getattr(a, name) is not None:
      d[name] = getattr(a, name)
  return Args(dry=a.dry, **d)


def main(argv=None) -> dict:
  args = parse(argv)
  if args.dry:
    cfg = dataclasses.replace(presets.PRESETS["tiny_1m"], dtype="bfloat16")
  else:
    cfg = presets.PRESETS["qwen3_1p7b"]
  dev = jax.devices()[0]
  kind = dev.device_kind
  n = 512 if args.dry else 8192
  peak = flops_lib.measure_matmul_flops(n, jnp.bfloat16)
  result = {
      "backend": jax.default_backend(),
      "device_kind": kind,
      "jax": jax.__version__,
      "dry": args.dry,
      "model": "tiny_1m (bf16)" if args.dry else "qwen3_1p7b",
      "measured_bf16_peak_flops": peak,
      "nominal_bf16_peak_flops": nominal_peak(kind),
  }
  for name, fn in (
      ("train", lambda: check_train(cfg, args, peak)),
      ("merge", lambda: check_merge(cfg, args)),
      ("generate", lambda: check_generate(cfg, args)),
      ("attention", lambda: check_attention(cfg, args)),
  ):
    t = time.perf_counter()
    try:
      result[name] = fn()
    except Exception as e:  # pylint: disable=broad-except
      # One failed check must not hide the others' figures.
      result[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
    result[name]["wall_s"] = time.perf_counter() - t
    print(f"[{name}] {json.dumps(result[name])}", flush=True)
  if result["nominal_bf16_peak_flops"] and "model_flops_per_s" in result.get(
      "train", {}
  ):
    result["train"]["mfu_vs_nominal_peak"] = (
        result["train"]["model_flops_per_s"] / result["nominal_bf16_peak_flops"]
    )
  print(json.dumps(result), flush=True)
  return result


if __name__ == "__main__":
  out = main()
  sys.exit(
      1
      if any(
          "error" in out[k] for k in ("train", "merge", "generate", "attention")
      )
      else 0
  )
