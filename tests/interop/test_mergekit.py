"""demix_jax's merge methods against mergekit itself (mergekit 0.1.5, torch
CPU), on fixed tensors and on whole exported models.

Where a method shares mergekit's name it computes what mergekit computes
with its registry defaults (issue 17, item 4); the tests with odd sizes
(density * n not an integer), weights off the simplex and nearly parallel
tensors are the cases where demix_jax once differed (ceil vs int counts,
1 / density vs L1 rescaling, the weighted mean vs mergekit's normalize=False
for dare_ties and breadcrumbs_ties, SLERP's fallback threshold). Random
methods (DARE) are compared with the same drop masks:
mergekit's `sparsify` is replaced by one that applies demix_jax's masks and
then mergekit's own rescaling, so everything except the random draw is
mergekit's code.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from demix_jax.interop import hf
from demix_jax.interop import safetensors_np
from demix_jax.merging import methods
from demix_jax.merging import store as store_lib
from demix_jax.merging import tensors
from tests.interop import helpers

torch = pytest.importorskip("torch")
pytest.importorskip("mergekit")
from mergekit import sparsify as mk_sparsify  # noqa: E402
from mergekit.merge_methods import generalized_task_arithmetic as mk_gta  # noqa: E402
from mergekit.merge_methods.api import merge_tensors  # noqa: E402

# The inputs and the two merges, shared with the other parity tests.
from tests.interop.mergekit_kit import TOL  # noqa: E402
from tests.interop.mergekit_kit import W_RAW  # noqa: E402
from tests.interop.mergekit_kit import W  # noqa: E402
from tests.interop.mergekit_kit import ours  # noqa: E402
from tests.interop.mergekit_kit import setup as _setup  # noqa: E402
from tests.interop.mergekit_kit import theirs  # noqa: E402

# ------------------------------------------------------------- same code


@pytest.mark.parametrize("w", [W, W_RAW])
def test_linear(w):
  _, c = _setup((7, 13))
  np.testing.assert_allclose(
      ours("linear", c, w), theirs("linear", c, w), **TOL
  )


def test_task_arithmetic_on_the_simplex():
  b, c = _setup((7, 13))
  np.testing.assert_allclose(
      ours("task_arithmetic", c, W, b),
      theirs("task_arithmetic", c, W, b),
      **TOL,
  )


def test_task_arithmetic_default_weights_are_not_normalised():
  b, c = _setup((7, 13))
  np.testing.assert_allclose(
      ours("task_arithmetic", c, W_RAW, b),
      theirs("task_arithmetic", c, W_RAW, b),
      **TOL,
  )


@pytest.mark.parametrize("density", [0.9, 0.5])
def test_ties_when_density_times_size_is_an_integer(density):
  # n = 100: ceil(d * n) == int(d * n), so trimming keeps the same entries
  # and the sign election and disjoint mean are compared alone.
  b, c = _setup((10, 10))
  for w in (W, W_RAW):
    np.testing.assert_allclose(
        ours("ties", c, w, b, density=density),
        theirs("ties", c, w, b, density=density),
        **TOL,
    )


def test_ties_trim_count_is_mergekits():
  b, c = _setup((7, 13))
  np.testing.assert_allclose(
      ours("ties", c, W, b, density=0.9),
      theirs("ties", c, W, b, density=0.9),
      **TOL,
  )


def test_breadcrumbs_when_counts_are_integers():
  b, c = _setup((1000,))
  np.testing.assert_allclose(
      ours("breadcrumbs", c, W, b, density=0.9, gamma=0.01),
      theirs("breadcrumbs", c, W, b, density=0.9, gamma=0.01),
      **TOL,
  )


def test_breadcrumbs_window_is_mergekits():
  b, c = _setup((7, 13))
  np.testing.assert_allclose(
      ours("breadcrumbs", c, W, b, density=0.9, gamma=0.01),
      theirs("breadcrumbs", c, W, b, density=0.9, gamma=0.01),
      **TOL,
  )


def test_breadcrumbs_ties_default_is_mergekits():
  b, c = _setup((1000,))
  np.testing.assert_allclose(
      ours("breadcrumbs_ties", c, W, b, density=0.9, gamma=0.01),
      theirs("breadcrumbs_ties", c, W, b, density=0.9, gamma=0.01),
      **TOL,
  )


def _dare_both(method, density=0.7):
  """(ours, mergekit's with our drop masks) for one fixed tensor."""
  b, c = _setup((7, 13))
  key = jax.random.key(3)
  dropped = np.asarray(
      tensors.dare_drop(jnp.asarray(c - b[None]), density, key)
  )
  masks = iter(torch.tensor((d != 0).astype(np.float32)) for d in dropped)

  def same_masks(delta, density, method, rescale_norm=None, **unused):
    del density, method, unused
    return mk_sparsify.rescaled_masked_tensor(delta, next(masks), rescale_norm)

  orig = mk_gta.sparsify
  mk_gta.sparsify = same_masks
  try:
    want = theirs(method, c, W, b, density=density)
  finally:
    mk_gta.sparsify = orig
  return ours(method, c, W, b, key=key, density=density), want


def test_dare_linear_is_mergekits_with_the_same_masks():
  got, want = _dare_both("dare_linear")
  np.testing.assert_allclose(got, want, **TOL)


def test_dare_ties_is_mergekits_with_the_same_masks():
  got, want = _dare_both("dare_ties")
  np.testing.assert_allclose(got, want, **TOL)


def _slerp_theirs(pair, t):
  return merge_tensors(
      [torch.tensor(pair[0]), torch.tensor(pair[1])],
      "slerp",
      parameters={"t": t},
      base_index=0,
  ).numpy()


def test_slerp():
  rng = np.random.default_rng(1)
  pair = rng.normal(size=(2, 6, 9)).astype(np.float32)
  np.testing.assert_allclose(
      ours("slerp", pair, [0.7, 0.3]), _slerp_theirs(pair, 0.3), **TOL
  )


def test_slerp_nearly_parallel_falls_back_like_mergekit():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(6, 9)).astype(np.float32)
  pair = np.stack([a, a + 0.02 * rng.normal(size=a.shape).astype(np.float32)])
  np.testing.assert_allclose(
      ours("slerp", pair, [0.7, 0.3]), _slerp_theirs(pair, 0.3), **TOL
  )


@pytest.mark.parametrize("method", ["linear", "ties"])
def test_zero_sum_weights_are_an_error(method):
  b, c = _setup((10, 10))
  with pytest.raises(ValueError):
    ours(method, c, [0.0, 0.0, 0.0], b if method == "ties" else None)


def test_negative_weights_are_an_error():
  _, c = _setup((10, 10))
  with pytest.raises(ValueError):
    ours("linear", c, [0.5, -0.2, 0.7])


# ----------------------------------------------- whole models, on disk


def _run_mergekit(conf, out):
  from mergekit.config import MergeConfiguration  # pylint: disable=g-import-not-at-top
  from mergekit.merge import run_merge  # pylint: disable=g-import-not-at-top
  from mergekit.options import MergeOptions  # pylint: disable=g-import-not-at-top

  run_merge(
      MergeConfiguration.model_validate(conf),
      str(out),
      MergeOptions(quiet=True, write_model_card=False, copy_tokenizer=False),
  )


WHOLE_MODEL = {
    "linear": {},
    "task_arithmetic": {},
    "ties": {"density": 0.9},
    "breadcrumbs_ties": {"density": 0.9, "gamma": 0.05},
    "multislerp": {},
    "multislerp_base": {},
    "della": {"density": 0.6, "epsilon": 0.2},
}
# DELLA's draws fixed on both sides: an entry is kept iff its keep
# probability exceeds this, so the test checks which entries each row ranks
# together (our leaves' layouts against Hugging Face's [out, in] rows).
DELLA_DRAW = 0.63


@pytest.mark.parametrize("method", sorted(WHOLE_MODEL))
def test_whole_model_merge_equals_mergekit_on_exported_checkpoints(
    tmp_path, method, monkeypatch
):
  """Per-tensor units agree: demix_jax merges each leaf per layer, mergekit
  each Hugging Face tensor. Weights off the simplex, mergekit's defaults."""
  if method == "della":
    monkeypatch.setattr(
        tensors,
        "_della_uniform",
        lambda key, shape: jnp.full(shape, DELLA_DRAW, jnp.float32),
    )
    monkeypatch.setattr(
        torch, "bernoulli", lambda p: (p > DELLA_DRAW).to(p.dtype)
    )
  cfg = helpers.tiny_cfg(tie=False)
  base = helpers.random_params(cfg, seed=20)
  comps = [
      jax.tree.map(
          lambda x, i=i: x
          + 0.05 * jax.random.normal(jax.random.key(30 + i), x.shape),
          base,
      )
      for i in range(3)
  ]
  dirs = []
  for i, p in enumerate([base] + comps):
    d = tmp_path / f"m{i}"
    hf.export_params(p, cfg, d)
    dirs.append(str(d))
  hp = WHOLE_MODEL[method]
  conf = {
      "merge_method": method.removesuffix("_base"),
      "dtype": "float32",
      "models": [
          {"model": d, "parameters": {"weight": w, **hp}}
          for d, w in zip(dirs[1:], W_RAW)
      ],
  }
  if methods.MergeSpec(method).needs_base:
    conf["base_model"] = dirs[0]
  _run_mergekit(conf, tmp_path / "out")
  merged_cfg = json.loads((tmp_path / "out" / "config.json").read_text())
  assert merged_cfg["model_type"] == "qwen3"
  got = hf.from_hf_state(safetensors_np.read_dir(tmp_path / "out"), cfg)
  store = store_lib.ComponentStore.from_params(comps, base=base)
  # A seed no other test uses: the merge is traced afresh under the patch.
  want = store.merge(
      jnp.asarray(W_RAW, jnp.float32), methods.MergeSpec(method, seed=97, **hp)
  )
  for (path, a), b in zip(
      jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got)
  ):
    np.testing.assert_allclose(
        np.asarray(b), np.asarray(a), err_msg=jax.tree_util.keystr(path), **TOL
    )


def test_named_variants_stay_available():
  """Yu et al.'s 1 / density DARE rescale and the Karcher mean are options."""
  b, c = _setup((7, 13))
  key = jax.random.key(3)
  tau = c - b[None]
  keep = np.asarray(tensors.dare_drop(jnp.asarray(tau), 0.7, key, "none")) != 0
  got = ours(
      "dare_linear",
      c,
      W,
      b,
      key=key,
      density=0.7,
      rescale="inverse_density",
  )
  want = b + np.tensordot(np.asarray(W), np.where(keep, tau / 0.7, 0.0), axes=1)
  np.testing.assert_allclose(got, want, **TOL)
  with pytest.raises(ValueError, match="rescale"):
    methods.MergeSpec("dare_linear", rescale="l2")
