"""Stage baselines (RegMix, CLIMB over trained proxies) on a fake workspace."""

import numpy as np
import pytest

from demix_jax import spec as spec_lib
from demix_jax.search import state as state_lib
from demix_jax.stages import baselines
from demix_jax.stages import common
from demix_jax.stages import final
from demix_jax.stages import results
from demix_jax.stages import search
from tests.kit import results as kit_results

TOKENS = 1024


def _methods(regmix=6, climb=4, climb_rounds=2, tokens=TOKENS):
  return {
      "regmix": {
          "kind": "regmix",
          "proxies": regmix,
          "tokens_per_proxy": tokens,
      },
      "climb": {
          "kind": "climb",
          "proxies": climb,
          "rounds": climb_rounds,
          "tokens_per_proxy": tokens,
      },
  }


def _ws(fake_ws, methods=None):
  # The fake evaluator scores domain/code (bpb: lower is better), lower
  # the more code a model trained on.
  return fake_ws(
      **{
          "search.baselines": methods or _methods(),
          "search.objective": "domain/code",
          "search.gradient.enabled": False,
      }
  )


def _results(ws):
  comps = results.ComponentsResult(
      components={
          c: results.TrainedRun(
              run_dir=f"/c/{c}", steps=1, train_seconds=0.0, mixture={}
          )
          for c in ws.candidates
      }
  )
  base = results.BaseResult(
      run_dir="/b", steps=1, train_seconds=0.0, mixture={}, tokens=100
  )
  found = kit_results.search_result(
      source_weights={"general": 0.75, "code": 0.25},
      n_proxies=12,
      objective=results.SearchObjective(
          kind="target", targets=("domain/code",)
      ),
      base_scores={"domain/code": 5.0, "heldout/bpb": 4.0},
  )
  return {"base": base, "components": comps, "search": found}


def _inputs(ws, **res):
  return common.Inputs(ws=ws, results=res, config_hash="h")


def _row(call):
  return int(call["run_dir"].rsplit("/p", 1)[1])


def test_regmix_and_climb_train_pool_rows_from_the_base(fake_ws):
  ws = _ws(fake_ws)
  r = baselines.run(ws.spec, _inputs(ws, **_results(ws)))
  assert set(r.methods) == {"regmix", "climb"}
  pool = search.sample_pool(ws.spec, ws, ws.spec.seed)  # the search's own
  calls = ws.recipe.calls
  rows = [_row(c) for c in calls]
  # Every proxy trains once from the base, seeded by its pool row, on
  # that row's source weights, for the method's tokens.
  assert len(set(rows)) == len(rows)
  for c, i in zip(calls, rows):
    assert c["init_from"] == "/b"
    assert c["seed_offset"] == baselines.PROXY_SEED + i
    alpha = dict(zip(ws.candidates, pool[i].tolist()))
    assert c["weights"] == ws.bounds.source_weights(alpha)
    assert c["run_dir"] == str(baselines.proxy_dir(ws, TOKENS, i))
  # RegMix: the first 6 pool rows, one round. CLIMB: its round 0 is the
  # first 4 rows (already trained for RegMix), then 2 from the top region.
  regmix, climb = r.methods["regmix"], r.methods["climb"]
  assert regmix.kind == "regmix" and regmix.n_proxies == 6
  assert [s["size"] for s in regmix.rounds] == [6]
  assert climb.kind == "climb" and climb.n_proxies == 6
  assert [s["size"] for s in climb.rounds] == [4, 2]
  drawn = {
      n: {
          int(x["id"])
          for x in state_lib.read_results(
              ws.workdir / "baselines" / n / "state"
          )
      }
      for n in r.methods
  }
  assert drawn["regmix"] == set(range(6))
  assert set(range(4)) <= drawn["climb"] and len(drawn["climb"]) == 6
  # Rows both drew were trained once.
  assert set(rows) == drawn["regmix"] | drawn["climb"]
  # Each method's cost counts all of its proxies; the stage's only the
  # runs it trained (the fake trainer trains exactly the tokens asked).
  assert regmix.proxy_tokens == climb.proxy_tokens == 6 * TOKENS
  assert r.tokens == len(rows) * TOKENS
  # Scored by the search's evaluator; the surrogate prefers code.
  (asked,) = ws.engines.asked
  assert asked[2] == ws.spec.budgets.use_budget
  for m in r.methods.values():
    assert m.source_weights == ws.bounds.source_weights(m.alpha)
    assert m.alpha["code"] > ws.bounds.natural_alpha["code"]
  assert r.base_scores["domain/code"] == 5.0  # the search's record


def test_a_killed_stage_never_retrains_a_finished_proxy(fake_ws):
  ws = _ws(fake_ws)
  res = _results(ws)
  train = ws.recipe.train
  budget = [5]

  def dies_after_five(*a, **kw):
    if not budget[0]:
      raise KeyboardInterrupt("killed")
    budget[0] -= 1
    return train(*a, **kw)

  ws.recipe.train = dies_after_five
  with pytest.raises(KeyboardInterrupt):
    baselines.run(ws.spec, _inputs(ws, **res))
  assert len(ws.recipe.calls) == 5
  ws.recipe.train = train
  r = baselines.run(ws.spec, _inputs(ws, **res))
  rows = [_row(c) for c in ws.recipe.calls]
  assert len(rows) == len(set(rows))  # nothing trained twice
  # The resumed stage ends where an unbroken one does.
  fresh = _ws(fake_ws)
  fresh.workdir = ws.workdir.parent / "fresh"
  whole = baselines.run(fresh.spec, _inputs(fresh, **_results(fresh)))
  assert len(fresh.recipe.calls) == len(rows)
  for name in r.methods:
    assert r.methods[name].alpha == pytest.approx(whole.methods[name].alpha)
    assert r.methods[name].proxy_tokens == whole.methods[name].proxy_tokens
  # Run again: every proxy is read back, nothing is trained or scored.
  scored = len(ws.engines.ev.scored)
  again = baselines.run(ws.spec, _inputs(ws, **res))
  assert len(ws.recipe.calls) == len(rows)
  assert len(ws.engines.ev.scored) == scored
  assert again.methods == r.methods and again.tokens == r.tokens


def test_a_proxy_record_of_other_weights_is_refused(fake_ws):
  ws = _ws(fake_ws, {"regmix": _methods()["regmix"]})
  baselines.run(ws.spec, _inputs(ws, **_results(ws)))
  path = baselines.proxy_dir(ws, TOKENS, 0) / "done.json"
  run = results.FinalRun.from_json(__import__("json").loads(path.read_text()))
  other = results.FinalRun(
      run_dir=run.run_dir,
      weights={**run.weights, "general": run.weights["general"] + 0.1},
      train_seconds=0.0,
      scores=run.scores,
  )
  path.write_text(__import__("json").dumps(other.to_json()))
  (ws.workdir / "baselines" / "regmix").rename(ws.workdir / "moved")
  with pytest.raises(Exception, match="other source weights"):
    baselines.run(ws.spec, _inputs(ws, **_results(ws)))


def test_without_a_search_the_base_is_scored_for_the_reference(
    fake_ws, monkeypatch
):
  ws = _ws(fake_ws, {"regmix": _methods()["regmix"]})
  res = _results(ws)
  del res["search"]
  loaded = []
  monkeypatch.setattr(
      baselines.checkpointing,
      "load_params",
      lambda d: loaded.append(d) or {"code": 0.0},
  )
  r = baselines.run(ws.spec, _inputs(ws, **res))
  assert loaded == ["/b"]
  assert r.base_scores == {"domain/code": 5.0, "heldout/bpb": 4.0}


def test_final_trains_each_method_mixture_under_its_name(fake_ws):
  ws = _ws(fake_ws)
  res = _results(ws)
  found = baselines.run(ws.spec, _inputs(ws, **res))
  runs = final.mixtures(ws.spec, _inputs(ws, **res, baselines=found))
  assert list(runs)[:2] == ["demix", "natural"]
  for name, m in found.methods.items():
    assert runs[name] == m.source_weights
  # Without the stage's result the final stage trains no method.
  assert set(final.mixtures(ws.spec, _inputs(ws, **res))) == {
      "demix",
      "natural",
  }


def test_final_refuses_to_start_without_the_methods_mixtures(fake_ws, tmp_path):
  ws = _ws(fake_ws)
  spec = ws.spec
  import dataclasses  # pylint: disable=g-import-not-at-top

  alone = dataclasses.replace(spec, stages=("final",))
  with pytest.raises(spec_lib.ConfigError, match="search.baselines"):
    final.STAGE.check(alone, str(tmp_path))
  final.STAGE.check(
      dataclasses.replace(spec, stages=("baselines", "final")), ""
  )
  (tmp_path / "baselines").mkdir()
  (tmp_path / "baselines" / "done.json").write_text("{}")
  final.STAGE.check(alone, str(tmp_path))  # finished before: fine
  plain = fake_ws()
  final.STAGE.check(dataclasses.replace(plain.spec, stages=("final",)), "")


def test_the_pool_rows_a_search_proposes_are_found(fake_ws):
  pool = np.array([[0.5, 0.5], [0.2, 0.8], [0.5, 0.5]])
  assert baselines._pool_index(pool, pool[1]) == 1
  assert baselines._pool_index(pool, pool[2]) == 0  # same row, same run
  with pytest.raises(ValueError, match="not a pool row"):
    baselines._pool_index(pool, np.array([0.3, 0.7]))
