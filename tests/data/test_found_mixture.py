"""The found mixture leaves as a JSON of weights and a seqio registration."""

import importlib.util
import json
import types

import pytest

from configs import demo
from demix_jax import spec as spec_lib
from demix_jax.data import seqio_tasks
from demix_jax.stages import report
from demix_jax.stages import results


def test_mixture_files_register_the_found_weights(
    tmp_path, offline_sources, vocab
):
  seqio = pytest.importorskip("seqio")
  spec = spec_lib.resolve(demo.get_config("runlocal"))
  search = types.SimpleNamespace(
      source_weights={"general": 0.6, "math": 0.0, "code": 0.4},
      alpha={"general": 0.2, "math": 0.0, "code": 0.8},
      objective=results.SearchObjective(
          kind="composite", targets=("domain/code",)
      ),
  )
  paths = report.write_mixture(tmp_path, spec, search)
  blob = json.loads((tmp_path / "mixture.json").read_text())
  assert blob["source_weights"] == {"code": 0.4, "general": 0.6, "math": 0.0}
  assert blob["beta"] == 0.5 and blob["candidates"] == list(spec.candidates)

  seqio_tasks.register_source_tasks(offline_sources, vocab, prefix="fm")
  loaded = importlib.util.spec_from_file_location("found_mix", paths["seqio"])
  module = importlib.util.module_from_spec(loaded)
  loaded.loader.exec_module(module)
  name = module.register(prefix="fm")
  mixture = seqio.get_mixture_or_task(name)
  rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
  assert rates == {"fm_code": 0.4, "fm_general": 0.6}
