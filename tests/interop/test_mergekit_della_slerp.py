"""DELLA, Multi-SLERP and the Karcher mean against mergekit 0.1.5 itself,
at unequal weights, on float32 and bf16-valued tensors.

DELLA draws its masks from JAX's PRNG, mergekit from torch's generator, so
mergekit's torch.bernoulli is replaced by `u < p` with our own uniforms u:
everything but the draw (ranks, probabilities, L1 rescale, sign election,
disjoint mean, lambda) is mergekit's code. bf16-valued task vectors hold
many equal magnitudes, whose order torch's default sort leaves unspecified;
there mergekit runs with stable sorts (see `merging.methods`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from demix_jax.merging import methods
from demix_jax.merging import spherical
from demix_jax.merging import tensors

torch = pytest.importorskip("torch")
pytest.importorskip("mergekit")
from mergekit.merge_methods import karcher as mk_karcher  # noqa: E402

from tests.interop import mergekit_kit as kit  # noqa: E402

W, W_RAW, TOL = kit.W, kit.W_RAW, kit.TOL


def _della_both(method, comps, base, w, density, epsilon, **hp):
  key = jax.random.key(7)
  draws = np.asarray(tensors._della_uniform(key, comps.shape))
  got = kit.ours(
      method, comps, w, base, key=key, density=density, epsilon=epsilon, **hp
  )
  params = dict(density=density, epsilon=epsilon)
  if "rescale" in hp:
    params["rescale"] = hp["rescale"] != "none"
  if "normalize" in hp:
    params["normalize"] = hp["normalize"]
  if "scale" in hp:
    params["lambda"] = hp["scale"]
  with kit.bernoulli_from(draws):
    want = kit.theirs(method, comps, w, base, **params)
  return got, want


@pytest.mark.parametrize("method", ["della", "della_linear"])
@pytest.mark.parametrize("w", [W, W_RAW])
def test_della_is_mergekits_with_the_same_draws(method, w):
  b, c = kit.setup((9, 14))
  got, want = _della_both(method, c, b, w, density=0.6, epsilon=0.3)
  np.testing.assert_allclose(got, want, **TOL)
  # The draws matter: another key gives another merge.
  other = kit.ours(
      method, c, w, b, key=jax.random.key(8), density=0.6, epsilon=0.3
  )
  assert np.abs(other - want).max() > 1e-3


@pytest.mark.parametrize("method", ["della", "della_linear"])
def test_della_on_bf16_values_is_stable_sorted_mergekit(method):
  b, c = kit.setup((16, 24), bf16=True, spread=0.02)
  assert len(np.unique(np.abs(c[0] - b))) < c[0].size  # ties exist
  with kit.stable_torch_sorts():
    got, want = _della_both(method, c, b, W_RAW, density=0.9, epsilon=0.01)
  np.testing.assert_allclose(got, want, **TOL)


def test_della_hyperparameters_reach_mergekit():
  # 1-D tensor (one row), no rescale, lambda and normalize set.
  b, c = kit.setup((40,))
  got, want = _della_both(
      "della",
      c,
      b,
      W_RAW,
      density=0.5,
      epsilon=0.2,
      rescale="none",
      normalize=False,
      scale=0.7,
  )
  np.testing.assert_allclose(got, want, **TOL)


def test_della_density_one_is_the_unpruned_merge():
  b, c = kit.setup((5, 6))
  np.testing.assert_allclose(
      kit.ours("della", c, W_RAW, b, density=1.0, epsilon=0.3),
      kit.theirs("della", c, W_RAW, b, density=1.0, epsilon=0.3),
      **TOL,
  )
  np.testing.assert_allclose(
      kit.ours("della", c, W_RAW, b, density=1.0),
      kit.ours("ties", c, W_RAW, b, density=1.0),
      **TOL,
  )


def test_della_epsilon_out_of_range_is_refused_like_mergekit():
  b, c = kit.setup((5, 6))
  with pytest.raises(ValueError, match="epsilon"):
    kit.ours("della", c, W, b, density=0.9, epsilon=0.15)
  with pytest.raises(ValueError, match="Epsilon"):
    kit.theirs("della", c, W, b, density=0.9, epsilon=0.15)


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("w", [W, W_RAW])
@pytest.mark.parametrize("with_base", [False, True])
def test_multislerp_is_mergekits(bf16, w, with_base):
  b, c = kit.setup((8, 11), bf16=bf16)
  method = "multislerp_base" if with_base else "multislerp"
  want = kit.theirs("multislerp", c, w, b if with_base else None)
  np.testing.assert_allclose(kit.ours(method, c, w, b), want, **TOL)


def test_multislerp_unnormalised_weights_are_mergekits():
  b, c = kit.setup((8, 11))
  np.testing.assert_allclose(
      kit.ours("multislerp_base", c, W_RAW, b, normalize=False),
      kit.theirs("multislerp", c, W_RAW, b, normalize_weights=False),
      **TOL,
  )


def test_multislerp_antipodal_pair_falls_back_to_linear_like_mergekit():
  a = kit.bf16_valued(np.random.default_rng(3).normal(size=(6, 7)))
  pair = np.stack([a, -a])
  w = [0.5, 0.5]
  want = kit.theirs("multislerp", pair, w)
  np.testing.assert_allclose(kit.ours("multislerp", pair, w), want, **TOL)
  np.testing.assert_allclose(want, 0 * a, atol=1e-7)  # the linear merge
  # With unequal weights the directions do not cancel: the spherical path.
  np.testing.assert_allclose(
      kit.ours("multislerp", pair, [0.3, 0.7]),
      kit.theirs("multislerp", pair, [0.3, 0.7]),
      **TOL,
  )
  # Three inputs whose directions cancel: mergekit raises, we stay linear.
  c3 = np.stack([a, -a, a])
  with pytest.raises(ValueError, match="zero"):
    kit.theirs("multislerp", c3, [0.25, 0.5, 0.25])
  np.testing.assert_allclose(
      kit.ours("multislerp", c3, [0.25, 0.5, 0.25]), 0 * a, atol=1e-7
  )


def test_multislerp_of_one_component_is_that_component():
  b, c = kit.setup((4, 5), k=1)
  np.testing.assert_array_equal(kit.ours("multislerp_base", c, [0.4], b), c[0])


def _karcher_theirs(comps, w):
  alphas = list(np.asarray(w, np.float64) / np.sum(w))
  return mk_karcher.karcher_merge_tensors(
      [torch.tensor(x) for x in comps], alphas
  ).numpy()


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("w", [W, W_RAW])
def test_karcher_is_mergekits_weighted_karcher_mean(bf16, w):
  rng = np.random.default_rng(2)
  c = rng.normal(size=(3, 8, 11))
  c = kit.bf16_valued(c) if bf16 else c.astype(np.float32)
  np.testing.assert_allclose(
      kit.ours("karcher", c, w), _karcher_theirs(c, w), atol=5e-5
  )


def test_karcher_equal_weights_is_mergekits_karcher_method():
  rng = np.random.default_rng(2)
  c = rng.normal(size=(3, 8, 11)).astype(np.float32)
  np.testing.assert_allclose(
      kit.ours("karcher", c, [1 / 3] * 3), kit.theirs("karcher", c), atol=5e-5
  )


def test_karcher_zero_inputs_are_mergekits():
  # (Antipodal inputs have no Karcher mean: both start at x_0 and end where
  # rounding takes them.)
  a = kit.bf16_valued(np.random.default_rng(4).normal(size=(5, 6)))
  for c, w in (
      (np.stack([a, 0 * a, 2 * a]), [0.2, 0.5, 0.3]),  # a zero tensor
      (np.stack([0 * a, 0 * a]), [0.5, 0.5]),  # nothing to average
  ):
    np.testing.assert_allclose(
        kit.ours("karcher", c, w), _karcher_theirs(c, w), atol=5e-5
    )


def test_karcher_ignores_the_base_and_multislerp_base_uses_it():
  b, c = kit.setup((6, 7))
  w = jnp.asarray(W)
  no_base = methods.merge_tensor(methods.MergeSpec("karcher"), c, w)
  np.testing.assert_array_equal(
      methods.merge_tensor(methods.MergeSpec("karcher"), c, w, b), no_base
  )
  np.testing.assert_allclose(
      methods.merge_tensor(methods.MergeSpec("multislerp_base"), c, w, b),
      spherical.multislerp_tensor(c - b[None], w) + b,
      **TOL,
  )
