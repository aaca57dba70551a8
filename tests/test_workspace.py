"""The workspace's four parts: one data cache shared, built once per run."""

import dataclasses
import os

import pytest

from configs import demo
from demix_jax import pipeline
from demix_jax import spec as spec_lib
from demix_jax.data import errors
from demix_jax.workspace import Workspace
from demix_jax.workspace import recipe as recipe_lib


def _spec(**over):
  c = demo.get_config("runlocal")
  for k, v in over.items():
    node = c
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v
  return spec_lib.resolve(c)


def test_parts_share_one_data_cache_and_an_absolute_workdir(
    tmp_path, monkeypatch
):
  monkeypatch.chdir(tmp_path)
  ws = Workspace(_spec(), "wd")
  assert str(ws.workdir) == os.path.join(str(tmp_path), "wd")
  assert ws.data.data_dir == ws.workdir / "data"
  assert ws.bounds.data is ws.data
  assert ws.engines.data is ws.data and ws.recipe.data is ws.data
  assert ws.candidates == ws.spec.data.candidates == ws.bounds.candidates


def test_preflight_builds_the_data_caches_only_for_stages_that_read_data(
    tmp_path,
):
  spec = dataclasses.replace(_spec(), stages=("report",))
  ws = pipeline.preflight(spec, str(tmp_path))
  # Nothing was tokenized or counted (cached_property not filled).
  assert "vocab" not in vars(ws.data) and "token_counts" not in vars(ws.data)
  # The CLI hands this Workspace to run(); another spec's is refused.
  with pytest.raises(ValueError, match="workspace"):
    pipeline.run(_spec(), str(tmp_path), workspace=ws)


def test_train_config_reads_the_spec():
  spec = _spec()
  cfg = recipe_lib.train_config(
      spec,
      1000,
      mixture={"general": 1.0},
      budgets=(100, 200),
      seed_offset=7,
      config_hash="abc",
  )
  assert cfg.seed == spec.seed + 7
  assert cfg.total_tokens == 1000 and cfg.budgets == (100, 200)
  assert cfg.global_batch_size == spec.train.global_batch_size
  assert cfg.seq_len == spec.data.seq_len
  assert cfg.mesh_axes == dict(spec.mesh.axes)
  assert cfg.config_hash == "abc" and cfg.data_mixture == {"general": 1.0}


@dataclasses.dataclass
class _Data:
  sources: dict
  token_counts: dict


def test_recipe_refuses_bad_weights_and_overruns_before_training():
  spec = _spec(**{"data.max_epochs": 1.0, "data.on_overrun": "error"})
  counts = {n: 100 for n in spec.data.sources}
  recipe = recipe_lib.TrainingRecipe(spec, _Data(dict.fromkeys(counts), counts))
  with pytest.raises(errors.MixtureError, match="wiki"):
    recipe.train("/nowhere", {"wiki": 1.0}, 50, what="final run x")
  # 1,000 tokens of a 100-token source is 10 epochs: over max_epochs.
  with pytest.raises(ValueError, match="final run x"):
    recipe.train("/nowhere", {"general": 1.0}, 1000, what="final run x")
