"""Self-check of the generative scorers: gold answers must score (near) 1.

  python -m demix_jax.evals.selfcheck \
      --benchmarks=humaneval,mbpp,gsm8k,minerva_math [--control=shuffled]

feeds each benchmark's gold completion (HumanEval `canonical_solution`,
MBPP `code`, the GSM8K gold chain of thought ending "So the answer is N.",
the MATH `solution` with its \\boxed answer) through the same scorers as
generated text (`tasks.score`) and prints, per benchmark, the ids that
fail and why, then one JSON object {benchmark: score} as its last line.

`--control=shuffled` checks each gold completion against ANOTHER problem's
tests or answer (a seeded derangement; for code the completion's function
is bound to the name the other tests call): a scorer that passes anything
would show up here; expected scores are near 0.
`--apply_stops` first cuts the gold at the benchmark's stop sequences, as
generated text is cut (shows what the stop rules cost the gold).
`--isolation=none_unsafe` runs the programs without bubblewrap (see
`evals.sandbox`; unsafe).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np

from demix_jax.evals import sandbox
from demix_jax.evals import tasks


def derangement(n: int, seed: int) -> list[int]:
  """A seeded permutation of range(n) with no fixed point (n >= 2)."""
  if n < 2:
    raise ValueError("a derangement needs at least 2 items")
  rng = np.random.default_rng(seed)
  while True:
    p = rng.permutation(n)
    if not np.any(p == np.arange(n)):
      return [int(i) for i in p]


def gold_completion(item: tasks.GenItem) -> str:
  """The gold text a perfect model would generate for `item`."""
  if item.benchmark == "mbpp":
    return item.doc["code"]
  return item.reference


def check(
    name: str,
    max_items: int = 0,
    control: str = "none",
    apply_stops: bool = False,
    limits: sandbox.SandboxLimits = sandbox.DEFAULT_LIMITS,
    seed: int = 0,
) -> tuple[list[tasks.GenItem], tasks.TaskScore]:
  """Scores a benchmark's gold completions (or the shuffled control).

  For MATH the gold solution is checked against the data's own `answer`
  field (extracted independently of the solution's box), so the check can
  fail; scoring generated text uses the solution's box (see `tasks`).

  Args:
    name: a generative benchmark.
    max_items: seeded subsample (0 = all).
    control: "none" or "shuffled".
    apply_stops: cut the gold at the stop sequences first.
    limits: sandbox limits.
    seed: subsample and derangement seed.

  Returns:
    (items, their TaskScore).
  """
  items = tasks.read_gen_items(name, max_items=max_items, seed=seed)
  if name == "minerva_math":
    items = [dataclasses.replace(it, answer=it.doc["answer"]) for it in items]
  golds = [gold_completion(it) for it in items]
  if apply_stops:
    golds = [tasks.truncate_at_stop(g, it.stop) for g, it in zip(golds, items)]
  tests_of = None
  if control == "shuffled":
    tests_of = [items[j] for j in derangement(len(items), seed)]
  elif control != "none":
    raise ValueError(f"control must be 'none' or 'shuffled', got {control!r}")
  s = tasks.score(items, [[g] for g in golds], limits, tests_of=tests_of)
  return items, s


def main(argv=None) -> dict[str, float]:
  """Runs the check; prints the outliers, then the JSON scores last."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--benchmarks", default="humaneval,mbpp,gsm8k,minerva_math")
  p.add_argument("--max_items", type=int, default=0)
  p.add_argument("--control", default="none", choices=("none", "shuffled"))
  p.add_argument("--apply_stops", action="store_true")
  p.add_argument("--timeout_s", type=float, default=20.0)
  p.add_argument("--workers", type=int, default=0)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--isolation", default="bwrap", choices=sandbox.ISOLATIONS)
  a = p.parse_args(argv)
  limits = sandbox.SandboxLimits(
      timeout_s=a.timeout_s,
      cpu_s=int(a.timeout_s) + 1,
      workers=a.workers,
      isolation=a.isolation,
  )
  shuffled = a.control == "shuffled"
  out = {}
  for name in [n for n in a.benchmarks.split(",") if n]:
    items, s = check(
        name, a.max_items, a.control, a.apply_stops, limits, a.seed
    )
    # Outliers: failing golds, or passing shuffled controls.
    odd = [
        (it.native_id, r[0])
        for it, c, r in zip(items, s.correct, s.reasons)
        if c[0] == shuffled
    ]
    what = "passing" if shuffled else "failing"
    print(f"{name}: {s.score:.4f} over {len(items)} items; {len(odd)} {what}")
    for nid, why in odd:
      print(f"  {nid}: {why}")
    out[name] = round(s.score, 6)
  print(json.dumps(out, sort_keys=True), flush=True)
  return out


if __name__ == "__main__":
  main()
