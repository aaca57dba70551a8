"""Merge methods against small hand-computed cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from demix_jax.merging import methods
from demix_jax.merging import spherical
from demix_jax.merging import tensors

TOL = dict(rtol=1e-6, atol=1e-6)


def _stack(*rows):
  return jnp.asarray(np.array(rows, np.float32))


def test_linear_normalises_weights_and_keeps_dtype():
  stack = _stack([1.0, 2.0], [3.0, 6.0])
  out = methods.linear({"w": stack}, jnp.array([1.0, 3.0]))["w"]
  # (1*[1,2] + 3*[3,6]) / 4 = [2.5, 5.0]
  np.testing.assert_allclose(out, [2.5, 5.0], **TOL)
  bf = methods.linear({"w": stack.astype(jnp.bfloat16)}, jnp.array([0.5, 0.5]))[
      "w"
  ]
  assert bf.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(bf, np.float32), [2.0, 4.0])


def test_linear_vertex_is_the_component():
  stack = _stack([1.0, -2.0, 0.5], [3.0, 6.0, 7.0], [0.0, 1.0, 2.0])
  out = methods.linear({"w": stack}, jnp.array([0.0, 1.0, 0.0]))["w"]
  np.testing.assert_array_equal(out, [3.0, 6.0, 7.0])


def test_task_arithmetic():
  base = {"w": jnp.array([1.0, 1.0])}
  stack = {"w": _stack([2.0, 1.0], [1.0, 3.0])}
  out = methods.task_arithmetic(stack, jnp.array([0.5, 2.0]), base)["w"]
  # tau = [1,0], [0,2]; 1 + 0.5*[1,0] + 2*[0,2] = [1.5, 5.0]
  np.testing.assert_allclose(out, [1.5, 5.0], **TOL)


def test_task_arithmetic_equals_linear_on_simplex():
  rng = np.random.default_rng(0)
  base = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}
  stack = {"w": jnp.asarray(rng.normal(size=(3, 4, 3)), jnp.float32)}
  w = jnp.array([0.2, 0.5, 0.3])
  np.testing.assert_allclose(
      methods.task_arithmetic(stack, w, base)["w"],
      methods.linear(stack, w)["w"],
      **TOL,
  )


def test_ties_hand_case():
  base = jnp.zeros(4)
  stack = _stack(
      [3.0, -1.0, 0.5, 2.0], [-1.0, -2.0, 0.1, 4.0], [2.0, 1.0, -3.0, -0.2]
  )
  # density 0.5 -> keep 2 of 4 per component:
  # t0 = [3, 0, 0, 2], t1 = [0, -2, 0, 4], t2 = [2, 0, -3, 0]
  # equal weights: sums [5, -2, -3, 6] -> signs [+, -, -, +]
  # disjoint means: [(3+2)/2, -2, -3, (2+4)/2]
  out = tensors.ties_tensor(stack, jnp.ones(3) / 3, base, density=0.5)
  np.testing.assert_allclose(out, [2.5, -2.0, -3.0, 3.0], **TOL)


def test_ties_weighted_mean_and_scale():
  base = jnp.array([1.0])
  stack = _stack([3.0], [5.0])  # tau = 2, 4
  out = tensors.ties_tensor(
      stack, jnp.array([0.75, 0.25]), base, density=1.0, scale=0.5
  )
  # weighted disjoint mean (0.75*2 + 0.25*4) / 1 = 2.5; 1 + 0.5*2.5
  np.testing.assert_allclose(out, [2.25], **TOL)


def test_ties_trim_keeps_exact_count_on_ties():
  tau = _stack([1.0, 1.0, 1.0, 1.0])
  kept = tensors.trim_topk(tau, 0.5)
  assert int(jnp.sum(kept != 0)) == 2


def test_dare_drop_rate_and_rescale():
  tau = jnp.ones((1, 20000))
  out = tensors.dare_drop(tau, 0.9, jax.random.key(0))
  vals = np.unique(np.asarray(out))
  np.testing.assert_allclose(vals, [0.0, 1 / 0.9], rtol=1e-6)
  frac = float(jnp.mean(out != 0))
  assert abs(frac - 0.9) < 0.01
  # Seeded: same key, same mask.
  np.testing.assert_array_equal(
      out, tensors.dare_drop(tau, 0.9, jax.random.key(0))
  )


def test_dare_density_one_is_task_arithmetic():
  rng = np.random.default_rng(1)
  base = jnp.asarray(rng.normal(size=(5,)), jnp.float32)
  stack = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
  w = jnp.array([0.3, 0.7])
  out = tensors.dare_tensor(stack, w, base, 1.0, jax.random.key(3))
  ref = tensors.task_arithmetic_tensor(stack, w, base)
  np.testing.assert_allclose(out, ref, **TOL)


def test_dare_hand_mask():
  base = jnp.zeros(3)
  stack = _stack([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
  key = jax.random.key(7)
  keep = np.asarray(jax.random.bernoulli(key, 0.5, (2, 3)))
  tau = np.where(keep, np.asarray(stack) / 0.5, 0.0)
  want = 0.5 * tau[0] + 0.5 * tau[1]
  out = tensors.dare_tensor(stack, jnp.array([0.5, 0.5]), base, 0.5, key)
  np.testing.assert_allclose(out, want, **TOL)


def test_breadcrumbs_hand_case():
  base = jnp.zeros(5)
  stack = _stack([5.0, -4.0, 3.0, 2.0, 1.0])
  # gamma 0.2 -> drop rank 0 (5); density 0.6 -> keep ranks 1..3.
  out = tensors.breadcrumbs_tensor(
      stack, jnp.ones(1), base, density=0.6, gamma=0.2
  )
  np.testing.assert_allclose(out, [0.0, -4.0, 3.0, 2.0, 0.0], **TOL)


def test_slerp_hand_case():
  a = jnp.array([1.0, 0.0])
  b = jnp.array([0.0, 1.0])
  mid = spherical.slerp_tensor(a, b, 0.5)
  np.testing.assert_allclose(mid, [np.sqrt(0.5), np.sqrt(0.5)], **TOL)
  np.testing.assert_allclose(spherical.slerp_tensor(a, b, 0.0), a, **TOL)
  np.testing.assert_allclose(spherical.slerp_tensor(a, b, 1.0), b, **TOL)
  # Parallel tensors fall back to linear interpolation.
  np.testing.assert_allclose(
      spherical.slerp_tensor(a, 3 * a, 0.5), [2.0, 0.0], **TOL
  )


def test_karcher_two_models_is_slerp():
  a = jnp.array([1.0, 0.0, 0.0])
  b = jnp.array([0.0, 0.6, 0.8])
  out = spherical.karcher_tensor(
      jnp.stack([a, b]), jnp.array([0.7, 0.3]), iters=20
  )
  np.testing.assert_allclose(out, spherical.slerp_tensor(a, b, 0.3), atol=1e-5)


def test_karcher_three_orthogonal_equal_weights():
  stack = 2.0 * jnp.eye(3)
  out = spherical.karcher_tensor(stack, jnp.ones(3) / 3)
  # Symmetric mean direction (1,1,1)/sqrt(3), mean norm 2.
  np.testing.assert_allclose(out, 2.0 / np.sqrt(3) * np.ones(3), atol=1e-5)


def test_merge_dispatch_errors():
  with pytest.raises(ValueError, match="merge.method"):
    methods.MergeSpec("nope")
  spec = methods.MergeSpec("ties")
  with pytest.raises(ValueError, match="needs the base"):
    methods.merge_tensor(spec, jnp.ones((2, 3)), jnp.ones(2))
  with pytest.raises(ValueError, match="exactly 2"):
    methods.merge_tensor(
        methods.MergeSpec("slerp"), jnp.ones((3, 2)), jnp.ones(3)
    )


def test_merge_is_jittable_for_every_method():
  rng = np.random.default_rng(2)
  stacked = {
      "a": jnp.asarray(rng.normal(size=(2, 6)), jnp.float32),
      "b": {"c": jnp.asarray(rng.normal(size=(2, 2, 3)), jnp.float32)},
  }
  base = jax.tree.map(lambda x: x[0] * 0.5, stacked)
  w = jnp.array([0.4, 0.6])
  for m in methods.METHODS:
    spec = methods.MergeSpec(m)
    fn = jax.jit(lambda s, w, b, spec=spec: methods.merge(spec, s, w, b))
    out = fn(stacked, w, base)
    eager = methods.merge(spec, stacked, w, base)
    for x, y in zip(jax.tree.leaves(out), jax.tree.leaves(eager)):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=m)


def test_della_keep_probability_follows_magnitude_rank():
  # One row of 5 entries: p = (d - e) + 2 e r / 4 by ascending magnitude.
  tau = _stack([0.3, -5.0, 0.1, 2.0, -0.2])
  p = tensors.della_keep_prob(tau, 0.5, 0.2)
  np.testing.assert_allclose(p[0], [0.5, 0.7, 0.3, 0.6, 0.4], **TOL)
  # rank_axes: each column of a [3, 2] tensor ranked on its own.
  tau = _stack([[1.0, -6.0], [3.0, 5.0], [2.0, 4.0]])
  p = tensors.della_keep_prob(tau, 0.5, 0.2, rank_axes=(-2,))
  np.testing.assert_allclose(p[0], [[0.3, 0.7], [0.7, 0.5], [0.5, 0.3]], **TOL)


def test_della_draws_keep_at_their_probability_and_rescale_unbiased():
  rng = np.random.default_rng(0)
  tau = jnp.asarray(rng.normal(size=(1, 64, 256)), jnp.float32)
  d, e = 0.6, 0.3
  kept, mean = 0.0, 0.0
  n = 40
  for i in range(n):
    out = tensors.della_drop(
        tau, d, e, jax.random.key(i), rescale="inverse_density"
    )
    kept = kept + (out != 0)
    mean = mean + out / n
  rate = np.asarray(kept[0] / n)
  p = np.asarray(tensors.della_keep_prob(tau, d, e))[0]
  # Binned by probability: empirical keep rate within 5 standard errors.
  for lo in (0.3, 0.5, 0.7):
    sel = (p >= lo) & (p < lo + 0.2)
    se = np.sqrt(lo * (1 - lo) / (n * sel.sum()))
    assert abs(rate[sel].mean() - p[sel].mean()) < 5 * se + 1e-3
  # The largest magnitudes are kept more often than the smallest.
  assert rate[p > 0.85].mean() > rate[p < 0.35].mean() + 0.4
  # Dividing by the keep probability is unbiased: E[out] = tau.
  err = np.asarray(mean - tau)[0]
  se = np.asarray(jnp.abs(tau))[0] * np.sqrt((1 - p) / p / n)
  assert np.mean(np.abs(err) < 4 * se + 1e-6) > 0.999


def test_della_l1_rescale_keeps_each_norm_and_seed_fixes_the_draw():
  rng = np.random.default_rng(1)
  tau = jnp.asarray(rng.normal(size=(3, 10, 12)), jnp.float32)
  out = tensors.della_drop(tau, 0.7, 0.2, jax.random.key(0))
  np.testing.assert_allclose(
      jnp.abs(out).sum(axis=(1, 2)), jnp.abs(tau).sum(axis=(1, 2)), rtol=1e-5
  )
  again = tensors.della_drop(tau, 0.7, 0.2, jax.random.key(0))
  np.testing.assert_array_equal(out, again)
  spec = methods.MergeSpec("della", density=0.7, epsilon=0.2)
  w = jnp.array([0.2, 0.5, 0.3])
  np.testing.assert_array_equal(
      methods.merge_tensor(spec, tau, w, 0 * tau[0]),
      methods.merge_tensor(spec, tau, w, 0 * tau[0]),
  )


def test_spherical_is_refused_with_its_new_name():
  with pytest.raises(ValueError, match="'karcher'"):
    methods.MergeSpec("spherical")
