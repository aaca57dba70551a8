"""Table 3's ranking: ranks per benchmark, their mean, and each run's cost."""

import math

import numpy as np

from configs import table3_small
from demix_jax import spec as spec_lib
from demix_jax.report import ranking
from demix_jax.stages import comparison
from demix_jax.stages import report
from demix_jax.stages import results
from demix_jax.stages import summary as summary_lib
from tests.kit import results as kit_results


def test_ranks_are_one_based_with_ties_averaged_and_nan_last():
  np.testing.assert_array_equal(
      ranking.ranks([3.0, 1.0, 2.0], False), [3, 1, 2]
  )
  np.testing.assert_array_equal(ranking.ranks([3.0, 1.0, 2.0], True), [1, 3, 2])
  np.testing.assert_array_equal(
      ranking.ranks([1.0, 2.0, 1.0, 5.0], False), [1.5, 3, 1.5, 4]
  )
  np.testing.assert_array_equal(
      ranking.ranks([float("nan"), 2.0, 1.0], True), [3, 1, 2]
  )
  np.testing.assert_array_equal(
      ranking.ranks([float("nan"), float("nan"), 1.0], False), [2.5, 2.5, 1]
  )


def test_macro_rank_is_the_mean_over_the_targets():
  scores = {
      "a": {"x/bpb": 1.0, "y/acc": 0.2},
      "b": {"x/bpb": 2.0, "y/acc": 0.9},
      "c": {"x/bpb": 3.0, "y/acc": 0.5},
  }
  out = ranking.rank_runs(scores, ["x/bpb", "y/acc"], lambda t: "acc" in t)
  assert out["a"] == {"x/bpb": 1.0, "y/acc": 3.0, "macro": 2.0}
  assert out["b"] == {"x/bpb": 2.0, "y/acc": 1.0, "macro": 1.5}
  assert out["c"]["macro"] == 2.5


def _spec():
  return spec_lib.resolve(table3_small.get_config("runlocal"))


def _final(spec, bpb):
  """Final runs whose every benchmark and domain score is `bpb[run]`."""
  targets = comparison.benchmark_targets(spec)
  domains = ["domain/general", "domain/code", "domain/math"]
  return results.FinalResult(
      runs={
          n: results.FinalRun(
              run_dir="",
              weights={},
              train_seconds=0.0,
              scores={t: v for t in targets + domains},
          )
          for n, v in bpb.items()
      }
  )


def _method(kind, n, tokens, proxy_tokens):
  return results.ProxySearchRun(
      kind=kind,
      alpha={},
      source_weights={},
      n_proxies=n,
      tokens_per_proxy=tokens,
      proxy_tokens=proxy_tokens,
      predicted={},
      rounds=[],
      final_cv={},
      proxies_csv="",
      surrogate="ridge",
  )


def test_the_table_ranks_runs_and_charges_each_method_its_search():
  spec = _spec()
  assert comparison.benchmark_targets(spec) == [
      f"{b}/bpb" for b in spec.eval.benchmarks
  ]
  base = results.BaseResult(
      run_dir="", steps=1, train_seconds=0.0, mixture={}, tokens=1000
  )
  comps = results.ComponentsResult(components={}, tokens=300)
  found = results.BaselinesResult(
      methods={
          "regmix": _method("regmix", 4, 50, 200),
          "climb": _method("climb", 6, 50, 300),
      },
      base_scores={},
  )

  class _Search:
    n_proxies = 12

  done = {
      "base": base,
      "components": comps,
      "search": _Search(),
      "baselines": found,
      "final": _final(
          spec,
          {
              "demix": 2.0,
              "natural": 4.0,
              "uniform": 3.0,
              "heuristic": 3.0,
              "climb": 1.0,
              "regmix": 5.0,
          },
      ),
  }
  table = comparison.ranking_table(spec, done)
  # Best first; lower bpb is better; the two at 3.0 share ranks 3 and 4.
  assert list(table) == [
      "climb",
      "demix",
      "uniform",
      "heuristic",
      "natural",
      "regmix",
  ]
  assert table["climb"].macro_rank == 1.0
  assert table["uniform"].macro_rank == table["heuristic"].macro_rank == 3.5
  assert set(table["demix"].ranks.values()) == {2.0}
  assert table["demix"].domain_macro_rank == 2.0
  assert table["demix"].domain_ranks["domain/math"] == 2.0
  # Search tokens: base + components, base + proxies, and nothing.
  cost = {n: r.search_tokens for n, r in table.items()}
  assert cost == {
      "demix": 1300,
      "regmix": 1200,
      "climb": 1300,
      "natural": 0,
      "uniform": 0,
      "heuristic": 0,
  }
  assert [
      table[n].method for n in ("demix", "climb", "uniform", "natural")
  ] == [
      "demix",
      "climb",
      "fixed",
      "natural",
  ]
  assert (table["demix"].n_proxies, table["demix"].tokens_per_proxy) == (12, 0)
  assert (table["climb"].n_proxies, table["climb"].tokens_per_proxy) == (6, 50)
  assert table["natural"].n_proxies is None
  # Without final runs there is nothing to rank.
  assert comparison.ranking_table(spec, {"search": _Search()}) == {}


def test_the_table_goes_into_report_md_and_round_trips_summary_json():
  spec = _spec()
  final = _final(spec, {"demix": 2.0, "natural": 1.0})
  table = comparison.ranking_table(spec, {"final": final})
  search = kit_results.search_result(alpha={"general": 1.0})
  s = summary_lib.build_summary(
      {"search": search, "final": final}, [], ranking=table
  )
  assert results.Summary.from_json(s.to_json()) == s
  md = summary_lib.render_markdown(s, {})
  section = md.split("## Final mixtures ranked (Table 3)")[1]
  rows = [ln for ln in section.splitlines() if ln.startswith("| ")]
  header = [c.strip() for c in rows[0].strip("|").split("|")]
  assert header[:5] == [
      "run",
      "method",
      "search tokens",
      "#proxies",
      "tokens/proxy",
  ]
  assert header[5] == "arc_easy/bpb (rank)" and "**macro rank**" in header
  first = [c.strip() for c in rows[1].strip("|").split("|")]
  assert first[:2] == ["natural", "natural"]
  assert first[5] == "1.0000 (1)"
  assert first[header.index("**macro rank**")] == "**1.00**"
  assert not math.isnan(table["demix"].macro_rank)


def test_the_cli_prints_the_table_only_when_trained_proxies_ran(capsys):
  spec = _spec()
  final = _final(spec, {"demix": 2.0, "natural": 1.0})
  base = dict(
      alpha={},
      source_weights={},
      epochs={},
      predicted={},
      predicted_std={},
      merged={},
      search_methods={},
      final={},
      baselines={},
      final_weights={},
      cost={},
      key_targets=[],
      n_proxies=0,
      surrogate="",
      rounds=[],
      diagnostics={},
      config_snippet="",
  )
  plain = results.Summary(
      **base, ranking=comparison.ranking_table(spec, {"final": final})
  )
  report.print_result(plain.to_json())
  assert "Table 3" not in capsys.readouterr().out  # the demo's output
  found = results.BaselinesResult(
      methods={"climb": _method("climb", 6, 50, 300)}, base_scores={}
  )
  final = _final(spec, {"demix": 2.0, "natural": 3.0, "climb": 1.0})
  table = comparison.ranking_table(spec, {"final": final, "baselines": found})
  report.print_result(results.Summary(**base, ranking=table).to_json())
  out = capsys.readouterr().out.split("Table 3")[1].splitlines()
  rows = [ln.split() for ln in out[2:5]]
  assert [r[0] for r in rows] == ["climb", "demix", "natural"]  # best first
  assert rows[0][:3] == ["climb", "climb", "1.00"]
  # Without a base result, the config's base tokens are counted.
  assert rows[0][-1] == f"{spec.budgets.base_tokens + 300:,}"
