"""Per-tensor merge definitions: one tensor's K versions -> one tensor.

Each `*_tensor(stack, weights, base, ...)` merges a stack [K, ...] of one
tensor's component versions (and, where the method needs it, the base
tensor), in float32, cast back to the stack's dtype. They are the
definitions of the methods; `merging.methods` holds the registry
(`MergeSpec`, `merge_tensor`) and the tree API that dispatch to them, and
re-exports these names.

Notation: theta_k = component k, b = base, tau_k = theta_k - b (task vector),
w_k = weights.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

RESCALES = ("l1", "inverse_density", "none")
# mergekit's SLERP interpolates linearly above this |cos Omega|.
SLERP_DOT_THRESHOLD = 0.9995


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def _bcast(w, x):
  """Reshapes weights [K] to broadcast against a stack [K, ...]."""
  return w.reshape(w.shape + (1,) * (x.ndim - 1))


def check_weights(weights) -> None:
  """Raises ValueError for negative, non-finite or zero-sum weights.

  Only concrete weights are checked; under jit, vmap or grad the caller
  checks them before tracing (the merge engine does).
  """
  if isinstance(weights, jax.core.Tracer):
    return
  w = np.asarray(weights, np.float64)
  if w.ndim != 1 or not np.all(np.isfinite(w)) or np.any(w < 0):
    raise ValueError(
        f"merge weights must be a vector of finite values >= 0, got {w}"
    )
  if w.sum() <= 0:
    raise ValueError(f"merge weights sum to zero ({w}); nothing to merge")


def normalize_weights(weights: jax.Array) -> jax.Array:
  """w / sum(w) in float32 (the proxy of DeMix Eq. 6 needs sum(alpha) = 1)."""
  w = _f32(weights)
  return w / jnp.sum(w)


# --------------------------------------------------------------- tensors


def linear_tensor(stack: jax.Array, weights: jax.Array) -> jax.Array:
  """Linear merge: sum_k w_k theta_k with w already normalised.

  DeMix Eq. 6 (M_mix = sum_i alpha_i Theta_i); Wortsman et al. 2022 (model
  soups). Accumulated in float32.
  """
  out = jnp.tensordot(_f32(weights), _f32(stack), axes=1)
  return out.astype(stack.dtype)


def task_arithmetic_tensor(stack, weights, base, scale: float = 1.0):
  """Task arithmetic: b + scale * sum_k w_k (theta_k - b).

  Ilharco et al. 2023, "Editing models with task arithmetic". With
  sum(w) = 1 and scale = 1 it equals the linear merge (DeMix Sec. 2.4).
  """
  b = _f32(base)
  tau = _f32(stack) - b[None]
  out = b + scale * jnp.tensordot(_f32(weights), tau, axes=1)
  return out.astype(stack.dtype)


def _magnitude_rank(tau: jax.Array, descending: bool) -> jax.Array:
  """Rank of |tau_k| within its own tensor (0 = first); shape of tau.

  Exact ranks (double argsort) rather than a threshold, so ties never keep
  more than the requested count. Entries of equal magnitude are ranked by
  their flat index (a stable sort): mergekit sorts with torch's default,
  unstable sort, whose order among equal values is unspecified, so at the
  cut-off our choice among tied entries is the one mergekit makes when its
  sorts are made stable (`stable=True`). bf16-valued task vectors have many
  equal magnitudes, so there plain mergekit may keep other tied entries.
  """
  k = tau.shape[0]
  flat = jnp.abs(tau.reshape(k, -1))
  order = jnp.argsort(-flat if descending else flat, axis=-1, stable=True)
  ranks = jnp.argsort(order, axis=-1, stable=True)
  return ranks.reshape(tau.shape)


def _trim_count(n: int, density: float) -> int:
  """Entries TIES keeps of n: max(1, int(density * n)), as mergekit."""
  return n if density >= 1.0 else max(1, int(density * n))


def trim_topk(tau: jax.Array, density: float) -> jax.Array:
  """Keeps the max(1, int(density * n)) largest-magnitude entries of each
  tau_k (mergekit's `magnitude` sparsification; among entries of equal
  magnitude at the cut-off, the lower flat indices)."""
  n = math.prod(tau.shape[1:])
  keep = _magnitude_rank(tau, descending=True) < _trim_count(n, density)
  return jnp.where(keep, tau, 0.0)


def _breadcrumbs_window(n: int, density: float, gamma: float):
  """Ascending magnitude ranks [lo, hi) (0 = smallest) Breadcrumbs keeps, as
  mergekit's `magnitude_outliers`: int(density * n) entries right below the
  int(gamma * n) largest, fewer outliers removed when both do not fit
  (gamma + density > 1 keeps the int(density * n) smallest)."""
  if density >= 1.0:
    return 0, n
  target = int(density * n)
  bottom = max(0, n - target - int(gamma * n))
  return bottom, bottom + target


def _sign_consensus_mean(tau, weights, disjoint_mean: bool = True):
  """TIES steps 2-3: elect a sign, then merge the agreeing entries.

  gamma = +1 where sum_k w_k tau_k >= 0, else -1 (mergekit's `sum`
  consensus, voted with the weights as given: callers pass the raw weights,
  not normalised ones, because where the weighted sum is exactly zero the
  rounding of normalised weights would flip the elected sign); A = {k : tau_k != 0 and sign(tau_k) = gamma}. With
  `disjoint_mean`: out = sum_{k in A} w_k tau_k / sum_{k in A} w_k (0 where
  A is empty; with equal weights Yadav et al.'s (1/|A|) sum_{k in A}
  tau_k); without it (mergekit's normalize=False): sum_{k in A} w_k tau_k.
  """
  w = _bcast(_f32(weights), tau)
  elected = jnp.where(jnp.sum(w * tau, axis=0) >= 0, 1.0, -1.0)
  agree = (jnp.sign(tau) == elected[None]) & (tau != 0)
  num = jnp.sum(jnp.where(agree, w * tau, 0.0), axis=0)
  if not disjoint_mean:
    return num
  den = jnp.sum(jnp.where(agree, w, 0.0), axis=0)
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def ties_tensor(
    stack,
    weights,
    base,
    density: float,
    scale: float = 1.0,
    disjoint_mean: bool = True,
):
  """TIES-merging (Yadav et al. 2023, "TIES-Merging: Resolving Interference").

  tau_k = theta_k - b; (1) trim: keep the top max(1, int(density * n))
  entries of each tau_k by magnitude, zero the rest; (2) elect sign per
  entry from sum_k w_k trim(tau_k); (3) disjoint mean over the components
  whose trimmed entry is non-zero and agrees with the elected sign
  (weighted by w; a plain weighted sum without `disjoint_mean`);
  out = b + scale * merged tau. mergekit's `ties` with its defaults.
  """
  b = _f32(base)
  tau = trim_topk(_f32(stack) - b[None], density)
  out = b + scale * _sign_consensus_mean(tau, weights, disjoint_mean)
  return out.astype(stack.dtype)


def dare_drop(
    tau: jax.Array,
    density: float,
    key: jax.Array,
    rescale: str = "inverse_density",
) -> jax.Array:
  """DARE drop-and-rescale of task vectors tau [K, ...].

  Each entry is kept with probability `density` (Bernoulli, independent per
  entry and component). Survivors are then rescaled per component:
  "inverse_density" divides them by `density`, so E[result] = tau (Yu et al.
  2024, "Language Models are Super Mario", Eq. 2-3 with drop rate p = 1 -
  density); "l1" (mergekit's `rescale: true`) scales each tau_k so its L1
  norm is unchanged (left as is when either norm is below 1e-7); "none"
  keeps them.
  """
  keep = jax.random.bernoulli(key, density, tau.shape)
  if rescale == "inverse_density":
    return jnp.where(keep, tau / density, 0.0)
  masked = jnp.where(keep, tau, 0.0)
  if rescale == "none":
    return masked
  if rescale != "l1":
    raise ValueError(f"dare rescale={rescale!r}; use one of {RESCALES}")
  return _l1_rescaled(tau, masked)


def _l1_rescaled(tau: jax.Array, masked: jax.Array) -> jax.Array:
  """masked * |tau_k|_1 / |masked_k|_1 per component (mergekit's L1
  `rescale`), left as is where either norm is below 1e-7."""
  axes = tuple(range(1, tau.ndim))
  before = jnp.sum(jnp.abs(tau), axis=axes, keepdims=True)
  after = jnp.sum(jnp.abs(masked), axis=axes, keepdims=True)
  small = (before < 1e-7) | (after < 1e-7)
  return masked * jnp.where(small, 1.0, before / jnp.where(small, 1.0, after))


def dare_tensor(
    stack,
    weights,
    base,
    density: float,
    key: jax.Array,
    scale: float = 1.0,
    ties: bool = False,
    rescale: str = "inverse_density",
    disjoint_mean: bool = True,
):
  """DARE merge: drop-and-rescale each tau_k (`dare_drop`), then combine.

  dare_linear: b + scale * sum_k w_k dare(tau_k);
  dare_ties:   b + scale * TIES sign election + merge of the agreeing
  dare(tau_k) (disjoint mean, or a weighted sum without `disjoint_mean`;
  no magnitude trim: DARE's random drop replaces it).
  """
  b = _f32(base)
  tau = dare_drop(_f32(stack) - b[None], density, key, rescale)
  if ties:
    merged = _sign_consensus_mean(tau, weights, disjoint_mean)
  else:
    merged = jnp.tensordot(_f32(weights), tau, axes=1)
  return (b + scale * merged).astype(stack.dtype)


def breadcrumbs_tensor(
    stack,
    weights,
    base,
    density: float,
    gamma: float,
    scale: float = 1.0,
    ties: bool = False,
    disjoint_mean: bool = True,
):
  """Model Breadcrumbs (Davari & Belilovsky 2024, "Model Breadcrumbs").

  Per tensor and component, entries of tau_k ranked by magnitude: the
  int(gamma * n) largest (outliers) are masked out and the int(density * n)
  entries right below them kept (mergekit's `magnitude_outliers`, whose
  ascending sort decides ties: among equal magnitudes the lower flat index
  counts as smaller; fewer outliers are removed when both do not fit, so
  gamma + density > 1 is allowed, as in mergekit).
  out = b + scale * sum_k w_k masked(tau_k), or with `ties`, the TIES sign
  election + merge of the agreeing masked tau_k (see `_sign_consensus_mean`).
  """
  b = _f32(base)
  tau = _f32(stack) - b[None]
  n = math.prod(tau.shape[1:])
  rank = _magnitude_rank(tau, descending=False)
  lo, hi = _breadcrumbs_window(n, density, gamma)
  tau = jnp.where((rank >= lo) & (rank < hi), tau, 0.0)
  if ties:
    merged = _sign_consensus_mean(tau, weights, disjoint_mean)
  else:
    merged = jnp.tensordot(_f32(weights), tau, axes=1)
  return (b + scale * merged).astype(stack.dtype)


def _della_uniform(key: jax.Array, shape) -> jax.Array:
  """DELLA's uniform draws (one place, so a test can fix them)."""
  return jax.random.uniform(key, shape, jnp.float32)


def della_keep_prob(
    tau: jax.Array, density: float, epsilon: float, rank_axes=(-1,)
) -> jax.Array:
  """DELLA's MagPrune keep probabilities, shape of tau [K, ...].

  Within each row of each tau_k (a row = one index of the axes not in
  `rank_axes`; the entries over `rank_axes` are ranked together), the
  entries are ranked by ascending magnitude (ties by flat index, a stable
  sort), r = 0..m-1, and kept with probability
  p = (density - epsilon) + 2 epsilon r / (m - 1): the largest entry with
  density + epsilon, the smallest with density - epsilon (Deep et al. 2024,
  "DELLA-Merging", MagPrune; mergekit's `della_magprune`, which ranks each
  row of a Hugging Face [out, in] matrix). A row of one entry gets
  p = density (mergekit divides by zero there).
  """
  nd = tau.ndim - 1
  axes = sorted({a % nd for a in rank_axes})
  rows = [a for a in range(nd) if a not in axes]
  perm = [0] + [1 + a for a in rows] + [1 + a for a in axes]
  t = jnp.transpose(_f32(tau), perm)
  lead = t.shape[: 1 + len(rows)]
  m = math.prod(t.shape[1 + len(rows) :])
  mag = jnp.abs(t.reshape(lead + (m,)))
  order = jnp.argsort(mag, axis=-1, stable=True)
  rank = jnp.argsort(order, axis=-1, stable=True).astype(jnp.float32)
  frac = rank / (m - 1) if m > 1 else jnp.full_like(rank, 0.5)
  p = jnp.float32(density - epsilon) + frac * 2.0 * jnp.float32(epsilon)
  inverse = tuple(int(i) for i in np.argsort(perm))
  return jnp.transpose(p.reshape(t.shape), inverse)


def della_drop(
    tau: jax.Array,
    density: float,
    epsilon: float,
    key: jax.Array,
    rescale: str = "l1",
    rank_axes=(-1,),
) -> jax.Array:
  """DELLA's MagPrune: each entry of tau [K, ...] is kept with its
  `della_keep_prob` (independent Bernoulli draws), the survivors rescaled
  per component: "inverse_density" divides each by its own keep
  probability (the paper's 1 / (1 - p_drop), unbiased in expectation),
  "l1" (mergekit's default `rescale: true`) scales each tau_k to keep its
  L1 norm (as `dare_drop`), "none" keeps them. density >= 1 keeps tau
  unchanged, as mergekit.
  """
  if density >= 1.0:
    return tau
  p = della_keep_prob(tau, density, epsilon, rank_axes)
  keep = _della_uniform(key, tau.shape) < p
  if rescale == "inverse_density":
    return jnp.where(keep, tau / p, 0.0)
  masked = jnp.where(keep, tau, 0.0)
  if rescale == "none":
    return masked
  if rescale != "l1":
    raise ValueError(f"della rescale={rescale!r}; use one of {RESCALES}")
  return _l1_rescaled(tau, masked)


def della_tensor(
    stack,
    weights,
    base,
    density: float,
    epsilon: float,
    key: jax.Array,
    scale: float = 1.0,
    ties: bool = True,
    rescale: str = "l1",
    disjoint_mean: bool = True,
    rank_axes=(-1,),
):
  """DELLA merge: MagPrune each tau_k (`della_drop`), then combine.

  della (`ties`): b + scale * TIES sign election + merge of the agreeing
  pruned tau_k (disjoint mean, or a weighted sum without
  `disjoint_mean`); della_linear: b + scale * sum_k w_k pruned(tau_k).
  """
  b = _f32(base)
  tau = della_drop(
      _f32(stack) - b[None], density, epsilon, key, rescale, rank_axes
  )
  if ties:
    merged = _sign_consensus_mean(tau, weights, disjoint_mean)
  else:
    merged = jnp.tensordot(_f32(weights), tau, axes=1)
  return (b + scale * merged).astype(stack.dtype)
