"""The generative path through the pipeline's search stage, end to end.

The runlocal demo with `eval.domain_metrics = {code: pass@1, math:
exact_match}` and tiny generation limits: base, components and search run
through `dx.run`; every proxy the search scored carries the generated-text
targets (HumanEval/MBPP programs run in the sandbox, GSM8K/MATH answers
checked), finite and in [0, 1], from the same evaluator `Workspace` hands
to every stage. A 1M-parameter model solves nothing, so the values are 0
here; that the path can score above 0 is the job of test_generative_e2e
(a model trained on canonical solutions, through the same evaluator).
"""

import csv
import json
import math

import pytest

import demix_jax as dx
from demix_jax import spec as spec_lib
from demix_jax import workspace as workspace_lib
from demix_jax.merging import generative
from tests import kit

GEN_TARGETS = (
    "humaneval/pass@1",
    "mbpp/pass@1",
    "gsm8k/exact_match",
    "minerva_math/exact_match",
)


def _config():
  c = dx.load_config("demo:runlocal")
  c.stages = ("base", "components", "search")
  c.eval.benchmarks = ("arc_easy", "humaneval", "mbpp", "gsm8k", "minerva_math")
  c.eval.max_items = 2
  c.eval.domain_metrics = {
      "general": "bpb",
      "code": "pass@1",
      "math": "exact_match",
  }
  g = c.eval.generation
  g.max_new_tokens = 6
  g.batch_size = 8
  g.max_prompt_tokens = 48
  g.prompt_bucket = 16
  g.steps_per_call = 3
  g.mixtures_per_call = 2
  g.sandbox.workers = 2
  g.sandbox.timeout_s = 20.0
  c.search.n_init = 4
  c.search.rounds = 2
  c.search.final_topk = 4
  c.search.gradient.steps = 2
  c.search.barrier_points = 0
  return c


@pytest.mark.slow
def test_generative_targets_through_the_search_stage(runlocal_run, tmp_path):
  # Base and components are the session's runlocal ones (copied): eval and
  # search settings are not hashed into them, so dx.run skips to the search.
  kit.copy_run(runlocal_run.workdir, tmp_path, ("data", "base", "components"))
  config = _config()
  spec = spec_lib.resolve(config, num_devices=1)
  for t in GEN_TARGETS + ("domain/code", "domain/math"):
    assert t in spec.eval.targets
  assert spec.search.objective.targets == (
      "domain/general",
      "domain/code",
      "domain/math",
  )
  out = dx.run(config, str(tmp_path))
  search = out["search"]
  assert search.n_proxies == 6  # rounds of 4 and 2
  # Every proxy of the search table carries the generative targets.
  with open(search.proxies_csv) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == search.n_proxies
  for row in rows:
    for t in GEN_TARGETS + ("domain/code", "domain/math"):
      v = float(row[t])
      assert math.isfinite(v) and 0.0 <= v <= 1.0, (t, v)
    # The domain score is the mean of its benchmarks' generative scores.
    assert float(row["domain/code"]) == pytest.approx(
        (float(row["humaneval/pass@1"]) + float(row["mbpp/pass@1"])) / 2
    )
  # The found mixture's measured scores and the gradient refinement's (it
  # descends the bpb part: domain/general) are recorded with them.
  done = json.loads((tmp_path / "search" / "done.json").read_text())
  for entry in done["methods"].values():
    for t in GEN_TARGETS:
      assert 0.0 <= entry["merged_scores"][t] <= 1.0
    assert math.isfinite(entry["merged_scores"]["domain/general"])
  # The stages' evaluator is the generative one, and it decoded tokens.
  ws = workspace_lib.Workspace(spec, tmp_path)
  base, comps = out["base"], out["components"]
  ev = ws.engines.evaluator(
      base.run_dir, comps.run_dirs(), spec.budgets.use_budget
  )
  assert isinstance(ev, generative.GenerativeEvaluator)
  assert tuple(ev.targets) == spec.eval.targets
  scores = ev.evaluate([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
  stats = ev.generation_stats()
  assert stats["models"] == 2
  assert stats["generated_tokens"] > 0 and stats["prompt_tokens"] > 0
  for t in GEN_TARGETS:
    assert scores[t].shape == (2,)
  # Each benchmark's reasons were recorded (none may crash the run).
  assert set(ev.last_reasons) == {"humaneval", "mbpp", "gsm8k", "minerva_math"}
  with pytest.raises(ValueError, match="not differentiable"):
    ev.make_objective(["domain/code"])
