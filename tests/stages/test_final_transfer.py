"""`final.mixture_from`: the final stage trains another run's found mixture.

The mixture file is a made-up report/mixture.json in the form the report
stage writes; the workspace is the fake one of conftest.py, so these run
without JAX training. The whole flow (a runlocal run's report transferred
into a second run) is tests/test_transfer_flow.py.
"""

import dataclasses
import json

import pytest

from demix_jax import pipeline
from demix_jax.config_lib import ConfigError
from demix_jax.spec import transfer
from demix_jax.stages import common
from demix_jax.stages import final
from demix_jax.stages import registry
from demix_jax.stages import results
from tests import kit

GOOD = {"general": 0.625, "math": 0.25, "code": 0.125}


def _write_run(root, weights=None, search_hash="abc123", **extra):
  """A finished run's report/mixture.json (+ its search/done.json)."""
  (root / "report").mkdir(parents=True)
  blob = {
      "source_weights": GOOD if weights is None else weights,
      "alpha": {"general": 0.25, "math": 0.5, "code": 0.25},
      "candidates": ["general", "math", "code"],
      "general": "general",
      "beta": 0.5,
      "seq_len": 64,
      **extra,
  }
  (root / "report" / "mixture.json").write_text(json.dumps(blob))
  if search_hash is not None:
    (root / "search").mkdir()
    (root / "search" / "done.json").write_text(
        json.dumps({"config_hash": search_hash})
    )
  return root


def _spec(fake_ws, ref):
  return fake_ws(**{"final.mixture_from": str(ref)}).spec


def test_reads_a_run_dir_or_its_file(tmp_path, fake_ws):
  run = _write_run(tmp_path / "src")
  for ref in (run, run / "report" / "mixture.json"):
    got = transfer.read(_spec(fake_ws, ref))
    assert got.path == str(run / "report" / "mixture.json")
    # In this run's candidate order, exactly as written.
    assert list(got.source_weights) == ["general", "math", "code"]
    assert got.source_weights == GOOD
    assert got.alpha == {"general": 0.25, "math": 0.5, "code": 0.25}
    assert got.search_config_hash == "abc123"
  assert transfer.read(fake_ws().spec) is None  # "" = this run's search
  # No search/done.json beside the report: no hash, still usable.
  bare = _write_run(tmp_path / "bare", search_hash=None)
  assert transfer.read(_spec(fake_ws, bare)).search_config_hash == ""


@pytest.mark.parametrize(
    "weights,words",
    [
        ({"general": 0.5, "math": 0.5}, "missing candidates ['code']"),
        (
            {**GOOD, "web": 0.0},
            "sources ['web'] that are not candidates here",
        ),
        ({"general": 0.5, "math": 0.25, "code": 0.5}, "sum to 1.25"),
        ({"general": float("nan"), "math": 0.5, "code": 0.5}, "finite"),
        ({"general": 1.25, "math": -0.25, "code": 0.0}, "finite weight >= 0"),
        ({"general": "half", "math": 0.5, "code": 0.5}, "not a number"),
        ({}, "no 'source_weights'"),
    ],
    ids=lambda x: str(x)[:24],
)
def test_a_mixture_that_does_not_fit_names_the_field(
    tmp_path, fake_ws, weights, words
):
  run = _write_run(tmp_path / "src", weights=weights)
  with pytest.raises(ConfigError) as err:
    transfer.read(_spec(fake_ws, run))
  assert err.value.field == "final.mixture_from"
  assert words in str(err.value) and "Fix:" in str(err.value)


def test_a_missing_or_damaged_file(tmp_path, fake_ws):
  # A local path that does not exist is refused when the config resolves.
  with pytest.raises(ConfigError) as err:
    fake_ws(**{"final.mixture_from": str(tmp_path / "nowhere")})
  assert err.value.field == "final.mixture_from"
  assert "report/mixture.json" in str(err.value)
  run = _write_run(tmp_path / "src")
  spec = _spec(fake_ws, run)
  (run / "report" / "mixture.json").write_text('{"source_weights": ')
  with pytest.raises(ConfigError, match="is not JSON") as err:
    transfer.read(spec)
  assert err.value.field == "final.mixture_from"
  (run / "report" / "mixture.json").write_text("[1, 2]")
  with pytest.raises(ConfigError, match="not a JSON object"):
    transfer.read(spec)


def test_the_final_trains_the_transferred_mixture_without_a_search(
    tmp_path, fake_ws
):
  run = _write_run(tmp_path / "src")
  ws = fake_ws(**{"final.mixture_from": str(run)})
  rec = registry.get("final")
  # Needs only the base: no search, no components.
  assert rec.required(ws.spec) == ("base",)
  assert rec.required(fake_ws().spec) == ("base", "components", "search")
  assert registry.get("report").required(ws.spec) == ("final",)
  base = results.BaseResult(
      run_dir="/b", steps=1, train_seconds=0.0, mixture={}, tokens=1
  )
  inputs = common.Inputs(ws=ws, results={"base": base}, config_hash="h")
  r = final.run(ws.spec, inputs)
  calls = {c["run_dir"].rsplit("/", 1)[1]: c for c in ws.recipe.calls}
  assert calls["demix"]["weights"] == GOOD
  assert calls["natural"]["weights"] == ws.bounds.source_weights(
      ws.bounds.natural_alpha
  )
  assert all(c["init_from"] == "/b" for c in ws.recipe.calls)
  # Scored by the single-model evaluator: no components were asked for.
  assert ws.engines.asked == [] and ws.engines.model_asked == 1
  assert r.runs["demix"].scores["domain/code"] == 5.0 - GOOD["code"]
  # Where the mixture came from, kept in done.json.
  assert r.mixture_from.path == str(run / "report" / "mixture.json")
  assert r.mixture_from.search_config_hash == "abc123"
  back = results.FinalResult.from_json(json.loads(json.dumps(r.to_json())))
  assert back == r
  # A result without the field (this run's search) reads back as None.
  old = {k: v for k, v in r.to_json().items() if k != "mixture_from"}
  assert results.FinalResult.from_json(old).mixture_from is None


def test_preflight_checks_the_mixture_and_what_final_trained(tmp_path, fake_ws):
  run = _write_run(tmp_path / "src")
  spec = _spec(fake_ws, run)
  wd = tmp_path / "wd"
  rec = registry.get("final")
  rec.check(spec, str(wd))  # nothing trained yet: fine
  done = wd / "final" / "demix" / "done.json"
  done.parent.mkdir(parents=True)
  done.write_text(json.dumps({"weights": GOOD}))
  rec.check(spec, str(wd))  # the same mixture: resumes
  done.write_text(json.dumps({"weights": {**GOOD, "code": 0.2}}))
  with pytest.raises(ConfigError, match="trained") as err:
    rec.check(spec, str(wd))
  assert err.value.field == "final.mixture_from"
  assert "delete" in str(err.value)


def test_the_pipeline_asks_only_for_the_base(tmp_path, fake_ws):
  """`--stages=final` with a transferred mixture and no base: the missing
  input is the base, not the search."""
  run = _write_run(tmp_path / "src")
  ws = fake_ws(**{"final.mixture_from": str(run)})
  ws.spec = dataclasses.replace(ws.spec, stages=("final",))
  with pytest.raises(pipeline.MissingInputError, match="stage 'base'"):
    pipeline.run(ws.spec, str(ws.workdir), workspace=ws)


def test_the_cli_exits_2_before_training(tmp_path):
  run = _write_run(tmp_path / "src", weights={"general": 0.5, "math": 0.5})
  wd = tmp_path / "wd"
  proc = kit.run_cli(
      "--config=configs/demo.py:runlocal",
      f"--workdir={wd}",
      "--stages=base,final,report",
      f"--config.final.mixture_from={run}",
  )
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "config.final.mixture_from" in proc.stderr
  assert "missing candidates ['code']" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (wd / "base").exists()


def test_every_records_needs_run_earlier_and_are_declared(tmp_path, fake_ws):
  run = _write_run(tmp_path / "src")
  names = [s.name for s in registry.STAGES]
  for spec in (fake_ws().spec, _spec(fake_ws, run)):
    for s in registry.STAGES:
      got = s.required(spec)
      assert set(got) <= set(s.requires + s.optional), s.name
      assert all(names.index(n) < names.index(s.name) for n in got), s.name
  odd = dataclasses.replace(registry.get("final"), needs=lambda spec: ("x",))
  with pytest.raises(ValueError, match="not drawn from requires"):
    odd.required(fake_ws().spec)
