"""Stages base, components and final against a fake workspace."""

import pytest

from demix_jax import config_lib
from demix_jax.stages import base
from demix_jax.stages import common
from demix_jax.stages import components
from demix_jax.stages import final
from demix_jax.stages import results
from tests.kit import results as kit_results


def _inputs(ws, **res):
  return common.Inputs(ws=ws, results=res, config_hash="h")


def _base():
  return results.BaseResult(
      run_dir="/b", steps=1, train_seconds=0.0, mixture={}, tokens=1
  )


def test_base_trains_the_pretrain_mixture(fake_ws):
  ws = fake_ws()
  r = base.run(ws.spec, _inputs(ws))
  (call,) = ws.recipe.calls
  assert call["weights"] == dict(ws.spec.data.pretrain_mixture)
  assert call["config_hash"] == "h" and call["init_from"] == ""
  assert r.run_dir == str(ws.workdir / "base" / "run")
  assert r.tokens == ws.spec.budgets.base_tokens and r.steps == 3


def test_components_pad_with_general_seed_apart_and_resume(fake_ws):
  ws = fake_ws()
  inputs = _inputs(ws, base=_base())
  r = components.run(ws.spec, inputs)
  beta, general = ws.spec.data.beta, ws.spec.data.general
  assert list(r.components) == list(ws.candidates)
  for i, (call, cand) in enumerate(zip(ws.recipe.calls, ws.candidates)):
    assert call["init_from"] == "/b"
    assert call["seed_offset"] == common.COMPONENT_SEED + i
    assert call["budgets"] == ws.spec.budgets.component_budgets
    want = {general: 1.0} if cand == general else {general: beta, cand: beta}
    assert call["weights"] == want
  assert r.tokens == len(ws.candidates) * ws.spec.budgets.component_tokens
  # Each component recorded itself: a rerun trains nothing and agrees.
  again = components.run(ws.spec, inputs)
  assert len(ws.recipe.calls) == len(ws.candidates)
  assert again.components == r.components


def test_final_trains_found_and_baselines_and_scores_them(fake_ws):
  ws = fake_ws()
  comps = results.ComponentsResult(
      components={
          c: results.TrainedRun(
              run_dir=f"/c/{c}", steps=1, train_seconds=0.0, mixture={}
          )
          for c in ws.candidates
      }
  )
  found = {"general": 0.5, "code": 0.5}
  search = kit_results.search_result(source_weights=found)
  inputs = _inputs(ws, base=_base(), components=comps, search=search)
  r = final.run(ws.spec, inputs)
  assert list(r.runs)[0] == "demix" and "natural" in r.runs
  calls = {c["run_dir"].rsplit("/", 1)[1]: c for c in ws.recipe.calls}
  assert calls["demix"]["weights"] == found
  natural = ws.bounds.source_weights(ws.bounds.natural_alpha)
  assert calls["natural"]["weights"] == natural
  assert [c["seed_offset"] for c in ws.recipe.calls] == [
      common.FINAL_SEED + i for i in range(len(r.runs))
  ]
  # Scored by the components' evaluator at the budget the search used.
  (asked,) = ws.engines.asked
  assert asked[:3] == ("/b", comps.run_dirs(), ws.spec.budgets.use_budget)
  assert r.runs["demix"].scores["domain/code"] == 4.5
  # Finished runs are read back, neither retrained nor rescored.
  again = final.run(ws.spec, inputs)
  assert again.runs == r.runs and len(ws.recipe.calls) == len(r.runs)
  assert len(ws.engines.ev.scored) == len(r.runs)


def test_final_seeds_train_each_mixture_again_with_its_own_seed(fake_ws):
  ws = fake_ws(**{"final.seeds": 2})
  comps = results.ComponentsResult(
      components={
          c: results.TrainedRun(
              run_dir=f"/c/{c}", steps=1, train_seconds=0.0, mixture={}
          )
          for c in ws.candidates
      }
  )
  search = kit_results.search_result(
      source_weights={"general": 0.5, "code": 0.5}
  )
  inputs = _inputs(ws, base=_base(), components=comps, search=search)
  r = final.run(ws.spec, inputs)
  names = list(r.runs)
  dirs = [c["run_dir"].rsplit("/", 1)[1] for c in ws.recipe.calls]
  assert dirs == [n + s for n in names for s in ("", "-seed1")]
  offsets = [c["seed_offset"] for c in ws.recipe.calls]
  assert offsets == [
      common.FINAL_SEED + i + k * common.FINAL_REPEAT_SEED
      for i in range(len(names))
      for k in range(2)
  ]
  assert len(set(offsets)) == len(offsets)
  demix = r.runs["demix"]
  assert len(demix.seed_scores) == 2
  assert demix.scores["domain/code"] == 4.5  # the mean over the seeds
  assert demix.run_dir.endswith("/final/demix")
  assert r.tokens == 2 * len(names) * ws.spec.final.tokens
  # Resumes from each seed's done.json.
  again = final.run(ws.spec, inputs)
  assert again.runs == r.runs and len(ws.recipe.calls) == 2 * len(names)


def test_final_seeds_must_be_positive(fake_ws):
  with pytest.raises(config_lib.ConfigError) as err:
    fake_ws(**{"final.seeds": 0})
  assert err.value.field == "final.seeds"


def test_final_seeds_default_to_one_when_the_config_has_none():
  from configs import demo  # pylint: disable=g-import-not-at-top
  from demix_jax import spec as spec_lib  # pylint: disable=g-import-not-at-top

  c = demo.get_config("runlocal")
  del c.final["seeds"]
  assert spec_lib.resolve(c).final.seeds == 1
  assert spec_lib.resolve(demo.get_config()).final.seeds == 2
