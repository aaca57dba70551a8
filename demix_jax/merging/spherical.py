"""Per-tensor merges on the hypersphere: SLERP, Multi-SLERP, Karcher mean.

Like `merging.tensors`, each function merges one tensor (a pair, or a stack
[K, ...] of its component versions) in float32 and casts back to the input
dtype; `merging.methods` dispatches to them. Each tensor is one point:
it is flattened, and its direction and norm are taken over all its entries.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# mergekit's SLERP interpolates linearly above this |cos Omega|.
SLERP_DOT_THRESHOLD = 0.9995
# mergekit's Multi-SLERP: added to norms; below it a mean direction is zero.
MULTISLERP_EPS = 1e-8
# mergekit's Karcher mean: norms, angles and steps below this count as zero.
KARCHER_TOL = 1e-5
_EPS = 1e-8


def _f32(x):
  return jnp.asarray(x, jnp.float32)


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


def multislerp_tensor(stack, weights, base=None):
  """Multi-SLERP: mergekit's `multislerp` (barycentric interpolation on the
  hypersphere, weights used as given: normalise them first for its default
  `normalize_weights: true`).

  v_k = theta_k (tau_k = theta_k - b with a base); x_k = v_k / (|v_k| +
  1e-8); m = normalise(sum_k w_k x_k); the weighted tangent vectors
  t = sum_k w_k (x_k - <x_k, m> m) are mapped back with the exponential
  map, q = cos|t| m + sin|t| t / |t| (|t| + 1e-8 as mergekit; t vanishes
  up to rounding, so q is m: the projected weighted mean of the
  directions); out = (sum_k w_k |v_k|) q (+ b). One component is returned
  as is.

  Where the weighted mean of the directions is shorter than 1e-8
  (antipodal inputs whose weights cancel), mergekit interpolates linearly
  for two inputs (sum_k w_k v_k (+ b)) and raises for more; here every K
  takes the linear fallback, since a traced merge cannot raise.
  """
  if stack.shape[0] == 1:
    return stack[0]
  w = _f32(weights)
  v = _f32(stack)
  if base is not None:
    v = v - _f32(base)[None]
  k = v.shape[0]
  flat = v.reshape(k, -1)
  norms = jnp.linalg.norm(flat, axis=-1)
  x = flat / (norms[:, None] + MULTISLERP_EPS)
  mean = jnp.tensordot(w, x, axes=1)
  mean_norm = jnp.linalg.norm(mean)
  degenerate = mean_norm < MULTISLERP_EPS
  m = mean / jnp.where(degenerate, 1.0, mean_norm)
  dots = x @ m
  tangent = jnp.tensordot(w, x - dots[:, None] * m[None], axes=1)
  tn = jnp.linalg.norm(tangent) + MULTISLERP_EPS
  q = m * jnp.cos(tn) + tangent * (jnp.sin(tn) / tn)
  spherical = jnp.sum(norms * w) * q
  out = jnp.where(degenerate, jnp.tensordot(w, flat, axes=1), spherical)
  out = out.reshape(v.shape[1:])
  if base is not None:
    out = out + _f32(base)
  return out.astype(stack.dtype)


def karcher_tensor(stack, weights, iters: int = 10):
  """Weighted Karcher (Frechet) mean on the unit sphere (Buss & Fillmore
  2001, "Spherical averages and applications to spherical splines and
  interpolation"), rescaled by the weighted norm: mergekit's
  `karcher_merge_tensors` with the weights as `alphas`.

  x_k = theta_k / |theta_k|; components with |theta_k| <= 1e-5 are left
  out of the direction (the other weights renormalised: w'_k). q_0 =
  normalise(sum_k w'_k x_k), or x of the first kept component when that
  sum is shorter than 1e-5 (antipodal inputs); then up to `iters` steps
  q <- normalise(exp_q(u)), u = sum_k w'_k log_q(x_k), where log_q(x) =
  theta / sin(theta) (x - cos(theta) q), theta = arccos(<q, x>) (terms with
  theta < 1e-5 skipped) and exp_q(u) = cos|u| q + sin|u| u / |u|, stopping
  once |u| < 1e-5 (mergekit's `max_iter` 10 and `tol`). out =
  (sum_k w_k |theta_k|) q; 0 when every norm is <= 1e-5. For K = 2 and
  equal norms it approaches `slerp_tensor(theta_0, theta_1, w_1)`.

  mergekit's own `karcher` method ignores weights (it always merges with
  equal ones); this one is weighted, so each mixture gets its own proxy.
  """
  w = _f32(weights)
  v = _f32(stack)
  k = v.shape[0]
  flat = v.reshape(k, -1)
  norms = jnp.linalg.norm(flat, axis=-1)
  valid = norms > KARCHER_TOL
  x = jnp.where(
      (norms > 0)[:, None], flat / jnp.where(norms > 0, norms, 1.0)[:, None], 0
  )
  wv = jnp.where(valid, w, 0.0)
  wv = wv / jnp.where(jnp.sum(wv) > 0, jnp.sum(wv), 1.0)

  def unit(u):
    n = jnp.linalg.norm(u)
    return jnp.where(n > KARCHER_TOL, u / jnp.where(n > 0, n, 1.0), u)

  def step(carry, _):
    q, done = carry
    c = jnp.clip(x @ q, -1.0, 1.0)  # [K]
    th = jnp.arccos(c)
    s = jnp.sin(th)
    live = th >= KARCHER_TOL
    f = jnp.where(live, th / jnp.where(live, s, 1.0), 0.0)
    u = jnp.tensordot(wv * f, x - c[:, None] * q[None], axes=1)
    nu = jnp.linalg.norm(u)
    done = done | (nu < KARCHER_TOL)
    safe = jnp.where(nu > 0, nu, 1.0)
    q_new = unit(jnp.cos(nu) * q + jnp.sin(nu) * u / safe)
    return (jnp.where(done, q, q_new), done), None

  mean = jnp.tensordot(wv, x, axes=1)
  mn = jnp.linalg.norm(mean)
  first = x[jnp.argmax(valid)]
  q0 = jnp.where(mn < KARCHER_TOL, first, mean / jnp.where(mn > 0, mn, 1.0))
  (q, _), _ = jax.lax.scan(step, (q0, jnp.array(False)), None, length=iters)
  out = jnp.sum(w * norms) * q
  out = jnp.where(jnp.any(valid), out, 0.0).reshape(v.shape[1:])
  return out.astype(stack.dtype)
