"""Stage helpers of search and report against a fake workspace."""

import json

import numpy as np
import pytest

from demix_jax.stages import comparison
from demix_jax.stages import report
from demix_jax.stages import results
from demix_jax.stages import search
from demix_jax.stages import summary as summary_lib
from tests.kit import results as kit_results


def test_pool_size_and_sampler_override_keep_the_other_settings(fake_ws):
  ws = fake_ws()
  bounds = ws.bounds.alpha_bounds()
  full = search.sample_pool(ws.spec, ws, 3)
  assert len(full) == ws.spec.search.pool.size
  for sampler in (None, "uniform"):
    a = search.sample_pool(ws.spec, ws, 3, size=7, sampler=sampler)
    assert a.shape == (7, len(ws.candidates))
    np.testing.assert_allclose(a.sum(1), 1.0, atol=1e-9)
    assert np.all(a >= bounds.lower - 1e-12)
    assert np.all(a <= bounds.upper + 1e-12)
  # The same seed and settings draw the same pool.
  np.testing.assert_array_equal(
      search.sample_pool(ws.spec, ws, 3, size=7),
      search.sample_pool(ws.spec, ws, 3, size=7),
  )


def test_baseline_alphas_map_fixed_mixtures_back_through_the_padding(fake_ws):
  ws = fake_ws(
      **{
          "final.fixed_mixtures": {
              "padded": {"general": 0.75, "code": 0.25},  # alpha code 0.5
              "too_little_general": {"general": 0.1, "code": 0.9},
          }
      }
  )
  out = search.baseline_alphas(ws.spec, ws)
  assert out["natural"] == ws.bounds.natural_alpha
  assert out["padded"] == pytest.approx(
      {"general": 0.5, "math": 0.0, "code": 0.5}
  )
  # Less general data than the padding alone gives: no merge expresses it.
  assert "too_little_general" not in out


def _search_result(**over):
  fields = dict(
      alpha={"general": 0.5, "math": 0.0, "code": 0.5},
      source_weights={"general": 0.75, "math": 0.0, "code": 0.25},
      objective=results.SearchObjective(
          kind="normalized", targets=("domain/code", "heldout/bpb")
      ),
      base_scores={"domain/code": 5.0, "heldout/bpb": 4.0},
      proxies={"demix": {"normalized": -0.1}},
  )
  fields.update(over)
  return kit_results.search_result(**fields)


def _final(scores):
  return results.FinalResult(
      runs={
          n: results.FinalRun(
              run_dir="", weights={}, train_seconds=0.0, scores=s
          )
          for n, s in scores.items()
      }
  )


def test_objective_table_scores_trained_runs_against_the_base(fake_ws):
  ws = fake_ws()
  final = _final(
      {
          "demix": {"domain/code": 4.0, "heldout/bpb": 3.6},
          "natural": {"domain/code": 4.5, "heldout/bpb": 4.0},
      }
  )
  table = comparison.objective_table(ws.spec, _search_result(), final)
  demix, natural = table["demix"], table["natural"]
  # Mean relative change from the base: (-0.2 + -0.1) / 2 for demix.
  assert demix.trained_normalized == pytest.approx(-0.15)
  assert natural.trained_normalized == pytest.approx(-0.05)
  assert demix.trained_composite < natural.trained_composite
  assert demix.proxy_normalized == -0.1 and natural.proxy_normalized is None
  # Without final runs or base scores there is nothing to compare.
  assert comparison.objective_table(ws.spec, _search_result(), None) == {}
  assert not comparison.objective_table(
      ws.spec, _search_result(base_scores={}), final
  )


def test_write_mixture_and_print_result(fake_ws, tmp_path, capsys):
  ws = fake_ws()
  s = _search_result()
  paths = report.write_mixture(tmp_path, ws.spec, s)
  blob = json.loads(open(paths["json"]).read())
  assert blob["source_weights"] == s.source_weights
  assert blob["objective"] == {
      "kind": "normalized",
      "targets": ["domain/code", "heldout/bpb"],
  }
  scope = {}
  exec(compile(open(paths["seqio"]).read(), "seqio_mixture.py", "exec"), scope)  # pylint: disable=exec-used
  assert scope["SOURCE_WEIGHTS"] == dict(sorted(s.source_weights.items()))
  summary = results.Summary(
      alpha=s.alpha,
      source_weights=s.source_weights,
      epochs={},
      predicted={},
      predicted_std={},
      merged={"domain/code": 4.2},
      search_methods={},
      final={"domain/code": 4.0},
      baselines={"natural": {"domain/code": 4.5}},
      final_weights={},
      cost={},
      key_targets=["domain/code"],
      n_proxies=0,
      surrogate="ridge",
      rounds=[],
      diagnostics={},
      config_snippet="",
  )
  report.print_result(summary)
  typed = capsys.readouterr().out
  report.print_result(json.loads(json.dumps(summary.to_json())))
  assert capsys.readouterr().out == typed  # summary.json prints the same
  assert "Surrogate of the final fit: ridge" in typed
  row = next(ln for ln in typed.splitlines() if "domain/code" in ln)
  assert row.split()[1:] == ["4.0000", "4.5000", "4.2000"]


def test_seed_objectives_verdict_and_seed_std(fake_ws, capsys):
  ws = fake_ws()

  def run(*seeds):
    mean = {t: float(np.mean([s[t] for s in seeds])) for t in seeds[0]}
    return results.FinalRun(
        run_dir="",
        weights={},
        train_seconds=0.0,
        scores=mean,
        seed_scores=list(seeds),
    )

  final = results.FinalResult(
      runs={
          "demix": run(
              {"domain/code": 4.0, "heldout/bpb": 3.6},
              {"domain/code": 4.1, "heldout/bpb": 3.6},
          ),
          "natural": run(
              {"domain/code": 4.5, "heldout/bpb": 4.0},
              {"domain/code": 4.5, "heldout/bpb": 4.0},
          ),
      }
  )
  search = _search_result(
      proxies={"demix": {"normalized": -0.1}, "natural": {"normalized": 0.0}}
  )
  per_seed, proxy = comparison.seed_objectives(ws.spec, search, final)
  # Relative change from the base, per seed: (-0.2 - 0.1) / 2 for seed 0.
  assert per_seed["demix"] == pytest.approx([-0.15, -0.14])
  assert per_seed["natural"] == pytest.approx([-0.05, -0.05])
  assert proxy == {"demix": -0.1, "natural": 0.0}
  std = comparison.seed_std(final, ["domain/code"])
  assert std["demix"]["domain/code"] == pytest.approx(0.1 / np.sqrt(2))
  v = summary_lib.seed_verdict(per_seed, proxy, "normalized")
  assert v["baselines"]["natural"]["beyond_noise"]
  assert v["baselines"]["natural"]["orders_match"]
  # One seed per run: no verdict, no error bars.
  one = _final({"demix": {"domain/code": 4.0}, "natural": {"domain/code": 4.5}})
  assert comparison.seed_objectives(ws.spec, search, one) == ({}, {})
  assert comparison.seed_std(one, ["domain/code"]) is None
  summary = results.Summary(
      alpha={},
      source_weights={},
      epochs={},
      predicted={},
      predicted_std={},
      merged={},
      search_methods={},
      final={"domain/code": 4.05},
      baselines={"natural": {"domain/code": 4.5}},
      final_weights={},
      cost={},
      key_targets=["domain/code"],
      n_proxies=0,
      surrogate="ridge",
      rounds=[],
      diagnostics={},
      config_snippet="",
      verdict=v,
  )
  back = results.Summary.from_json(json.loads(json.dumps(summary.to_json())))
  assert back.verdict == v
  report.print_result(back)
  out = capsys.readouterr().out
  assert "Verdict on the search's objective (normalized" in out
  assert "demix vs natural: margin +0.0950 (demix better); exceeds" in out
  md = summary_lib.render_markdown(back, {})
  assert "## Verdict over seeds" in md and "seed 1" in md
