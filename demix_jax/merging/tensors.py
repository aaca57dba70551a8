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

DARE_RESCALES = ("l1", "inverse_density", "none")
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


def _magnitude_rank(tau: jax.Array) -> jax.Array:
  """Rank of |tau_k| within its own tensor, 0 = largest; shape of tau.

  Exact ranks (double argsort, stable) rather than a threshold, so ties never
  keep more than the requested count.
  """
  k = tau.shape[0]
  flat = jnp.abs(tau.reshape(k, -1))
  order = jnp.argsort(-flat, axis=-1, stable=True)
  ranks = jnp.argsort(order, axis=-1, stable=True)
  return ranks.reshape(tau.shape)


def _trim_count(n: int, density: float) -> int:
  """Entries TIES keeps of n: max(1, int(density * n)), as mergekit."""
  return n if density >= 1.0 else max(1, int(density * n))


def trim_topk(tau: jax.Array, density: float) -> jax.Array:
  """Keeps the max(1, int(density * n)) largest-magnitude entries of each
  tau_k (mergekit's `magnitude` sparsification)."""
  n = math.prod(tau.shape[1:])
  keep = _magnitude_rank(tau) < _trim_count(n, density)
  return jnp.where(keep, tau, 0.0)


def _breadcrumbs_window(n: int, density: float, gamma: float):
  """Magnitude ranks [lo, hi) (0 = largest) Breadcrumbs keeps, as
  mergekit's `magnitude_outliers`: int(density * n) entries right below the
  int(gamma * n) largest, fewer outliers removed when they would not fit."""
  if density >= 1.0:
    return 0, n
  target = int(density * n)
  bottom = max(0, n - target - int(gamma * n))
  return n - bottom - target, n - bottom


def _sign_consensus_mean(tau, weights, disjoint_mean: bool = True):
  """TIES steps 2-3: elect a sign, then merge the agreeing entries.

  gamma = +1 where sum_k w_k tau_k >= 0, else -1 (mergekit's `sum`
  consensus); A = {k : tau_k != 0 and sign(tau_k) = gamma}. With
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
    raise ValueError(f"dare rescale={rescale!r}; use one of {DARE_RESCALES}")
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

  Per tensor and component, entries of tau_k ranked by magnitude (0 =
  largest): the int(gamma * n) largest (outliers) are masked out and the
  int(density * n) entries right below them kept (mergekit's
  `magnitude_outliers`; fewer outliers are removed when both do not fit).
  out = b + scale * sum_k w_k masked(tau_k), or with `ties`, the TIES sign
  election + merge of the agreeing masked tau_k (see `_sign_consensus_mean`).
  """
  b = _f32(base)
  tau = _f32(stack) - b[None]
  n = math.prod(tau.shape[1:])
  rank = _magnitude_rank(tau)
  lo, hi = _breadcrumbs_window(n, density, gamma)
  tau = jnp.where((rank >= lo) & (rank < hi), tau, 0.0)
  if ties:
    merged = _sign_consensus_mean(tau, weights, disjoint_mean)
  else:
    merged = jnp.tensordot(_f32(weights), tau, axes=1)
  return (b + scale * merged).astype(stack.dtype)


_EPS = 1e-8


def slerp_tensor(a: jax.Array, b: jax.Array, t) -> jax.Array:
  """Spherical linear interpolation of two tensors (Shoemake 1985).

  With the tensors flattened, Omega = arccos(<a, b> / (|a| |b|)):
  slerp = sin((1 - t) Omega) / sin Omega * a + sin(t Omega) / sin Omega * b.
  Falls back to (1 - t) a + t b when |cos Omega| > 0.9995 (nearly
  (anti)parallel, where the formula is 0/0 or ill-conditioned), as
  mergekit's `slerp` does.
  """
  af, bf = _f32(a), _f32(b)
  t = _f32(t)
  cos = jnp.sum(af * bf) / (jnp.linalg.norm(af) * jnp.linalg.norm(bf) + _EPS)
  cos = jnp.clip(cos, -1.0, 1.0)
  omega = jnp.arccos(cos)
  so = jnp.sin(omega)
  near = jnp.abs(cos) > SLERP_DOT_THRESHOLD
  so = jnp.where(near, 1.0, so)
  ca = jnp.where(near, 1.0 - t, jnp.sin((1.0 - t) * omega) / so)
  cb = jnp.where(near, t, jnp.sin(t * omega) / so)
  return (ca * af + cb * bf).astype(a.dtype)


def spherical_tensor(stack, weights, base=None, iters: int = 8):
  """Multi-model spherical merge: the weighted Karcher (Frechet) mean on the
  unit sphere (Buss & Fillmore 2001, "Spherical averages and applications to
  spherical splines and interpolation"), rescaled by the mean norm.

  x_k = v_k / |v_k| with v_k = theta_k (or tau_k when a base is given).
  q_0 = normalise(sum_k w_k x_k); then `iters` fixed-point steps
  q <- exp_q(sum_k w_k log_q(x_k)), where log_q(x) = theta / sin(theta) *
  (x - cos(theta) q), theta = arccos(<q, x>), and exp_q(u) = cos|u| q +
  sin|u| u / |u|. out = (sum_k w_k |v_k|) q (+ b). For K = 2 and equal norms
  it equals `slerp_tensor(theta_0, theta_1, w_1)`.
  """
  w = _f32(weights)
  v = _f32(stack)
  if base is not None:
    v = v - _f32(base)[None]
  k = v.shape[0]
  flat = v.reshape(k, -1)
  norms = jnp.linalg.norm(flat, axis=-1)
  x = flat / (norms[:, None] + _EPS)

  def unit(u):
    return u / (jnp.linalg.norm(u) + _EPS)

  def step(q, _):
    c = jnp.clip(x @ q, -1.0, 1.0)  # [K]
    th = jnp.arccos(c)
    s = jnp.sin(th)
    # theta / sin(theta) -> 1 as theta -> 0.
    f = jnp.where(s < 1e-6, 1.0, th / jnp.where(s < 1e-6, 1.0, s))
    logs = f[:, None] * (x - c[:, None] * q[None])
    u = jnp.tensordot(w, logs, axes=1)
    nu = jnp.linalg.norm(u)
    safe = jnp.where(nu < 1e-12, 1.0, nu)
    q_new = jnp.where(nu < 1e-12, q, jnp.cos(nu) * q + jnp.sin(nu) * u / safe)
    return unit(q_new), None

  q0 = unit(jnp.tensordot(w, x, axes=1))
  q, _ = jax.lax.scan(step, q0, None, length=iters)
  out = (jnp.sum(w * norms) * q).reshape(v.shape[1:])
  if base is not None:
    out = out + _f32(base)
  return out.astype(stack.dtype)
