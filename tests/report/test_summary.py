"""report.summary: the validation section shows macro values, nan if null."""

from demix_jax.report import summary as summary_lib


def _done(rows):
  return {
      "search": {"alpha": {"a": 0.5, "b": 0.5}, "source_weights": {}},
      "validate": {"rows": rows},
  }


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
  md = summary_lib.render_markdown(
      summary_lib.build_summary(_done([row]), []), {}
  )
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
  done = {
      "search": {
          "alpha": {"a": 1.0},
          "source_weights": {},
          "tokens": 0,
          "seconds": 12.0,
          "diagnostics": {
              "generation": {"prompt_tokens": 5000, "generated_tokens": 700}
          },
      },
      "components": {"tokens": 2048, "seconds": 3.0},
  }
  summary = summary_lib.build_summary(done, [])
  assert summary["cost"]["search"]["generated_tokens"] == 700
  md = summary_lib.render_markdown(summary, {})
  assert "| generated tokens |" in md.split("## Cost")[1].splitlines()[2]
  line = next(ln for ln in md.splitlines() if ln.startswith("| search"))
  assert [c.strip() for c in line.strip("|").split("|")][-2:] == ["5000", "700"]
  # Without generation the table keeps its three columns.
  del done["search"]["diagnostics"]
  md = summary_lib.render_markdown(summary_lib.build_summary(done, []), {})
  assert "generated tokens" not in md
