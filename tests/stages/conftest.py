"""A small fake workspace for the stages' unit tests.

The stages read the workspace through four parts (`data`, `bounds`,
`engines`, `recipe`); here the recipe records what it was asked to train
and returns a made-up TrainResult, and the evaluator scores a model or a
mixture by a formula, so a stage runs in milliseconds and its bookkeeping
(what it trains, with which seeds, what it records and reads back) is
checked without JAX, data or checkpoints.
"""

import dataclasses
from typing import Any

from etils import epath
import numpy as np
import pytest

from configs import demo
from demix_jax import spec as spec_lib
from demix_jax.training import trainer
from demix_jax.workspace import bounds as bounds_lib


class FakeRecipe:
  """Records every train call; the 'model' is the weights it trained on."""

  def __init__(self):
    self.calls: list[dict[str, Any]] = []

  def train(self, run_dir, weights, total_tokens, **kw):
    self.calls.append({"run_dir": str(run_dir), "weights": dict(weights), **kw})
    epath.Path(run_dir).mkdir(parents=True, exist_ok=True)
    return trainer.TrainResult(
        params=dict(weights),
        opt_state=None,
        steps=3,
        tokens=int(total_tokens),
        seconds=0.5,
        budget_checkpoints={b: f"{run_dir}/ckpt_{b}" for b in kw["budgets"]}
        if kw.get("budgets")
        else {},
        losses=[],
        eval_metrics={"heldout/bpb": 1.0},
        restored_from="fresh",
    )


class FakeEvaluator:
  """Scores a model by its weight on 'code' (lower bpb with more code)."""

  targets = ("domain/code", "heldout/bpb")
  domain_metrics: dict[str, str] = {}

  def __init__(self):
    self.scored = []

  def evaluate_params(self, params):
    self.scored.append(params)
    code = float(params.get("code", 0.0))
    return {"domain/code": 5.0 - code, "heldout/bpb": 4.0 - code / 2}

  def evaluate(self, alphas, progress=None):
    a = np.atleast_2d(np.asarray(alphas, float))
    return {"domain/code": 5.0 - a[:, 2], "heldout/bpb": 4.0 - a[:, 2] / 2}


class FakeEngines:

  def __init__(self):
    self.ev = FakeEvaluator()
    self.asked = []
    self.model_asked = 0

  def evaluator(self, base_dir, component_dirs, tokens, method=None):
    self.asked.append((base_dir, dict(component_dirs), tokens, method))
    return self.ev

  def model_evaluator(self):
    self.model_asked += 1
    return self.ev


@dataclasses.dataclass
class FakeData:
  token_counts: dict[str, int]


class FakeWorkspace:

  def __init__(self, spec, workdir, counts):
    self.spec = spec
    self.workdir = epath.Path(workdir)
    self.data = FakeData(counts)
    self.bounds = bounds_lib.MixtureBounds(spec, self.data)
    self.engines = FakeEngines()
    self.recipe = FakeRecipe()

  @property
  def candidates(self):
    return self.spec.data.candidates


@pytest.fixture
def fake_ws(tmp_path):
  """fake_ws(**config overrides) -> a FakeWorkspace over the runlocal demo."""

  def make(**over):
    c = demo.get_config("runlocal")
    for k, v in over.items():
      node = c
      *path, leaf = k.split(".")
      for p in path:
        node = node[p]
      node[leaf] = v
    spec = spec_lib.resolve(c)
    counts = {n: 1000 * (i + 1) for i, n in enumerate(spec.data.sources)}
    return FakeWorkspace(spec, tmp_path / "wd", counts)

  return make
