"""Merges on bf16-valued weights (as released checkpoints are) and raw
weights, against mergekit 0.1.5 (issue 24 item 7).

bf16 task vectors hold many entries of equal magnitude. At a magnitude
cut-off torch's default sort orders them in an unspecified way, so we match
mergekit run with stable sorts exactly, and plain mergekit everywhere except
among entries whose magnitude equals the cut-off's.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from demix_jax.merging import tensors

torch = pytest.importorskip("torch")
pytest.importorskip("mergekit")
from mergekit import sparsify as mk_sparsify  # noqa: E402

from tests.interop import mergekit_kit as kit  # noqa: E402

W, W_RAW, TOL = kit.W, kit.W_RAW, kit.TOL
# Small bf16 deltas around a bf16 base: a few hundred distinct magnitudes
# per tensor of thousands of entries.
SHAPE = (48, 64)


def _bf16_setup(seed=0):
  b, c = kit.setup(SHAPE, bf16=True, spread=0.01, seed=seed)
  tau = c - b[None]
  assert len(np.unique(np.abs(tau[0]))) < tau[0].size // 4
  return b, c


CASES = {
    "ties": dict(density=0.9),
    "breadcrumbs": dict(density=0.9, gamma=0.01),
    "breadcrumbs_ties": dict(density=0.8, gamma=0.05),
}


@pytest.mark.parametrize("method", sorted(CASES))
@pytest.mark.parametrize("w", [W, W_RAW])
def test_trimming_methods_equal_stable_sorted_mergekit_on_bf16(method, w):
  b, c = _bf16_setup()
  hp = CASES[method]
  with kit.stable_torch_sorts():
    want = kit.theirs(method, c, w, b, **hp)
  np.testing.assert_allclose(kit.ours(method, c, w, b, **hp), want, **TOL)


def _cutoff_ties(tau_k, kept_ours, kept_theirs):
  """Entries where the masks differ, and the magnitudes tied there."""
  differ = kept_ours != kept_theirs
  return differ, np.unique(np.abs(tau_k)[differ])


@pytest.mark.parametrize("method", ["magnitude", "magnitude_outliers"])
def test_plain_mergekit_differs_only_among_tied_magnitudes(method):
  b, c = _bf16_setup(seed=1)
  tau = c - b[None]
  # (At density 0.9 the cut falls among the exact zeros of bf16 deltas.)
  density, gamma = 0.5, 0.05
  if method == "magnitude":
    ours = np.asarray(tensors.trim_topk(jnp.asarray(tau), density)) != 0
  else:
    ours = np.stack(
        [
            np.asarray(
                tensors.breadcrumbs_tensor(
                    jnp.asarray(t[None]), jnp.ones(1), 0 * t, density, gamma
                )
            )
            != 0
            for t in tau
        ]
    )
  total_differ = 0
  for k, t in enumerate(tau):
    kw = {"gamma": gamma} if method == "magnitude_outliers" else {}
    theirs = mk_sparsify.sparsify(
        torch.tensor(t), density, mk_sparsify.SparsificationMethod(method), **kw
    ).numpy()
    theirs = theirs != 0
    assert ours[k].sum() == theirs.sum()  # the same count
    differ, mags = _cutoff_ties(t, ours[k], theirs)
    total_differ += differ.sum()
    # Every differing entry has a magnitude both masks split: kept by one
    # at some entry, dropped at another of equal magnitude.
    for mag in mags:
      same = np.abs(t) == mag
      assert ours[k][same].any() and not ours[k][same].all()
      assert theirs[same].any() and not theirs[same].all()
  # The case is real: plain mergekit picks other tied entries here.
  assert total_differ > 0


def test_ties_votes_with_raw_weights_like_mergekit():
  # tau_1 = bf16(-w_0 tau_0 / w_1): w_0 tau_0 + w_1 tau_1 is exactly 0 in
  # float32 for a quarter of the entries, and mergekit elects + there.
  # Voting with the normalised weights w / 1.4 would round some of those
  # sums below zero and elect -.
  rng = np.random.default_rng(5)
  w = np.float32([0.6, 0.8])
  t0 = kit.bf16_valued(0.01 * rng.normal(size=SHAPE))
  t1 = kit.bf16_valued(-w[0] * t0 / w[1])
  raw = w[0] * t0 + w[1] * t1
  wn = w / w.sum()
  normalised = wn[0] * t0 + wn[1] * t1
  assert (raw == 0).mean() > 0.2
  assert ((raw >= 0) != (normalised >= 0)).sum() > 50
  b = kit.bf16_valued(rng.normal(size=SHAPE))
  c = np.stack([b + t0, b + t1])
  c = kit.bf16_valued(c)  # exact: the sums above are of the stored values
  for method, hp in (("ties", dict(density=1.0)), ("dare_ties", {})):
    hp = {**hp, "density": 1.0}
    np.testing.assert_allclose(
        kit.ours(method, c, list(w), b, **hp),
        kit.theirs(method, c, list(w), b, **hp),
        **TOL,
        err_msg=method,
    )


@pytest.mark.parametrize("gamma,density", [(0.3, 0.8), (0.5, 0.6)])
def test_breadcrumbs_gamma_plus_density_above_one_is_mergekits(gamma, density):
  b, c = _bf16_setup(seed=2)
  with kit.stable_torch_sorts():
    want = kit.theirs("breadcrumbs", c, W_RAW, b, density=density, gamma=gamma)
  got = kit.ours("breadcrumbs", c, W_RAW, b, density=density, gamma=gamma)
  np.testing.assert_allclose(got, want, **TOL)
