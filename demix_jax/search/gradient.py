"""Gradient search: mirror descent on alpha through a differentiable proxy.

The merged model M(alpha) = sum_i alpha_i * Theta_i is differentiable in
alpha, so a proxy objective (held-out loss, benchmark bits per byte) can be
minimised directly. We use exponentiated gradient, i.e. mirror descent with
the entropy mirror map, which stays on the simplex by construction:

  y = alpha * exp(-eta_t * g_t / scale_t);  alpha <- KL-projection of y onto
  {lower <= alpha <= upper, sum alpha = 1}.

The KL (Bregman) projection onto the capped simplex is x_i = clip(c * y_i,
l_i, u_i) with the scalar c that makes the sum 1 (found by bisection on
log c), so the same bounds as the pool hold at every iterate. With
`normalize`, the centred gradient is divided by the largest max-abs entry
seen so far on this start: the first step changes a log-weight by at most
eta whatever the objective's scale, and later steps shrink with the
gradient, so the iterates converge like plain EG with a step size picked
from the first gradient (a per-step normalisation would keep steps of size
eta and orbit the optimum). `decay="sqrt"` further scales eta by
1 / sqrt(t + 1) for noisy objectives. Several starts (the given alpha,
then random points of the bounded simplex) guard against non-convexity; the
best visited iterate wins.

Usable as a search method on its own, or as a refinement from the
surrogate's alpha* (`init=alpha_star, starts=1`).
"""

from collections.abc import Callable
import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np

from demix_jax.search import pool as pool_lib

_LOG = logging.getLogger(__name__)

Objective = Callable[[jax.Array], jax.Array]

_BISECT_STEPS = 80


@dataclasses.dataclass(frozen=True)
class GradientConfig:
  """Settings of the gradient search.

  Attributes:
    steps: mirror-descent steps per start (each = one value+gradient).
    learning_rate: eta (normalised: max log-weight change per step).
    starts: number of starts (first = init when given).
    normalize: divide the centred gradient by the running max of its
      max-abs entry.
    decay: "sqrt" (eta / sqrt(t + 1)) or "none".
    start_mix: starts are mixed with the centre of the bounded simplex by
      this much so no weight starts at exactly 0 (EG cannot leave 0).
    seed: seeds the random starts.
  """

  steps: int = 100
  learning_rate: float = 0.5
  starts: int = 3
  normalize: bool = True
  decay: str = "none"
  start_mix: float = 0.05
  seed: int = 0


@dataclasses.dataclass
class GradientResult:
  """Outcome of a gradient search.

  Attributes:
    alpha: [K] best visited mixture (within bounds, sums to 1).
    value: objective at alpha.
    paths: [S, T + 1, K] iterates of every start (for plots).
    values: [S, T + 1] objective at every iterate.
    best_start: which start found alpha.
    evaluations: value+gradient evaluations used (S * (T + 1)).
  """

  alpha: np.ndarray
  value: float
  paths: np.ndarray
  values: np.ndarray
  best_start: int
  evaluations: int


def kl_project(y, lower, upper):
  """KL projection of positive y [K] onto the capped simplex (JAX)."""
  y = y / jnp.sum(y)

  def total(logc):
    return jnp.sum(jnp.clip(jnp.exp(logc) * y, lower, upper))

  def body(_, lohi):
    lo, hi = lohi
    mid = 0.5 * (lo + hi)
    big = total(mid) > 1.0
    return jnp.where(big, lo, mid), jnp.where(big, mid, hi)

  lo, hi = jax.lax.fori_loop(
      0,
      _BISECT_STEPS,
      body,
      (jnp.asarray(-60.0, y.dtype), jnp.asarray(60.0, y.dtype)),
  )
  x = jnp.clip(jnp.exp(0.5 * (lo + hi)) * y, lower, upper)
  return x / jnp.sum(x)


def kl_project_np(
    y: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> np.ndarray:
  """Float64 NumPy twin of `kl_project`, exact to rounding (bounds hold)."""
  y = np.asarray(y, np.float64)
  y = np.maximum(y, 0.0) / y.sum()
  lo, hi = -80.0, 80.0
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if np.clip(np.exp(mid) * y, lower, upper).sum() > 1.0:
      hi = mid
    else:
      lo = mid
  x = np.clip(np.exp(0.5 * (lo + hi)) * y, lower, upper)
  # The bisection leaves a ~1e-15 gap; put it on an entry with room.
  gap = 1.0 - x.sum()
  room = (upper - x) if gap > 0 else (x - lower)
  x[np.argmax(room)] += gap
  return x


def _starts(
    cfg: GradientConfig, bounds: pool_lib.Bounds, init: np.ndarray | None
) -> np.ndarray:
  lower = np.asarray(bounds.lower, np.float64)
  upper = np.asarray(bounds.upper, np.float64)
  k = len(lower)
  centre = kl_project_np(np.ones(k), lower, upper)
  rng = np.random.default_rng(cfg.seed)
  points = []
  if init is not None:
    points.append(np.asarray(init, np.float64))
  while len(points) < cfg.starts:
    points.append(rng.dirichlet(np.ones(k)))
  out = [
      kl_project_np(
          (1 - cfg.start_mix) * p + cfg.start_mix * centre, lower, upper
      )
      for p in points[: max(cfg.starts, 1)]
  ]
  return np.stack(out)


def gradient_search(
    objective: Objective,
    bounds: pool_lib.Bounds,
    cfg: GradientConfig = GradientConfig(),
    init: np.ndarray | None = None,
) -> GradientResult:
  """Minimises a differentiable objective of alpha on the capped simplex.

  Args:
    objective: alpha [K] -> scalar (lower is better), JAX-differentiable
      (built by the merge engine, e.g. held-out bits per byte of M(alpha)).
    bounds: per-candidate bounds (validated here).
    cfg: settings.
    init: optional first start, e.g. the surrogate search's alpha*.

  Returns:
    The best visited iterate, with every start's path.
  """
  bounds.validate()
  if cfg.decay not in ("sqrt", "none"):
    raise ValueError(f"decay {cfg.decay!r}: use 'sqrt' or 'none'")
  if cfg.steps < 0 or cfg.starts < 1:
    raise ValueError("gradient search needs steps >= 0 and starts >= 1")
  lower = jnp.asarray(bounds.lower, jnp.float32)
  upper = jnp.asarray(bounds.upper, jnp.float32)
  # The merge engine's objectives carry a compiled value-and-gradient.
  value_and_grad = getattr(objective, "value_and_grad", None)
  if value_and_grad is None:
    value_and_grad = jax.value_and_grad(objective)

  @jax.jit
  def update(alpha, g, scale, eta):
    g = g - jnp.mean(g)  # the simplex ignores a constant shift
    if cfg.normalize:
      scale = jnp.maximum(scale, jnp.max(jnp.abs(g)))
      g = g / (scale + 1e-30)
    # Subtracting the max keeps exp() from overflowing; the scale cancels
    # in the projection.
    logits = jnp.log(jnp.maximum(alpha, 1e-30)) - eta * g
    y = jnp.exp(logits - jnp.max(logits))
    y = jnp.where(upper > 0, y, 0.0)
    return kl_project(y, lower, upper), scale

  # A Python loop, not a jitted scan over steps: the objective usually
  # closes over the stacked components (megabytes to gigabytes), which an
  # outer jit would bake into the program as constants (slow to compile,
  # memory twice). The objective is jitted itself, so each step is one
  # compiled value-and-gradient call plus a tiny compiled update.
  t = np.arange(cfg.steps, dtype=np.float64)
  decay = np.sqrt(t + 1) if cfg.decay == "sqrt" else np.ones_like(t)
  etas = (cfg.learning_rate / decay).astype(np.float32)
  paths: list[np.ndarray] = []
  values: list[np.ndarray] = []
  for i, start in enumerate(_starts(cfg, bounds, init)):
    alpha = jnp.asarray(start, jnp.float32)
    scale = jnp.float32(0.0)
    path = [np.asarray(alpha)]
    vals: list[float] = []
    for eta in etas:
      value, g = value_and_grad(alpha)
      alpha, scale = update(alpha, g, scale, jnp.float32(eta))
      path.append(np.asarray(alpha))
      vals.append(float(value))
    vals.append(float(objective(alpha)))
    _LOG.info(
        "gradient search start %d: objective %.5g -> %.5g", i, vals[0], vals[-1]
    )
    paths.append(np.stack(path))
    values.append(np.asarray(vals, np.float64))
  all_paths, all_values = np.stack(paths), np.stack(values)
  finite = np.where(np.isfinite(all_values), all_values, np.inf)
  s, step = np.unravel_index(np.argmin(finite), finite.shape)
  if not np.isfinite(finite[s, step]):
    raise FloatingPointError(
        "gradient search: the objective is NaN/inf at " "every iterate"
    )
  best = kl_project_np(
      all_paths[s, step],
      np.asarray(bounds.lower, np.float64),
      np.asarray(bounds.upper, np.float64),
  )
  return GradientResult(
      alpha=best,
      value=float(all_values[s, step]),
      paths=all_paths,
      values=all_values,
      best_start=int(s),
      evaluations=int(all_values.size),
  )
