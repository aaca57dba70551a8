"""Shared pieces of the mergekit parity tests: inputs, our merge and
mergekit's, called on the same tensors."""

import contextlib

import jax.numpy as jnp
from mergekit.merge_methods.api import merge_tensors
import ml_dtypes
import numpy as np
import torch

from demix_jax.merging import methods

W = [0.2, 0.5, 0.3]  # on the simplex, as DeMix's alphas
W_RAW = [0.6, 0.8, 0.5]  # not normalised
TOL = dict(atol=1e-5, rtol=0)


def bf16_valued(x) -> np.ndarray:
  """float32 values that bf16 represents exactly, as released weights."""
  return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


def setup(shape, k=3, seed=0, bf16=False, spread=0.1):
  """A base and k components around it (bf16-valued with `bf16`)."""
  rng = np.random.default_rng(seed)
  cast = bf16_valued if bf16 else (lambda x: np.asarray(x, np.float32))
  base = cast(rng.normal(size=shape))
  comps = np.stack(
      [cast(base + spread * rng.normal(size=shape)) for _ in range(k)]
  )
  return base, comps


def ours(method, comps, w, base=None, key=None, **hp):
  return np.asarray(
      methods.merge_tensor(
          methods.MergeSpec(method, **hp),
          jnp.asarray(comps),
          jnp.asarray(w, jnp.float32),
          None if base is None else jnp.asarray(base),
          key,
      )
  )


def theirs(method, comps, w=None, base=None, **params):
  ts = [torch.tensor(x) for x in comps]
  if w is not None:
    params = {"weight": list(w), **params}
  if base is not None:
    return merge_tensors(
        [torch.tensor(base)] + ts, method, parameters=params, base_index=0
    ).numpy()
  return merge_tensors(ts, method, parameters=params).numpy()


@contextlib.contextmanager
def stable_torch_sorts():
  """mergekit with torch's sorts made stable (ties by index)."""
  argsort, sort = torch.argsort, torch.sort

  def stable_argsort(x, dim=-1, descending=False, **unused):
    del unused
    return argsort(x, dim=dim, descending=descending, stable=True)

  def stable_sort(x, dim=-1, descending=False, **unused):
    del unused
    return sort(x, dim=dim, descending=descending, stable=True)

  torch.argsort, torch.sort = stable_argsort, stable_sort
  try:
    yield
  finally:
    torch.argsort, torch.sort = argsort, sort


@contextlib.contextmanager
def bernoulli_from(draws):
  """mergekit's torch.bernoulli(p) replaced by `u < p`, u taken in turn from
  `draws` (one array per call, in mergekit's order of components)."""
  bernoulli = torch.bernoulli
  it = iter(draws)

  def fake(p, *unused, **unused_kw):
    del unused, unused_kw
    u = torch.tensor(np.asarray(next(it), np.float32)).reshape(p.shape)
    return (u < p).to(p.dtype)

  torch.bernoulli = fake
  try:
    yield
  finally:
    torch.bernoulli = bernoulli
