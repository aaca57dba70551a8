r"""Per-program cost of the bubblewrap sandbox against the one it replaced.

Runs the same gold programs (HumanEval canonical solutions and MBPP gold
code, a seeded subsample of each) through

  old     the sandbox before bubblewrap: one process per program with
          in-process guards and `unshare --net`, the verdict a sentinel the
          program's process printed (read from git: `--old_rev`);
  bwrap   `evals.sandbox` as shipped: the program and the judge each in a
          bubblewrap sandbox, values crossing as plain data;
  unsafe  the same two processes without bubblewrap ("none_unsafe").

and prints, per mode, the median and 90th-percentile wall time of one
program (run one at a time: `--workers 1`) and the batch's wall time, then
the ratios to `old`. Every program must pass in every mode (a gold check
that fails is an error). Needs bubblewrap and a git checkout (for the old
sandbox's source).

  python bench/sandbox_overhead.py [--items 40] [--workers 1]

The last line is one JSON object.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from demix_jax.evals import sandbox  # noqa: E402
from demix_jax.evals import tasks  # noqa: E402

# The last commit with the in-process sandbox (demix_jax/evals/sandbox.py).
OLD_REV = "c018f54"


def load_old(rev: str):
  """The old sandbox module, from git."""
  src = subprocess.run(
      ["git", "show", f"{rev}:demix_jax/evals/sandbox.py"],
      cwd=ROOT,
      capture_output=True,
      text=True,
      check=True,
  ).stdout
  path = os.path.join(tempfile.mkdtemp(prefix="old_sandbox_"), "old.py")
  with open(path, "w") as f:
    f.write(src)
  spec = importlib.util.spec_from_file_location("old_sandbox", path)
  mod = importlib.util.module_from_spec(spec)
  sys.modules["old_sandbox"] = mod  # dataclasses look their module up
  spec.loader.exec_module(mod)
  return mod


def old_program(item, completion):
  """The program the old sandbox ran (tests inside it)."""
  if item.benchmark == "humaneval":
    return (
        item.doc["prompt"]
        + completion
        + "\n\n"
        + item.doc["test"]
        + f"\n\ncheck({item.doc['entry_point']})\n"
    )
  parts = [tasks.mbpp_code(completion), item.doc.get("test_setup_code") or ""]
  return "\n".join(parts + list(item.doc["test_list"])) + "\n"


def gold(item):
  return item.doc["code"] if item.benchmark == "mbpp" else item.reference


def measure(name, run, programs):
  t0 = time.monotonic()
  res = run(programs)
  wall = time.monotonic() - t0
  bad = [(i, r.reason) for i, r in enumerate(res) if not r.passed]
  if bad:
    raise SystemExit(f"{name}: gold programs failed: {bad[:5]}")
  secs = sorted(r.seconds for r in res)
  return {
      "median_s": round(statistics.median(secs), 4),
      "p90_s": round(secs[int(0.9 * (len(secs) - 1))], 4),
      "batch_s": round(wall, 3),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--items", type=int, default=40, help="per benchmark")
  p.add_argument("--workers", type=int, default=1)
  p.add_argument("--old_rev", default=OLD_REV)
  p.add_argument("--seed", type=int, default=0)
  a = p.parse_args()
  old = load_old(a.old_rev)
  items = []
  for name in ("humaneval", "mbpp"):
    items += tasks.read_gen_items(name, max_items=a.items, seed=a.seed)
  checks = [tasks.program(it, gold(it)) for it in items]
  olds = [old_program(it, gold(it)) for it in items]
  kw = dict(timeout_s=30.0, cpu_s=30, workers=a.workers)
  sandbox.check_isolation(sandbox.SandboxLimits(**kw))
  old_limits = old.SandboxLimits(**kw)
  modes = {
      "old": lambda ps: old.run_programs(ps, old_limits),
      "bwrap": lambda ps: sandbox.run_checks(ps, sandbox.SandboxLimits(**kw)),
      "unsafe": lambda ps: sandbox.run_checks(
          ps, sandbox.SandboxLimits(isolation="none_unsafe", **kw)
      ),
  }
  out = {"programs": len(items), "workers": a.workers}
  for name, run in modes.items():
    out[name] = measure(name, run, olds if name == "old" else checks)
  print(f"{len(items)} gold programs, {a.workers} worker(s)")
  print(f"{'mode':8s} {'median s':>9s} {'p90 s':>8s} {'batch s':>8s} ratio")
  for name in modes:
    m = out[name]
    ratio = m["median_s"] / out["old"]["median_s"]
    out[name]["median_vs_old"] = round(ratio, 3)
    print(
        f"{name:8s} {m['median_s']:9.4f} {m['p90_s']:8.4f}"
        f" {m['batch_s']:8.2f} {ratio:5.2f}x"
    )
  print(json.dumps(out, sort_keys=True), flush=True)


if __name__ == "__main__":
  main()
