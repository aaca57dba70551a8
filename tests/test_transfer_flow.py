"""Table 6's flow on the runlocal twin: one run's found mixture, another run.

The first run is the session's finished runlocal pipeline; the second copies
its data and base (so the base is reused, not retrained) and runs only
base, final and report with `final.mixture_from` = the first run's
directory: no search and no components of its own.
"""

import json

import jax
import pytest

from tests import kit


@pytest.mark.slow
def test_a_found_mixture_trains_in_another_run(runlocal_run, tmp_path):
  src = runlocal_run.workdir
  wd = kit.copy_run(src, tmp_path / "wd", parts=("data", "base"))
  proc = kit.run_cli(
      "--config=configs/demo.py:runlocal",
      f"--workdir={wd}",
      "--stages=base,final,report",
      f"--config.final.mixture_from={src}",
  )
  kit.assert_ok(proc)
  assert "[base] complete, skipped" in proc.stdout
  assert not (wd / "search").exists() and not (wd / "components").exists()

  mixture = json.loads((src / "report" / "mixture.json").read_text())
  done = json.loads((wd / "final" / "done.json").read_text())
  # The demix run trained the first run's mixture, beside the baseline.
  assert done["runs"]["demix"]["weights"] == mixture["source_weights"]
  assert set(done["runs"]) == {"demix", "natural"}
  origin = done["mixture_from"]
  assert origin["path"] == str(src / "report" / "mixture.json")
  assert origin["alpha"] == mixture["alpha"]
  search = json.loads((src / "search" / "done.json").read_text())
  assert origin["search_config_hash"] == search["config_hash"]

  # The same base, mixture, seeds and data as the first run's demix run:
  # the same model, and the single-model evaluator scores it as the first
  # run's component evaluator did.
  first = json.loads((src / "final" / "done.json").read_text())
  want = first["runs"]["demix"]["scores"]
  got = done["runs"]["demix"]["scores"]
  assert set(got) == set(want)
  for t, v in want.items():
    assert got[t] == pytest.approx(v, rel=1e-6, abs=1e-9), t

  summary = json.loads((wd / "report" / "summary.json").read_text())
  assert summary["source_weights"] == mixture["source_weights"]
  assert summary["alpha"] == mixture["alpha"]
  assert set(summary["cost"]) == {"base", "final"}
  report = (wd / "report" / "report.md").read_text()
  assert f"`{src / 'report' / 'mixture.json'}`" in report
  # No proxy columns or epochs for a search this run did not do.
  assert "proxy (merged)" not in report and "nan" not in report
  assert "Found mixture (alpha -> source weights)" in proc.stdout


@pytest.mark.slow
def test_the_single_model_evaluator_scores_as_the_merge_engine(
    runlocal_run, tmp_path
):
  """With generative metrics too: the same targets and the same values for
  one model (the base) as the components' evaluator gives it."""
  import demix_jax as dx  # pylint: disable=g-import-not-at-top
  from demix_jax import spec as spec_lib  # pylint: disable=g-import-not-at-top
  from demix_jax import workspace as workspace_lib  # pylint: disable=g-import-not-at-top
  from demix_jax.merging import generative  # pylint: disable=g-import-not-at-top
  from demix_jax.training import checkpointing  # pylint: disable=g-import-not-at-top

  src = runlocal_run.workdir
  wd = kit.copy_run(src, tmp_path / "wd", parts=("data", "base", "components"))
  c = dx.load_config("demo:runlocal")
  c.eval.benchmarks = ("arc_easy", "gsm8k")
  c.eval.max_items = 2
  c.eval.domain_metrics = {"general": "bpb", "math": "exact_match"}
  g = c.eval.generation
  g.max_new_tokens = 4
  g.batch_size = 2
  g.max_prompt_tokens = 32
  g.prompt_bucket = 16
  g.steps_per_call = 2
  spec = spec_lib.resolve(c, num_devices=1)
  ws = workspace_lib.Workspace(spec, wd)
  # Saved results hold "<workdir>/..." paths; load_result reads them here.
  base = dx.load_result(spec, wd, "base")
  comps = dx.load_result(spec, wd, "components")
  merged = ws.engines.evaluator(
      base.run_dir, comps.run_dirs(), spec.budgets.use_budget
  )
  single = ws.engines.model_evaluator()
  assert isinstance(single, generative.GenerativeEvaluator)
  assert ws.engines.model_evaluator() is single  # cached
  assert tuple(single.targets) == tuple(merged.targets)
  # The base, replicated over the evaluators' mesh (the trainer hands the
  # final stage its params on the mesh).
  mesh, _ = ws.engines.mesh_and_rules()
  params = jax.device_put(
      checkpointing.load_params(base.run_dir),
      jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
  )
  want = merged.evaluate_params(params)
  got = single.evaluate_params(params)
  assert set(got) == set(want) and "gsm8k/exact_match" in got
  for t, v in want.items():
    assert got[t] == pytest.approx(v, rel=1e-6, abs=1e-9), t
