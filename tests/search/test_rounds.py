"""Tests of the iterative search and its state (demix_jax/search/rounds.py)."""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from demix_jax.search import objective
from demix_jax.search import pool
from demix_jax.search import rounds
from demix_jax.search import surrogates
from tests.kit import ROOT

OPT = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
SPEC = objective.ObjectiveSpec(("domain/a", "domain/b"))


def _direction(name):
  return name == "domain/a"


def _evaluate(alphas):
  d = ((alphas - OPT) ** 2).sum(axis=1)
  return {
      "domain/a": -d,
      "domain/b": 2 * d + (alphas[:, 0] - 0.3) ** 2,
      "extra": alphas[:, 1],
  }


def _pool(size=3000):
  return pool.sample_pool(
      pool.PoolConfig(size=size, sampler="uniform"),
      np.random.default_rng(0),
      pool.Bounds.unbounded(5),
  )


def _cfg(**kw):
  base = dict(
      n_init=16,
      rounds=3,
      top_region=0.05,
      final_topk=16,
      surrogate="ridge",
      chunk_size=4,
      seed=3,
  )
  base.update(kw)
  return rounds.SearchConfig(**base)


def test_round_sizes_and_region():
  assert rounds.round_sizes(64, 3) == [64, 32, 16]
  assert sum(rounds.round_sizes(64, 3)) == 112
  assert rounds.round_sizes(32, 3) == [32, 16, 8]
  with pytest.raises(ValueError, match="round sizes"):
    rounds.round_sizes(2, 3)
  assert rounds.region_size(0.05, 200_000) == 10_000
  assert rounds.region_size(1280, 200_000) == 1280


def test_average_topk_hand_cases():
  p = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.2, 0.8]])
  a, top = rounds.average_topk(p, np.array([0.3, 0.1, np.nan, 0.2]), 2)
  np.testing.assert_array_equal(top, [1, 3])
  np.testing.assert_allclose(a, [0.1, 0.9])
  # Ties broken by pool order; NaN never chosen even when k is larger.
  a, top = rounds.average_topk(p, np.array([0.1, 0.1, np.nan, 0.5]), 10)
  np.testing.assert_array_equal(top, [0, 1, 3])
  np.testing.assert_allclose(a, [0.4, 0.6])


def test_search_rounds_outputs_and_state(tmp_path):
  calls = []

  def ev(a):
    calls.append(len(a))
    return _evaluate(a)

  # A GP fits the quadratic bowl (ridge would extrapolate to a vertex).
  res = rounds.run_search(
      ev,
      _pool(),
      SPEC,
      _direction,
      _cfg(surrogate="gp"),
      str(tmp_path),
      names=tuple("abcde"),
  )
  assert [s["size"] for s in res.rounds] == [16, 8, 4]
  assert calls == [4] * 7  # per chunk
  assert res.n_evaluated == 28
  np.testing.assert_allclose(res.alpha.sum(), 1.0, atol=1e-12)
  assert len(res.top_indices) == 16
  # Later rounds come from the surrogate's top region: closer to OPT.
  lines = [json.loads(x) for x in open(tmp_path / "results.jsonl")]
  assert len(lines) == 28 and len({x["id"] for x in lines}) == 28
  dist = {
      r: np.mean(
          [
              np.sum((np.array(x["alpha"]) - OPT) ** 2)
              for x in lines
              if x["round"] == r
          ]
      )
      for r in range(3)
  }
  assert dist[2] < dist[0] and dist[1] < dist[0]
  assert np.sum((res.alpha - OPT) ** 2) < dist[0] / 5
  assert set(res.rounds[1]["cv_spearman"]) == {"domain/a", "domain/b"}
  assert res.rounds[0]["best"]["id"] in range(16)
  assert set(res.predicted) == {"domain/a", "domain/b", "extra"}
  assert all(v >= 0 for v in res.predicted_std.values())
  header = open(res.table_path).readline().strip().split(",")
  assert header[:7] == [
      "id",
      "round",
      "alpha/a",
      "alpha/b",
      "alpha/c",
      "alpha/d",
      "alpha/e",
  ]
  saved = json.load(open(tmp_path / "result.json"))
  assert set(saved["alpha"]) == set("abcde")
  st = json.load(open(tmp_path / "state.json"))
  assert st["round"] == 3 and st["pending"] is None


def test_exploration_uses_uncertainty(tmp_path):
  """A larger UCB kappa proposes mixtures the surrogate is less sure of.

  Three searches that differ only in `exploration` (GP mean for ranking,
  GP std for the bonus) share round 0. A GP fitted on round 0, the model
  every run's round 1 was ranked with, gives the predictive std at each
  run's round-1 proposals: measured 0.028 (kappa 0), 0.044 (3) and 0.076
  (10) for domain/a. Without the bonus the three runs would propose the
  same round 1; with its sign flipped the std would fall.
  """
  rows, stds = {}, {}
  for kappa in (0.0, 3.0, 10.0):
    res = rounds.run_search(
        _evaluate,
        _pool(),
        SPEC,
        _direction,
        _cfg(surrogate="gp", exploration=kappa, uncertainty="gp"),
        str(tmp_path / str(kappa)),
    )
    assert res.n_evaluated == 28
    rows[kappa] = [
        json.loads(x) for x in open(tmp_path / str(kappa) / "results.jsonl")
    ]
  first = [r for r in rows[0.0] if r["round"] == 0]
  for kappa in rows:
    assert [r for r in rows[kappa] if r["round"] == 0] == first
  x0 = np.array([r["alpha"] for r in first])
  y0 = {t: np.array([r["scores"][t] for r in first]) for t in SPEC.targets}
  cfg = _cfg()
  gp = surrogates.make_surrogate("gp", len(x0), cfg.lgbm, cfg.ridge_alpha)
  gp = gp.fit(x0, y0)
  ids = {}
  for kappa, rs in rows.items():
    round1 = [r for r in rs if r["round"] == 1]
    ids[kappa] = {r["id"] for r in round1}
    _, std = gp.predict_with_std(np.array([r["alpha"] for r in round1]))
    stds[kappa] = {t: float(np.mean(v)) for t, v in std.items()}
  assert ids[0.0] != ids[3.0] and ids[3.0] != ids[10.0]
  for t in SPEC.targets:
    assert stds[0.0][t] < stds[3.0][t] < stds[10.0][t], stds
    assert stds[10.0][t] > 2 * stds[0.0][t], stds


def test_exploration_final_alpha_is_ranked_by_the_mean(tmp_path):
  """The UCB bonus chooses what to measure; alpha* uses the predicted mean.

  Re-fitting the run's surrogate (GP) on every scored proxy and averaging
  the pool's top-k by its mean gives exactly the reported alpha*; ranking
  by the optimistic scores (kappa = 10) gives another mixture.
  """
  p = _pool()
  cfg = _cfg(surrogate="gp", exploration=10.0, uncertainty="gp")
  res = rounds.run_search(_evaluate, p, SPEC, _direction, cfg, str(tmp_path))
  rows = [json.loads(x) for x in open(tmp_path / "results.jsonl")]
  x = np.array([r["alpha"] for r in rows])
  y = {t: np.array([r["scores"][t] for r in rows]) for t in SPEC.targets}
  gp = surrogates.make_surrogate("gp", len(x), cfg.lgbm, cfg.ridge_alpha)
  gp = gp.fit(x, y)
  mean, std = gp.predict_with_std(p)
  by_mean, _ = rounds.average_topk(
      p, objective.evaluate(mean, SPEC, _direction), cfg.final_topk
  )
  ucb = objective.optimistic_scores(mean, std, SPEC, _direction, 10.0)
  by_ucb, _ = rounds.average_topk(
      p, objective.evaluate(ucb, SPEC, _direction), cfg.final_topk
  )
  np.testing.assert_allclose(res.alpha, by_mean, atol=1e-12)
  assert np.abs(by_ucb - by_mean).max() > 1e-3


class _Crash(Exception):
  pass


def test_resume_after_a_crash_scores_nothing_twice(tmp_path):
  ref = rounds.run_search(
      _evaluate, _pool(), SPEC, _direction, _cfg(), str(tmp_path / "ref")
  )
  seen = []
  budget = {"n": 5}  # crash in round 1, in the middle of it

  def flaky(a):
    if budget["n"] == 0:
      raise _Crash()
    budget["n"] -= 1
    seen.extend(map(tuple, a))
    return _evaluate(a)

  with pytest.raises(_Crash):
    rounds.run_search(
        flaky, _pool(), SPEC, _direction, _cfg(), str(tmp_path / "run")
    )
  budget["n"] = 100
  before = len(seen)
  res = rounds.run_search(
      flaky, _pool, SPEC, _direction, _cfg(), str(tmp_path / "run")
  )
  assert len(set(seen)) == len(seen) == 28
  assert before == 20
  np.testing.assert_array_equal(res.alpha, ref.alpha)


def test_nan_scores_are_kept_and_excluded(tmp_path, caplog):
  def diverging(a):
    s = _evaluate(a)
    s["domain/a"][0] = np.nan
    return s

  with caplog.at_level(logging.WARNING):
    res = rounds.run_search(
        diverging, _pool(), SPEC, _direction, _cfg(), str(tmp_path)
    )
  assert "NaN" in caplog.text
  assert res.n_evaluated == 28
  assert np.isfinite(res.alpha).all()
  rows = [json.loads(x) for x in open(tmp_path / "results.jsonl")]
  assert sum(r["scores"]["domain/a"] is None for r in rows) == 7


def test_bad_inputs_raise(tmp_path):
  with pytest.raises(ValueError, match="returned 1 values"):
    rounds.run_search(
        lambda a: {"domain/a": np.zeros(1), "domain/b": np.zeros(1)},
        _pool(),
        SPEC,
        _direction,
        _cfg(),
        str(tmp_path / "a"),
    )
  calls = []
  with pytest.raises(ValueError, match="at least"):
    rounds.run_search(
        lambda a: calls.append(a),
        _pool(),
        SPEC,
        _direction,
        _cfg(n_init=2, rounds=2),
        str(tmp_path / "b"),
    )
  assert not calls  # refused before any proxy was scored
  rounds.run_search(
      _evaluate, _pool(), SPEC, _direction, _cfg(rounds=1), str(tmp_path / "c")
  )
  with pytest.raises(ValueError, match="other settings"):
    rounds.run_search(
        _evaluate,
        _pool(),
        SPEC,
        _direction,
        _cfg(rounds=1, seed=4),
        str(tmp_path / "c"),
    )
  with pytest.raises(ValueError, match="different pool"):
    rounds.run_search(
        _evaluate,
        _pool(2000),
        SPEC,
        _direction,
        _cfg(rounds=1),
        str(tmp_path / "c"),
    )


_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {here!r})
    import test_rounds as t
    from demix_jax.search import rounds

    def slow(a):
      with open(sys.argv[2], "a") as f:
        for row in a:
          f.write(" ".join(repr(float(v)) for v in row) + "\\n")
      time.sleep(float(sys.argv[3]))
      return t._evaluate(a)

    res = rounds.run_search(slow, t._pool, t.SPEC, t._direction,
                            t._cfg(chunk_size=2), sys.argv[1])
    print(repr(res.alpha.tolist()))
""")


def test_sigkill_and_resume_reaches_the_same_alpha(tmp_path):
  script = tmp_path / "search.py"
  script.write_text(
      _SCRIPT.format(root=str(ROOT), here=os.path.dirname(__file__))
  )
  env = dict(os.environ, JAX_PLATFORMS="cpu")

  def run(workdir, log, delay):
    return subprocess.run(
        [sys.executable, str(script), str(workdir), str(log), str(delay)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout

  ref = run(tmp_path / "ref", tmp_path / "ref.log", 0.0)
  # Kill while round 1 is being scored (16 + a few of 8 results written).
  work, log = tmp_path / "run", tmp_path / "run.log"
  proc = subprocess.Popen(
      [sys.executable, str(script), str(work), str(log), "0.3"], env=env
  )
  results = work / "results.jsonl"
  deadline = time.time() + 120
  while time.time() < deadline:
    if results.exists() and len(results.read_text().splitlines()) >= 18:
      break
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  scored = {line for line in open(log)}
  n_scored = len(open(results).read().splitlines())
  assert 18 <= n_scored < 28
  out = run(work, tmp_path / "resume.log", 0.0)
  resumed = set(open(tmp_path / "resume.log"))
  saved = [json.loads(x) for x in open(results)]
  before = {
      " ".join(repr(v) for v in r["alpha"]) + "\n" for r in saved[:n_scored]
  }
  # Nothing recorded before the kill was evaluated again.
  assert not before & resumed
  assert len(saved) == 28 and len({r["id"] for r in saved}) == 28
  assert scored >= before
  assert out == ref
