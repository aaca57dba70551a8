"""The evaluator with splash attention over a mesh scores what XLA scores.

Splash (Pallas interpret mode on CPU) runs inside `attention.shard_rows`:
the chunk's vmapped mixtures are folded into the kernel's rows of one
shard_map over the mixture axes, single models and the gradient objective
are split over the batch rule without folding. Packed rows (several
documents per row) keep the segment mask. Tolerance: atol 2e-4 on row NLL
sums of ~100 tokens (the kernel's blocked softmax adds in another order;
per-position logits agree to ~2e-5, tests/models/test_attention*.py).
"""

import dataclasses

import numpy as np
import pytest

from demix_jax.evals import rows
from demix_jax.merging import engine as engine_lib
from demix_jax.merging import store as store_lib
from demix_jax.training import sharding

T = 128  # splash's block size: rows must be a multiple of it
ALPHAS = np.array(
    [[1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.6, 0.1, 0.3], [0.0, 0.5, 0.5]],
    np.float32,
)


def _suite(vocab):
  rng = np.random.default_rng(0)
  seg = np.ones((8, T), np.int32)
  seg[::2, 60:] = 2  # two documents in every other row
  seg[1::4, 100:] = 0  # and trailing padding
  held = rows.heldout_rows(
      "code",
      rng.integers(2, vocab, (8, T)),
      n_bytes=rng.uniform(200, 300, 8),
      segment_ids=seg,
  )
  return rows.EvalSuite.build([held], batch_size=4)


@pytest.mark.slow
def test_splash_evaluator_over_a_mesh_matches_xla(tiny):
  mesh = sharding.create_mesh({"data": -1})
  rules = (("mixtures", "data"), ("batch", "data"))
  base, comps = tiny.components()
  out = {}
  for impl in ("xla", "splash"):
    cfg = dataclasses.replace(tiny.cfg, attention=impl)
    store = store_lib.ComponentStore.from_params(
        comps, base=base, mesh=mesh, rules=rules
    )
    ev = engine_lib.MixtureEvaluator(
        cfg, store, _suite(cfg.vocab_size), chunk_size=4, mesh=mesh, rules=rules
    )
    objective = ev.make_objective(["heldout/bpb"])
    out[impl] = (
        ev.evaluate_nll(ALPHAS),
        ev.evaluate_params_nll(comps[1]),
        np.asarray(objective(ALPHAS[1])),
    )
  for xla, splash in zip(out["xla"], out["splash"]):
    np.testing.assert_allclose(splash, xla, rtol=0, atol=2e-4)
  # The kernel really ran: its blocked softmax does not round like XLA's.
  assert not np.array_equal(out["splash"][0], out["xla"][0])
