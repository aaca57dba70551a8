"""The surrogate against real data: RegMix's released proxy runs.

Fit on 512 runs of a 1M-parameter model (mixture -> Pile-CC validation
loss), predict 64 runs of a 1B-parameter model trained on 25B tokens, and
check the ranking (RegMix's LightGBM reached Spearman 0.965).
"""

import csv
import os

import numpy as np
import pytest

from demix_jax import stats
from demix_jax.search import surrogates
from tests.kit import ROOT

# RegMix's released measurements (MIT; LICENSE and README beside them),
# vendored so CI runs this test wherever the checkout lives.
DATA = os.path.join(ROOT, "tests", "search", "data", "regmix")
TARGET = "metric/the_pile_pile_cc_val_loss"

pytestmark = pytest.mark.skipif(
    not os.path.isdir(DATA),
    reason=f"RegMix data not found at {DATA}",
)


def _read(name):
  with open(os.path.join(DATA, name)) as f:
    return {row["index"]: row for row in csv.DictReader(f)}


def _load(mixtures, losses):
  mix, loss = _read(mixtures), _read(losses)
  cols = [c for c in next(iter(mix.values())) if c.startswith("train_")]
  idx = [i for i in mix if i in loss]
  x = np.array([[float(mix[i][c]) for c in cols] for i in idx])
  y = np.array([float(loss[i][TARGET]) for i in idx])
  return cols, x, y


def test_columns_and_shapes():
  cols, x, y = _load("train_mixture_1m.csv", "train_pile_loss_1m.csv")
  assert len(cols) == 17 and "train_the_pile_pile_cc" in cols
  assert x.shape == (512, 17) and y.shape == (512,)
  np.testing.assert_allclose(x.sum(axis=1), 1.0, atol=0.01)
  cols_1b, xt, yt = _load("test_mixture_1B.csv", "test_pile_loss_1B.csv")
  assert cols_1b == cols
  assert xt.shape == (64, 17) and np.isfinite(yt).all()


@pytest.mark.parametrize("lr", [0.02, 0.01])
def test_lightgbm_from_1m_ranks_1b_runs(lr):
  _, x, y = _load("train_mixture_1m.csv", "train_pile_loss_1m.csv")
  _, xt, yt = _load("test_mixture_1B.csv", "test_pile_loss_1B.csv")
  model = surrogates.make_surrogate(
      "auto", len(x), surrogates.LGBMParams(learning_rate=lr)
  )
  assert isinstance(model, surrogates.LightGBMSurrogate)
  pred = model.fit(x, {"cc": y}).predict(xt)["cc"]
  rho = stats.spearman(pred, yt)
  assert rho >= 0.95, rho
  # Lower loss is better: the predicted-best 1B run is a true top-3 run.
  assert np.argmin(pred) in np.argsort(yt)[:3]
