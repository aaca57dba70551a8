"""Validation on every target the search can use, each with its own ceiling.

The fakes model the demo's situation: benchmark domains that barely move
with the mixture (reference scores mostly noise) beside held-out bits per
byte that follow it closely. The tables must show both, each target beside
its own noise ceiling, with a macro over the held-out targets apart from the
macro over the benchmark domains.
"""

import numpy as np
import pytest

from demix_jax import stats
from demix_jax.validation import harness
from demix_jax.validation import metrics
from demix_jax.validation import tables

R, K, TWINS = 12, 3, 8
DOMAINS = {"general": False, "code": False}
HELDOUT = {"heldout/web/bpb": False, "heldout/code/bpb": False}
TARGETS = {**DOMAINS, **HELDOUT}
W = {
    "general": np.array([1.0, 0.2, 0.1]),
    "code": np.array([0.1, 1.0, 0.3]),
    "heldout/web/bpb": np.array([1.0, 0.0, 0.2]),
    "heldout/code/bpb": np.array([0.0, 1.0, 0.4]),
}
COST = harness.CostSettings(n_params=1e6, n_components=K, eval_tokens=3e4)


def _alphas():
  return np.random.default_rng(1).dirichlet(np.ones(K), size=R)


def _score(alpha, target, rng):
  # Benchmarks: a tiny mixture effect under noise; held-out: a large one.
  effect = 0.002 if target in DOMAINS else 0.5
  return 3.0 - effect * (alpha @ W[target]) + 0.01 * rng.normal()


class Fakes:

  def __init__(self, alphas, targets):
    self.alphas, self.targets = alphas, targets
    self.trained, self.scored, self.merged = [], [], []

  def train(self, i, alpha, out_dir):
    del alpha, out_dir
    self.trained.append(i)

  def score(self, i, fraction, seed=0):
    self.scored.append((i, fraction))
    rng = np.random.default_rng([seed, i, int(fraction * 1e4)])
    return {t: _score(self.alphas[i], t, rng) for t in self.targets}

  def merged_scores(self, alphas, label):
    self.merged.append(label)
    return {
        t: np.array([3.0 - 0.5 * (a @ W[t]) for a in alphas])
        for t in self.targets
    }


def _run(tmp_path, fakes, targets):
  return harness.run_validation(
      str(tmp_path),
      fakes.alphas,
      targets,
      fakes.train,
      fakes.score,
      fakes.merged_scores,
      reference_tokens=16e6,
      variants=(harness.MergedVariant("linear", 4e6),),
      cost=COST,
      proxy_fractions=(1 / 4,),
      twins=TWINS,
      train_twin=fakes.train,
      score_twin=lambda i, f: fakes.score(i, f, seed=7),
      final_scores={"found": {t: 2.5 for t in targets}},
  )


def test_every_target_gets_its_own_ceiling_and_the_macros_split(tmp_path):
  alphas = _alphas()
  table = _run(tmp_path, Fakes(alphas, TARGETS), TARGETS)
  assert table["benchmark_domains"] == list(DOMAINS)
  assert table["heldout_targets"] == list(HELDOUT)
  ceil, ref, twin = (
      table["ceiling"],
      table["reference_scores"],
      table["twin_scores"],
  )
  for t in TARGETS:
    assert ceil[t] == pytest.approx(stats.spearman(ref[t][:TWINS], twin[t]))
  # The held-out targets carry the signal, the benchmarks are mostly noise.
  assert min(ceil[t] for t in HELDOUT) > 0.8
  assert ceil["macro"] == pytest.approx(np.mean([ceil[t] for t in DOMAINS]))
  assert ceil["macro_heldout"] == pytest.approx(
      np.mean([ceil[t] for t in HELDOUT])
  )
  assert ceil["macro_heldout"] > ceil["macro"]
  assert set(table["ceiling_ci"]) == set(TARGETS) | {"macro", "macro_heldout"}
  for r in table["rows"]:
    for m in ("rho", "top25_rho", "recovery", "decision_accuracy"):
      assert r[m]["macro"] == pytest.approx(
          metrics.macro({t: r[m][t] for t in DOMAINS}), nan_ok=True
      )
      assert r[m]["macro_heldout"] == pytest.approx(
          metrics.macro({t: r[m][t] for t in HELDOUT}), nan_ok=True
      )
    assert r["rho_macro_heldout"] == r["rho"]["macro_heldout"]
    assert r["ceiling_macro_heldout"] == ceil["macro_heldout"]
    assert "macro_heldout" in r["rho_ci"]
  merged = next(r for r in table["rows"] if r["family"] == "merged")
  assert merged["rho"]["macro_heldout"] > 0.8
  ranks = table["mixture_ranks"]["found"]
  assert ranks["macro"] == pytest.approx(np.mean([ranks[t] for t in DOMAINS]))
  assert "macro_heldout" in ranks


def test_markdown_shows_each_target_beside_its_ceiling(tmp_path):
  alphas = _alphas()
  table = _run(tmp_path, Fakes(alphas, TARGETS), TARGETS)
  md = tables.markdown(table)
  ceil = table["ceiling"]
  merged = next(r for r in table["rows"] if r["family"] == "merged")
  rows = {line.split(" | ")[0][2:]: line for line in md.splitlines()}
  for t in TARGETS:
    cells = rows[t].strip("| ").split(" | ")
    assert cells[1] == f"{ceil[t]:.2f}"  # its own ceiling
    assert cells[-1] == f"{merged['rho'][t]:.2f}"  # the DeMix rho
  held = rows["**macro, held-out targets**"].strip("| ").split(" | ")
  assert held[1] == f"{ceil['macro_heldout']:.2f}"
  assert held[-1] == f"**{merged['rho']['macro_heldout']:.2f}**"
  assert "**rho Held-out Macro**" in md
  assert f"macro **{ceil['macro_heldout']:.2f}**" in md
  # Table 2 keeps the benchmark domains as its per-domain columns.
  head = next(line for line in md.splitlines() if line.startswith("| Method"))
  assert "rho general" in head and "rho heldout/web/bpb" not in head


def test_domains_only_tables_are_unchanged(tmp_path):
  alphas = _alphas()
  table = _run(tmp_path, Fakes(alphas, DOMAINS), DOMAINS)
  assert table["heldout_targets"] == []
  assert "macro_heldout" not in table["ceiling"]
  assert all("rho_macro_heldout" not in r for r in table["rows"])
  md = tables.markdown(table)
  assert "Held-out" not in md and "held-out targets" not in md


def test_adding_heldout_targets_rescores_cached_runs_never_retrains(tmp_path):
  alphas = _alphas()
  _run(tmp_path, Fakes(alphas, DOMAINS), DOMAINS)
  more = Fakes(alphas, TARGETS)
  table = _run(tmp_path, more, TARGETS)
  assert more.trained == []
  # Every reference at both fractions and every twin, scored again.
  assert len(more.scored) == R * 2 + TWINS
  assert more.merged == ["linear"]
  for t in HELDOUT:
    assert all(np.isfinite(table["reference_scores"][t]))


def test_macros_split_benchmark_domains_from_heldout_targets():
  values = {"general": 0.2, "code": 0.4, "heldout/a/bpb": 0.9, "macro": 5.0}
  assert metrics.macros(values) == {
      "macro": pytest.approx(0.3),
      "macro_heldout": pytest.approx(0.9),
  }
  assert metrics.macros({"general": 0.2}) == {"macro": 0.2}
  assert metrics.split_targets(["heldout/a/bpb", "code"]) == (
      ["code"],
      ["heldout/a/bpb"],
  )


def test_rho_plot_draws_the_heldout_macro_and_both_ceilings(
    tmp_path, monkeypatch
):
  alphas = _alphas()
  table = _run(tmp_path, Fakes(alphas, TARGETS), TARGETS)
  seen = {}

  def capture(xs, rho, path, **kw):
    seen.update(rho=rho, **kw)
    return path

  monkeypatch.setattr(tables.plots, "accuracy_vs_cost", capture)
  tables.plot_rho_vs_tokens(table["rows"], str(tmp_path / "p.png"))
  merged = next(r for r in table["rows"] if r["family"] == "merged")
  assert seen["rho"]["merged (DeMix), held-out targets"] == [
      pytest.approx(merged["rho"]["macro_heldout"])
  ]
  assert seen["hlines"] == {
      "noise ceiling (benchmark domains)": pytest.approx(
          table["ceiling"]["macro"]
      ),
      "noise ceiling (held-out targets)": pytest.approx(
          table["ceiling"]["macro_heldout"]
      ),
  }
