"""One definition per merge method: the engine's path and the tree API agree.

The engine merges stacked components layer by layer (`store.merge_outer`,
`store.merge_layer`, inside the forward or over the whole tree); the tree
API (`methods.<method>`, i.e. `methods.merge`) merges a pytree of [K, ...]
stacks. With one layer a
layer's tensor is the whole tensor, so every method must give the same
merge on both paths, weight normalisation and DARE masks included. The
weights are deliberately off the simplex: a path that normalises them when
the other does not (task arithmetic did) fails here.
"""

import dataclasses

import jax
import numpy as np
import pytest

from demix_jax.merging import engine as engine_lib
from demix_jax.merging import methods
from demix_jax.merging import store as store_lib
from demix_jax.models import transformer

WEIGHTS = np.array([0.5, 1.5, 1.0], np.float32)


def _one_layer(tiny, k):
  """A base and k components of a one-layer model (random deltas)."""
  cfg = dataclasses.replace(tiny.cfg, n_layers=1)
  base = transformer.init_params(cfg, jax.random.key(0))
  leaves, treedef = jax.tree.flatten(base)
  comps = []
  for i in range(k):
    keys = jax.random.split(jax.random.key(10 + i), len(leaves))
    comps.append(
        jax.tree.unflatten(
            treedef,
            [
                x + 0.05 * jax.random.normal(kk, x.shape, x.dtype)
                for x, kk in zip(leaves, keys)
            ],
        )
    )
  return cfg, base, comps


DENSITY = 0.7


def _spec_and_k(method):
  return (
      methods.MergeSpec(method, density=DENSITY),
      2 if method == "slerp" else 3,
  )


def _tree_api(method, comps, w, base):
  """The tree API's own function for `method` (`methods.<method>`), jitted."""
  if method == "slerp":
    fn = jax.jit(lambda a, b, t: methods.slerp(a, b, t))
    return fn(comps[0], comps[1], w[1] / (w[0] + w[1]))
  fn = getattr(methods, method)
  return jax.jit(lambda s, w, b: fn(s, w, b, density=DENSITY))(
      methods.stack_params(comps), w, base
  )


@pytest.mark.parametrize("method", methods.METHODS)
def test_store_merge_equals_tree_merge(tiny, method):
  spec, k = _spec_and_k(method)
  _, base, comps = _one_layer(tiny, k)
  w = WEIGHTS[:k]
  tree = _tree_api(method, comps, w, base)
  store = store_lib.ComponentStore.from_params(comps, base=base)
  engine = store.merge(w, spec)
  assert jax.tree.structure(engine) == jax.tree.structure(tree)
  for path, x in jax.tree_util.tree_leaves_with_path(engine):
    y = tree
    for p in path:
      y = y[p.key]
    np.testing.assert_allclose(
        x, y, rtol=1e-5, atol=1e-6, err_msg=f"{method} {path}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("method", methods.METHODS)
def test_engine_forward_equals_tree_merge(tiny, method):
  # The engine's compiled path: merged layer by layer inside the forward.
  spec, k = _spec_and_k(method)
  cfg, base, comps = _one_layer(tiny, k)
  tree = _tree_api(method, comps, WEIGHTS[:k], base)
  store = store_lib.ComponentStore.from_params(comps, base=base)
  ev = engine_lib.MixtureEvaluator(
      cfg, store, tiny.suite(), spec=spec, chunk_size=1, merge_in_forward=True
  )
  np.testing.assert_allclose(
      ev.evaluate_nll(WEIGHTS[None, :k])[0],
      ev.evaluate_params_nll(tree),
      rtol=2e-5,
      atol=2e-4,
      err_msg=method,
  )


def test_task_arithmetic_weights_are_not_renormalised(tiny):
  # DeMix / mergekit task arithmetic: b + sum_k w_k (theta_k - b), as given.
  base, comps = tiny.components(k=3)
  store = store_lib.ComponentStore.from_params(comps, base=base)
  got = store.merge(WEIGHTS, methods.MergeSpec("task_arithmetic"))
  want = jax.tree.map(
      lambda b, *cs: np.asarray(b, np.float64)
      + sum(
          float(w) * (np.asarray(c, np.float64) - np.asarray(b, np.float64))
          for w, c in zip(WEIGHTS, cs)
      ),
      base,
      *comps,
  )
  for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_normalisation_follows_the_method_unless_set():
  assert not methods.MergeSpec("task_arithmetic").normalizes_weights
  assert methods.MergeSpec("task_arithmetic", normalize=True).normalizes_weights
  for m in set(methods.METHODS) - methods.UNNORMALISED:
    assert methods.MergeSpec(m).normalizes_weights, m
  assert not methods.MergeSpec("ties", normalize=False).normalizes_weights
  # replace() takes the new method's convention.
  spec = dataclasses.replace(methods.LINEAR, method="task_arithmetic")
  assert not spec.normalizes_weights
