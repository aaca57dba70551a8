"""stages.summary: typed results in, a Summary and report.md out."""

import pytest

from demix_jax.stages import results
from demix_jax.stages import summary as summary_lib
from tests.kit import results as kit_results


def _search(**over):
  fields = dict(
      alpha={"a": 0.5, "b": 0.5},
      objective=results.SearchObjective(kind="mean", targets=("domain/a",)),
  )
  fields.update(over)
  return kit_results.search_result(**fields)


def test_validation_rows_show_macro_values_and_undefined_rho():
  row = {
      "method": "DeMix",
      "budget_label": "2 x 1M components",
      "total_tokens": 2_000_000,
      "rho": {"general": None, "macro": None},  # undefined: null in JSON
      "top25_rho": {"general": 0.5, "macro": 0.5},
      "recovery": {"macro": 0.875},
      "decision_accuracy": {"macro": 0.75},
      "regret": {"macro": 0.0},
  }
  done = {
      "search": _search(),
      "validate": results.ValidateResult(rows=[row], table=""),
  }
  md = summary_lib.render_markdown(summary_lib.build_summary(done, []), {})
  line = next(ln for ln in md.splitlines() if ln.startswith("| DeMix"))
  cells = [c.strip() for c in line.strip("|").split("|")]
  assert cells == [
      "DeMix",
      "2 x 1M components",
      "2000000",
      "nan",
      "0.5000",
      "0.8750",
      "0.7500",
      "0.0000",
  ]


def test_generated_tokens_enter_the_cost_table():
  gen = {"prompt_tokens": 5000, "generated_tokens": 700}
  done = {
      "search": _search(diagnostics={"generation": gen}, seconds=12.0),
      "components": results.ComponentsResult(
          components={}, tokens=2048, seconds=3.0
      ),
  }
  summary = summary_lib.build_summary(done, [])
  assert summary.cost["search"].generated_tokens == 700
  assert summary.cost["components"].generated_tokens is None
  md = summary_lib.render_markdown(summary, {})
  assert "| generated tokens |" in md.split("## Cost")[1].splitlines()[2]
  line = next(ln for ln in md.splitlines() if ln.startswith("| search"))
  assert [c.strip() for c in line.strip("|").split("|")][-2:] == ["5000", "700"]
  # Without generation the table keeps its three columns.
  done["search"] = _search(seconds=12.0)
  md = summary_lib.render_markdown(summary_lib.build_summary(done, []), {})
  assert "generated tokens" not in md


def test_summary_round_trips_and_omits_what_did_not_run():
  final = results.FinalResult(
      runs={
          n: results.FinalRun(
              run_dir="", weights={"a": 1.0}, train_seconds=0.0, scores=s
          )
          for n, s in (("demix", {"t": 1.0}), ("natural", {"t": 2.0}))
      }
  )
  row = results.ObjectiveRow(
      trained_normalized=0.1, trained_composite=0.5, trained_mean=1.0
  )
  summary = summary_lib.build_summary(
      {"search": _search(), "final": final}, ["t"], {"demix": row}
  )
  assert summary.final == {"t": 1.0}
  assert summary.baselines == {"natural": {"t": 2.0}}
  blob = summary.to_json()
  # No validate stage, no proxy for the row: the keys are left out.
  assert "validation" not in blob
  assert "proxy_normalized" not in blob["objectives"]["demix"]
  assert results.Summary.from_json(blob) == summary
  # A summary.json missing a field is named, not half-read.
  del blob["alpha"]
  with pytest.raises(results.ResultError, match="missing field 'alpha'"):
    results.Summary.from_json(blob, "summary.json")


def test_seed_verdict_margin_spread_and_proxy_order():
  per_seed = {
      "demix": [-0.30, -0.28],
      "natural": [-0.10, -0.13],
      "uniform": [-0.27, -0.26],
  }
  proxy = {"demix": -0.2, "natural": -0.1, "uniform": -0.25}
  v = summary_lib.seed_verdict(per_seed, proxy, "normalized")
  assert v["seeds"] == 2
  assert v["spread"] == pytest.approx(0.03)  # natural's two seeds
  assert v["mean"]["demix"] == pytest.approx(-0.29)
  nat, uni = v["baselines"]["natural"], v["baselines"]["uniform"]
  assert nat["margin"] == pytest.approx(0.175) and nat["beyond_noise"]
  assert nat["trained_order"] == "demix" and nat["orders_match"]
  # demix beats uniform by less than twice the spread; the proxies had
  # uniform ahead, training has demix ahead.
  assert uni["margin"] == pytest.approx(0.025) and not uni["beyond_noise"]
  assert uni["proxy_order"] == "uniform" and uni["orders_match"] is False
  text = "\n".join(summary_lib.verdict_lines(v))
  assert "demix vs natural: margin +0.1750 (demix better); exceeds" in text
  assert "demix vs uniform: margin +0.0250 (demix better); does NOT" in text
  assert "spread (largest seed difference of one mixture): 0.0300" in text
  assert "merged proxies rank uniform better: does NOT match" in text


def test_seed_verdict_needs_two_seeds_and_the_found_run():
  assert summary_lib.seed_verdict({"demix": [0.1]}, {}, "normalized") is None
  assert summary_lib.seed_verdict({"natural": [0.1, 0.2]}, {}, "x") is None
  v = summary_lib.seed_verdict(
      {"demix": [0.1, 0.1], "natural": [0.3, 0.2]}, {"demix": None}, "x"
  )
  assert v["baselines"]["natural"]["proxy_order"] is None
  assert "no proxy for natural" in "\n".join(summary_lib.verdict_lines(v))
