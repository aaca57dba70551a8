"""run_validation end to end with fake trainer and scorers."""

import json
import math

import numpy as np
import pytest

from demix_jax import stats
from demix_jax.report import canvas
from demix_jax.validation import harness

R, K = 12, 3
HIB = {"general": False, "code": False, "math": True}  # bpb, bpb, accuracy
W = {
    "general": np.array([1.0, 0.2, 0.1]),
    "code": np.array([0.1, 1.0, 0.3]),
    "math": np.array([0.2, 0.3, 1.0]),
}
FRACTIONS = (1 / 16, 1 / 4)
VARIANTS = (
    harness.MergedVariant("exact", 1e6),  # a perfect proxy (monotone, no noise)
    harness.MergedVariant("linear_4m", 4e6),
    harness.MergedVariant("ties_4m", 4e6, merge_method="ties"),
    harness.MergedVariant("beta0_4m", 4e6, beta=0.0),
)
COST = harness.CostSettings(n_params=1e6, n_components=K, eval_tokens=3e4)


def _alphas():
  return np.random.default_rng(0).dirichlet(np.ones(K), size=R)


def _truth(alpha):
  """Reference score per domain: bpb falls, accuracy rises with weight."""
  return {
      d: 2.0 - alpha @ w if not HIB[d] else 0.2 + 0.5 * alpha @ w
      for d, w in W.items()
  }


class Fakes:
  """Counting fake trainer and scorers; proxies are noisy monotone maps."""

  def __init__(self, alphas, fail_at=None):
    self.alphas = alphas
    self.fail_at = fail_at
    self.trained, self.scored, self.merged = [], [], []

  def train_reference(self, i, alpha, out_dir):
    if i == self.fail_at:
      raise RuntimeError("killed")
    np.testing.assert_allclose(alpha, self.alphas[i])
    with open(f"{out_dir}/weights.txt", "w") as f:
      f.write("trained")
    self.trained.append(i)

  def score_reference(self, i, fraction):
    self.scored.append((i, fraction))
    rng = np.random.default_rng([i, int(fraction * 1e4)])
    out = {}
    for d, v in _truth(self.alphas[i]).items():
      # Shorter training: worse scores and noisier ranking.
      gap = 0.3 * (1 - fraction)
      noise = 0.02 * (1 - fraction) * rng.normal()
      out[d] = (v + gap if not HIB[d] else v - 0.5 * gap) + noise
    return out

  def score_merged(self, alphas, variant):
    self.merged.append(variant)
    sigma = 0.0 if variant == "exact" else 0.01
    rng = np.random.default_rng(len(variant))
    out = {}
    for d in HIB:
      ref = np.array([_truth(a)[d] for a in alphas])
      out[d] = np.exp(ref) + sigma * rng.normal(size=len(ref))  # monotone
    if variant == "exact":
      out["diagnostics"] = {
          "delta_mean": 0.05,
          "max_barrier": 0.01,
          "barrier_target": "heldout/bpb",
      }
    return out


def _run(tmp_path, fakes, alphas, **kw):
  return harness.run_validation(
      str(tmp_path),
      alphas,
      HIB,
      fakes.train_reference,
      fakes.score_reference,
      fakes.score_merged,
      reference_tokens=16e6,
      variants=VARIANTS,
      cost=COST,
      proxy_fractions=FRACTIONS,
      **kw,
  )


def test_end_to_end_table_plot_and_resume(tmp_path):
  alphas = _alphas()
  fakes = Fakes(alphas)
  table = _run(
      tmp_path,
      fakes,
      alphas,
      final_scores={"found": {"general": 0.0, "code": 9.0, "math": 0.9}},
  )
  assert sorted(fakes.trained) == list(range(R))
  assert len(fakes.scored) == R * (1 + len(FRACTIONS))
  rows = table["rows"]
  assert len(rows) == len(FRACTIONS) + len(VARIANTS)
  assert [r["family"] for r in rows] == ["trained"] * 2 + ["merged"] * 4
  for r in rows:
    for m in (
        "rho",
        "top25_rho",
        "recovery",
        "decision_accuracy",
        "regret",
        "pick_rank",
    ):
      assert set(r[m]) == set(HIB) | {"macro"}
    for d in list(HIB) + ["macro"]:
      assert -1 <= r["rho"][d] <= 1 and -1 <= r["top25_rho"][d] <= 1
      assert 0 <= r["decision_accuracy"][d] <= 1
      assert r["regret"][d] >= 0 and 1 <= r["pick_rank"][d] <= R
  by_variant = {r["variant"]: r for r in rows}
  exact = by_variant["exact"]
  for d in list(HIB) + ["macro"]:
    assert exact["rho"][d] == pytest.approx(1.0)
    assert exact["top25_rho"][d] == pytest.approx(1.0)
    assert exact["decision_accuracy"][d] == 1.0
    assert exact["regret"][d] == 0.0 and exact["pick_rank"][d] == 1.0
  # Shorter trained proxies are weaker: recovery below 1 in every domain.
  short = rows[0]
  assert short["fraction"] == pytest.approx(1 / 16)
  assert all(short["recovery"][d] < 1 for d in HIB)
  # Hand costs: trained 12 x 1M tokens; DeMix 3 x 4M + 12 x (3e4 / 3).
  assert short["total_tokens"] == pytest.approx(12 * 1e6)
  assert by_variant["linear_4m"]["total_tokens"] == pytest.approx(
      3 * 4e6 + 12 * 1e4
  )
  assert by_variant["linear_4m"]["total_flops"] == pytest.approx(
      6 * 1e6 * (3 * 4e6 + 12 * 1e4)
  )
  assert [r["main"] for r in rows] == [True, True, True, True, False, False]
  assert table["mixture_ranks"]["found"] == {
      "general": 1.0,
      "code": R + 1.0,
      "math": 1.0,
      "macro": pytest.approx((1 + (R + 1) + 1) / 3),
  }

  root = tmp_path / "validate"
  on_disk = json.loads(
      (root / "table.json").read_text(),
      parse_constant=lambda c: pytest.fail(f"non-JSON {c}"),
  )
  assert len(on_disk["rows"]) == len(rows)
  md = (root / "table.md").read_text()
  assert md.count("| Trained proxy (RegMix/CLIMB) |") == 2
  table2, components = md.split("Components behind each merged family")
  assert table2.count("| DeMix |") == 2
  # One diagnostics row: only the "exact" fake reports diagnostics.
  assert (
      components.split("Merge methods")[0].count("| DeMix | 1M | 5.0% |") == 1
  )
  assert "paper Table 4" in md and "paper Table 5" in md
  assert "| ties |" in md and "| 0.0 |" in md
  assert "| found |" in md
  assert canvas.png_is_drawn(table["paths"]["plot"])

  again = Fakes(alphas)
  table2 = _run(tmp_path, again, alphas)
  assert again.trained == [] and again.scored == [] and again.merged == []
  for a, b in zip(table2["rows"], rows):
    assert a["rho"] == b["rho"] and a["regret"] == b["regret"]


def test_resume_after_a_crash_and_lost_score_cache(tmp_path):
  alphas = _alphas()
  crashing = Fakes(alphas, fail_at=5)
  with pytest.raises(RuntimeError, match="killed"):
    _run(tmp_path, crashing, alphas)
  assert crashing.trained == [0, 1, 2, 3, 4]
  resumed = Fakes(alphas)
  _run(tmp_path, resumed, alphas)
  assert resumed.trained == list(range(5, R))
  assert {i for i, _ in resumed.scored} == set(range(5, R))
  # Scores lost but models kept: rescore, never retrain.
  (tmp_path / "validate" / "scores" / "reference.json").unlink()
  rescored = Fakes(alphas)
  _run(tmp_path, rescored, alphas)
  assert rescored.trained == []
  assert len(rescored.scored) == R * (1 + len(FRACTIONS))
  assert rescored.merged == []  # merged cache untouched


def test_changed_mixtures_fail_loudly(tmp_path):
  alphas = _alphas()
  _run(tmp_path, Fakes(alphas), alphas)
  other = alphas[::-1].copy()
  with pytest.raises(ValueError, match="new workdir"):
    _run(tmp_path, Fakes(other), other)


def test_nan_scores_are_dropped_not_fatal(tmp_path):
  alphas = _alphas()
  fakes = Fakes(alphas)
  merged = fakes.score_merged

  def diverged(a, variant):
    out = merged(a, variant)
    out["code"][3] = np.nan
    return out

  fakes.score_merged = diverged
  table = _run(tmp_path, fakes, alphas)
  exact = next(r for r in table["rows"] if r["variant"] == "exact")
  assert exact["rho"]["code"] == pytest.approx(1.0)  # 11 surviving pairs
  assert math.isfinite(exact["recovery"]["code"])


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(alphas=np.full((2, 3), 1 / 3)), "R >= 3"),
        (dict(alphas=np.full((4, 3), 0.5)), "sum to 1"),
        (dict(proxy_fractions=(1.0,)), r"\(0, 1\)"),
        (dict(variants=(VARIANTS[0], VARIANTS[0])), "unique"),
    ],
)
def test_bad_inputs(tmp_path, kw, match):
  alphas = kw.pop("alphas", _alphas())
  fakes = Fakes(alphas)
  args = dict(
      reference_tokens=16e6,
      variants=VARIANTS,
      cost=COST,
      proxy_fractions=FRACTIONS,
  )
  args.update(kw)
  with pytest.raises(ValueError, match=match):
    harness.run_validation(
        str(tmp_path),
        alphas,
        HIB,
        fakes.train_reference,
        fakes.score_reference,
        fakes.score_merged,
        **args,
    )
  assert fakes.trained == []


def test_fraction_label():
  assert harness.fraction_label(1 / 16) == "1/16"
  assert harness.fraction_label(0.25) == "1/4"
  assert harness.fraction_label(1.0) == "1"
  assert harness.proxy_budgets(16e6, FRACTIONS) == [1_000_000, 4_000_000]


def test_noise_ceiling_and_intervals(tmp_path):
  alphas = _alphas()
  fakes = Fakes(alphas)
  twinned = []

  def train_twin(i, alpha, out_dir):
    np.testing.assert_allclose(alpha, alphas[i])
    twinned.append(i)

  def score_twin(i, fraction):
    assert fraction == 1.0
    rng = np.random.default_rng([99, i])
    # Same mixture, another data order: the reference score plus noise.
    return {d: v + 0.05 * rng.normal() for d, v in _truth(alphas[i]).items()}

  table = _run(
      tmp_path,
      fakes,
      alphas,
      twins=8,
      train_twin=train_twin,
      score_twin=score_twin,
  )
  assert twinned == list(range(8))
  ref = table["reference_scores"]
  twin = table["twin_scores"]
  for d in HIB:
    assert table["ceiling"][d] == pytest.approx(
        stats.spearman(ref[d][:8], twin[d])
    )
    lo, hi = table["ceiling_ci"][d]
    assert lo <= table["ceiling"][d] <= hi
  for r in table["rows"]:
    assert r["ceiling_macro"] == table["ceiling"]["macro"]
    assert r["rho_macro"] == r["rho"]["macro"]
    lo, hi = r["rho_macro_ci"]
    assert lo <= r["rho_macro"] + 1e-12 and r["rho_macro"] <= hi + 1e-12
  exact = next(r for r in table["rows"] if r["variant"] == "exact")
  assert exact["rho_macro_ci"] == pytest.approx([1.0, 1.0])
  # Twins are cached like references: a rerun trains nothing.
  twinned.clear()
  again = _run(
      tmp_path,
      Fakes(alphas),
      alphas,
      twins=8,
      train_twin=train_twin,
      score_twin=score_twin,
  )
  assert twinned == [] and again["ceiling"] == table["ceiling"]
  md = (tmp_path / "validate" / "table.md").read_text()
  assert "Noise ceiling" in md and "delta (mean)" in md and "| 5.0% |" in md
  assert exact["diagnostics"]["max_barrier"] == 0.01
  assert (
      next(r for r in table["rows"] if r["variant"] == "ties_4m")["diagnostics"]
      is None
  )


def test_twins_need_their_callables(tmp_path):
  alphas = _alphas()
  with pytest.raises(ValueError, match="train_twin"):
    _run(tmp_path, Fakes(alphas), alphas, twins=4)
  with pytest.raises(ValueError, match="twins=2"):
    _run(
        tmp_path,
        Fakes(alphas),
        alphas,
        twins=2,
        train_twin=lambda *a: None,
        score_twin=lambda *a: {},
    )
