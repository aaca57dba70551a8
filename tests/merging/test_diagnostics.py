"""Weight deltas (paper Eq. 4) by hand; loss barriers from the engine."""

import jax.numpy as jnp
import numpy as np

from demix_jax.merging import diagnostics
from demix_jax.merging import engine as engine_lib
from demix_jax.merging import store as store_lib


def test_weight_deltas_by_hand():
  base = {"embed": jnp.array([1.0, -1.0]), "layers": {"w": jnp.ones((2, 2))}}
  c0 = {"embed": jnp.array([1.0, -1.0]), "layers": {"w": jnp.ones((2, 2))}}
  c1 = {
      "embed": jnp.array([2.0, -1.0]),
      "layers": {"w": jnp.array([[1.0, 0.0], [1.0, 1.0]])},
  }
  s = store_lib.ComponentStore.from_params(
      [c0, c1], ["same", "moved"], base=base
  )
  d = diagnostics.weight_deltas(s)
  assert d["same"] == 0.0
  # |diff| = 1 + 1 = 2; |c1| = 3 + 3 = 6; |base| = 2 + 4 = 6.
  np.testing.assert_allclose(d["moved"], 2.0 / 12.0, rtol=1e-6)


def test_loss_barriers(tiny):
  base, comps = tiny.components(k=3, scale=0.3)
  store = store_lib.ComponentStore.from_params(
      comps, ["a", "b", "c"], base=base
  )
  ev = engine_lib.MixtureEvaluator(tiny.cfg, store, tiny.suite(), chunk_size=9)
  rep = diagnostics.loss_barriers(ev, points=1)
  assert rep["target"] == "heldout/bpb"
  assert set(rep["pairs"]) == {"a|b", "a|c", "b|c"}
  t = np.array(rep["t"])
  v = np.array(rep["pairs"]["a|c"]["values"])
  alphas = np.stack([1 - t, 0 * t, t], 1)
  np.testing.assert_allclose(v, ev.evaluate(alphas)["heldout/bpb"], rtol=2e-5)
  chord = (1 - t) * v[0] + t * v[-1]
  np.testing.assert_allclose(
      rep["pairs"]["a|c"]["barrier"], np.max(v - chord), rtol=1e-12
  )
  assert rep["max_barrier"] >= 0.0
  assert set(diagnostics.weight_deltas(store)) == {"a", "b", "c"}
