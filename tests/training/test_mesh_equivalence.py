"""Sharded training equals one device; rematerialisation changes nothing.

Five optimizer steps of the same model on the same batches: on one device,
with parameters sharded over `fsdp` = 2, over `tensor` = 2, and over both
(2 x 2 on 4 devices). The sharding is checked to really split the
parameters (else the comparison would prove nothing). Then `remat` on vs
off on one device.

Tolerances, fixed. Sharding changes only where float32 sums are split:
`tensor` splits the contractions of the attention output and MLP down
projections (and the vocabulary of the loss) and all-reduces the partial
sums; `fsdp` splits the batch of every gradient reduction. Each reordering
moves a sum by about one float32 rounding, and five Adam steps at lr 1e-2
carry that into the weights. Measured on this config (CPU, 4 fake
devices): largest loss difference 9.5e-7 (2 float32 ulps of a loss near
4.2), largest parameter difference 2.4e-7, for every mesh. The bounds,
LOSS_ATOL = 1e-5 and PARAM_ATOL = 2.5e-6, are ten times those: room for
another XLA version's fusion choices, nothing more. Remat recomputes the
same operations in the same order, so it must match bit for bit (measured:
it does).
"""

import dataclasses

import jax
import numpy as np
import pytest

from demix_jax.training import config as train_config
from demix_jax.training import optim
from demix_jax.training import synthetic
from demix_jax.training import trainer
from tests import kit

CFG = kit.tiny_model(n_kv_heads=2)
OPT = optim.OptimConfig(peak_lr=1e-2, warmup_steps=2)
B, T, STEPS = 8, 32, 5
LOSS_ATOL = 1e-5
PARAM_ATOL = 2.5e-6


def _train(tmp_path, name, mesh, cfg=CFG):
  n = int(np.prod(list(mesh.values())))
  tc = train_config.TrainConfig(
      global_batch_size=B,
      seq_len=T,
      total_tokens=B * T * STEPS,
      peak_flops=1e10,
      log_every_steps=1,
      checkpoint_every_steps=100,
      mesh_axes=mesh,
  )
  it = synthetic.SyntheticIterator(B, T, cfg.vocab_size, seed=0)
  return trainer.train(
      cfg, OPT, tc, tmp_path / name, it, devices=jax.devices()[:n]
  )


def _split_axes(params):
  """Mesh axes that some parameter is split over."""
  axes = set()
  for x in jax.tree.leaves(params):
    for entry in x.sharding.spec:
      if entry is not None:
        axes.update(entry if isinstance(entry, tuple) else (entry,))
  return axes


def _max_diff(a, b):
  return max(
      float(np.abs(np.asarray(x) - np.asarray(y)).max())
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  )


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
  r = _train(
      tmp_path_factory.mktemp("one"), "one", {"data": 1, "fsdp": 1, "tensor": 1}
  )
  losses = np.array([loss for _, loss in r.losses])
  assert losses.shape == (STEPS,) and losses[-1] < losses[0]
  return r, losses


@pytest.mark.slow
@pytest.mark.parametrize(
    "mesh",
    [
        {"data": 1, "fsdp": 2, "tensor": 1},
        {"data": 1, "fsdp": 1, "tensor": 2},
        {"data": 1, "fsdp": 2, "tensor": 2},
    ],
    ids=["fsdp2", "tensor2", "fsdp2xtensor2"],
)
def test_sharded_training_matches_one_device(one_device, tmp_path, mesh):
  ref, ref_losses = one_device
  r = _train(tmp_path, "sharded", mesh)
  want = {a for a, n in mesh.items() if n > 1}
  assert _split_axes(r.params) >= want, _split_axes(r.params)
  losses = np.array([loss for _, loss in r.losses])
  loss_diff = float(np.abs(losses - ref_losses).max())
  param_diff = _max_diff(r.params, ref.params)
  print(f"{mesh}: loss diff {loss_diff:.2e}, param diff {param_diff:.2e}")
  assert loss_diff <= LOSS_ATOL, loss_diff
  assert param_diff <= PARAM_ATOL, param_diff


@pytest.mark.slow
def test_remat_on_equals_off(one_device, tmp_path):
  ref, ref_losses = one_device
  r = _train(
      tmp_path,
      "remat",
      {"data": 1, "fsdp": 1, "tensor": 1},
      dataclasses.replace(CFG, remat=True),
  )
  np.testing.assert_array_equal(
      np.array([loss for _, loss in r.losses]), ref_losses
  )
  assert _max_diff(r.params, ref.params) == 0.0
