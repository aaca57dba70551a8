"""The batched engine against host merges + the plain forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from demix_jax.evals import scoring
from demix_jax.merging import engine as engine_lib
from demix_jax.merging import evaluator as evaluator_lib
from demix_jax.merging import methods
from demix_jax.merging import store as store_lib
from demix_jax.training import sharding

# fp32 forward of a tiny model; row NLL sums are O(10-100) nats.
TOL = dict(rtol=2e-5, atol=2e-4)

ALPHAS = np.array(
    [
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [0.2, 0.3, 0.5],
        [0.6, 0.1, 0.3],
    ],
    np.float32,
)


def _setup(tiny, chunk=2, spec=methods.LINEAR, **kw):
  base, comps = tiny.components()
  store = store_lib.ComponentStore.from_params(
      comps, ["a", "b", "c"], base=base
  )
  ev = engine_lib.MixtureEvaluator(
      tiny.cfg, store, tiny.suite(), spec=spec, chunk_size=chunk, **kw
  )
  return base, comps, store, ev


def test_engine_matches_host_merge_and_plain_forward(tiny):
  _, comps, _, ev = _setup(tiny, chunk=2)
  got = ev.evaluate_nll(ALPHAS)
  assert got.shape == (5, ev.suite.n_rows)
  for i, a in enumerate(ALPHAS):
    merged = store_lib.host_linear_merge(comps, a)
    want = ev.evaluate_params_nll(jax.tree.map(jnp.asarray, merged))
    np.testing.assert_allclose(got[i], want, **TOL)


def test_engine_is_an_evaluator(tiny):
  """The stages' protocol: every member present, nothing forwarded."""
  _, _, store, ev = _setup(tiny)
  assert isinstance(ev, evaluator_lib.Evaluator)
  assert ev.row_nll_evaluator() is ev and ev.generation_stats() == {}

  class Partial:  # no row_nll_evaluator, no generation_stats

    def __init__(self):
      self.store, self.suite, self.targets = store, ev.suite, ev.targets
      self.domain_metrics = {}

    def evaluate(self, alphas, progress=None):
      return ev.evaluate(alphas, progress)

    def evaluate_params(self, params):
      return ev.evaluate_params(params)

    def make_objective(self, targets=None):
      return ev.make_objective(targets)

  assert not isinstance(Partial(), evaluator_lib.Evaluator)


def test_vertices_reproduce_each_component(tiny):
  _, comps, store, ev = _setup(tiny, chunk=3)
  scores = ev.evaluate(ALPHAS[:3])
  for k in range(3):
    own = ev.evaluate_params(comps[k])
    for t in scoring.target_names(ev.suite):
      np.testing.assert_allclose(
          scores[t][k], own[t], rtol=2e-5, atol=1e-6, err_msg=t
      )
    # The store hands back exactly the component it was given.
    for x, y in zip(
        jax.tree.leaves(store.component(k)), jax.tree.leaves(comps[k])
    ):
      np.testing.assert_array_equal(x, y)


def test_chunk_size_does_not_change_results(tiny):
  _, _, store, ev1 = _setup(tiny, chunk=1)
  ev4 = engine_lib.MixtureEvaluator(
      tiny.cfg, store, ev1.suite, chunk_size=4, vmap_width=2
  )
  assert ev4.vmap_width == 2
  a = ev1.evaluate_nll(ALPHAS)
  b = ev4.evaluate_nll(ALPHAS)
  np.testing.assert_allclose(a, b, **TOL)


def test_unnormalised_alphas_are_normalised(tiny):
  _, _, _, ev = _setup(tiny, chunk=2)
  np.testing.assert_allclose(
      ev.evaluate_nll(ALPHAS[3:] * 7.0), ev.evaluate_nll(ALPHAS[3:]), **TOL
  )


@pytest.mark.parametrize(
    "method", ["ties", pytest.param("dare_linear", marks=pytest.mark.slow)]
)
def test_nonlinear_method_matches_store_merge(tiny, method):
  spec = methods.MergeSpec(method, density=0.7)
  _, _, store, ev = _setup(tiny, chunk=2, spec=spec)
  got = ev.evaluate_nll(ALPHAS[3:])
  for i, a in enumerate(ALPHAS[3:]):
    want = ev.evaluate_params_nll(store.merge(a, spec))
    np.testing.assert_allclose(got[i], want, **TOL)


@pytest.mark.slow
def test_merge_in_forward_equals_whole_tree_for_ties(tiny):
  spec = methods.MergeSpec("dare_ties", density=0.8)
  _, _, store, ev = _setup(tiny, chunk=2, spec=spec)
  fwd = engine_lib.MixtureEvaluator(
      tiny.cfg, store, ev.suite, spec=spec, chunk_size=2, merge_in_forward=True
  )
  np.testing.assert_allclose(
      fwd.evaluate_nll(ALPHAS[3:]), ev.evaluate_nll(ALPHAS[3:]), **TOL
  )


def test_objective_value_and_gradient(tiny):
  _, _, _, ev = _setup(tiny, chunk=2)
  f = ev.make_objective(["domain/math", "heldout/bpb"])
  a = jnp.asarray(ALPHAS[3])
  s = ev.evaluate(ALPHAS[3:4])
  want = 0.5 * (s["domain/math"][0] + s["heldout/bpb"][0])
  val, grad = jax.value_and_grad(f)(a)
  np.testing.assert_allclose(float(val), want, rtol=2e-5)
  assert grad.shape == (3,) and np.all(np.isfinite(grad))
  # Central difference along a direction inside the simplex.
  d = jnp.array([1.0, -0.5, -0.5])
  eps = 1e-2
  fd = (f(a + eps * d) - f(a - eps * d)) / (2 * eps)
  np.testing.assert_allclose(float(grad @ d), float(fd), rtol=2e-2, atol=1e-4)
  with pytest.raises(ValueError, match="higher-is-better"):
    ev.make_objective(["piqa/acc"])


def test_bad_alphas_are_rejected(tiny):
  _, _, _, ev = _setup(tiny)
  with pytest.raises(ValueError, match=r"\[M, 3\]"):
    ev.evaluate(np.ones((2, 2)))
  with pytest.raises(ValueError, match="non-negative"):
    ev.evaluate(np.array([[1.0, -1.0, 1.0]]))


def test_mixtures_sharded_over_a_mesh(tiny):
  mesh = sharding.create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  rules = (
      ("batch", ("data", "fsdp")),
      ("mixtures", ("data", "fsdp")),
      ("embed", "fsdp"),
      ("mlp", "tensor"),
      ("heads", "tensor"),
      ("vocab", "tensor"),
  )
  from demix_jax.models import transformer

  base, comps = tiny.components()
  store = store_lib.ComponentStore.from_params(
      comps,
      base=base,
      mesh=mesh,
      rules=rules,
      logical_axes=transformer.param_logical_axes(tiny.cfg),
  )
  ev = engine_lib.MixtureEvaluator(
      tiny.cfg, store, tiny.suite(), chunk_size=2, mesh=mesh, rules=rules
  )
  assert ev.chunk == len(jax.devices())  # rounded up to the shards
  _, _, _, plain = _setup(tiny, chunk=2)
  np.testing.assert_allclose(
      ev.evaluate_nll(ALPHAS), plain.evaluate_nll(ALPHAS), **TOL
  )
  np.testing.assert_allclose(
      ev.evaluate_params_nll(comps[1]),
      plain.evaluate_params_nll(comps[1]),
      **TOL,
  )


def test_lower_chunk_is_the_program_evaluate_runs(tiny):
  # Lowered on ShapeDtypeStructs only, the compiled chunk run on the real
  # arrays gives exactly what evaluate_nll returns.
  mesh = sharding.create_mesh({"data": -1})
  rules = (("mixtures", "data"), ("batch", "data"))
  base, comps = tiny.components()
  store = store_lib.ComponentStore.from_params(
      comps, base=base, mesh=mesh, rules=rules
  )
  ev = engine_lib.MixtureEvaluator(
      tiny.cfg, store, tiny.suite(), chunk_size=2, mesh=mesh, rules=rules
  )
  compiled = ev.lower_chunk().compile()
  shardings = compiled.input_shardings[0]
  alphas = ALPHAS[: ev.chunk]
  got = compiled(
      jax.device_put(alphas, shardings[0]),
      store.stacked,
      store.base,
      jax.device_put(ev.suite.batched(), shardings[3]),
  )
  np.testing.assert_array_equal(np.asarray(got), ev.evaluate_nll(alphas))
