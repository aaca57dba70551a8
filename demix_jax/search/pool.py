"""Candidate pool of mixtures: DeMix's Dirichlet sampler and uniform sampling.

A mixture alpha is a vector on the simplex, one weight per candidate (the
order of `config.data.candidates`). The pool is a large, fixed, deduplicated
set of mixtures that the surrogate ranks every round (DeMix: 200k).

Two samplers:
  "demix":   Dirichlet around a token-count prior p (tempered, p^T
             renormalised, T = 0.7) with a concentration s drawn log-uniformly
             from a grid (15 values in [0.5, 5]): x ~ Dir(s * p).
  "uniform": Dirichlet(1), uniform on the simplex (the paper's text).

Both then apply the same post-processing: a floor (entries below 2e-4 become
0), per-candidate bounds lower <= alpha <= upper, rounding to multiples of a
resolution (2e-4) and exact deduplication. Unlike the official sample.py,
whose left-to-right "renormalised clipping" rescales entries it already
capped (caps leak: a 0.108 cap reached 0.85 there), the bounds here are hard
by default (`caps="hard"`): excess mass is redistributed only among entries
with room left, and the rounding step allocates grid units without crossing
a bound. `caps="official"` reproduces the official post-processing instead:
left-to-right renormalised clipping (`leaky_clip`), the floor, plain
rounding to the grid and a final renormalisation, so caps can be exceeded
exactly as in the paper's pool (docs/paper_settings.md).

Bounds come in as arrays (usually computed by the data layer from max
epochs); `epoch_caps` offers the official code's formulation.
"""

import dataclasses
import logging
from typing import cast

import numpy as np

from demix_jax.data import mixture as mixture_lib

_LOG = logging.getLogger(__name__)

# Slack for float comparisons of weights that sum to 1.
_EPS = 1e-9

# How the upper bounds are applied to the draws (PoolConfig.caps).
CAPS = ("hard", "official")


# The pool samplers `sample_pool` draws with (see the module doc).
SAMPLERS = ("demix", "uniform")


@dataclasses.dataclass(frozen=True)
class Bounds:
  """Per-candidate bounds on the mixture weights.

  Attributes:
    lower: [K] lower bounds, >= 0.
    upper: [K] upper bounds, <= 1. lower == upper fixes a weight.
  """

  lower: np.ndarray
  upper: np.ndarray

  @classmethod
  def unbounded(cls, k: int) -> "Bounds":
    return cls(np.zeros(k), np.ones(k))

  @property
  def k(self) -> int:
    return len(self.lower)

  def validate(self, names: tuple[str, ...] | None = None) -> None:
    """Raises ValueError if no mixture satisfies the bounds."""
    lo = np.asarray(self.lower, np.float64)
    hi = np.asarray(self.upper, np.float64)
    names = names or tuple(f"candidate {i}" for i in range(len(lo)))
    if lo.shape != hi.shape or lo.ndim != 1:
      raise ValueError(
          f"bounds: lower {lo.shape} and upper {hi.shape} must "
          "be 1-D arrays of the same length"
      )
    for i, name in enumerate(names):
      if not (0.0 <= lo[i] <= hi[i] + _EPS and hi[i] <= 1.0 + _EPS):
        raise ValueError(
            f"bounds of {name}: need 0 <= lower <= upper <= 1, got "
            f"[{lo[i]:.6g}, {hi[i]:.6g}]; fix the constraint or the caps "
            "(max_epochs, token counts, run length)"
        )
    if lo.sum() > 1.0 + _EPS:
      raise ValueError(
          f"infeasible bounds: lower bounds sum to {lo.sum():.6g} > 1; no "
          "mixture can satisfy them; lower the constraints"
      )
    if hi.sum() < 1.0 - _EPS:
      raise ValueError(
          f"infeasible bounds: upper caps sum to {hi.sum():.6g} < 1; no "
          "mixture can satisfy them. Raise max_epochs, add data, or shorten "
          f"the run (caps: {dict(zip(names, np.round(hi, 6)))})"
      )

  def with_constraints(
      self,
      names: tuple[str, ...],
      constraints: dict[str, tuple[float, float] | float],
  ) -> "Bounds":
    """Returns bounds intersected with `{name: (lo, hi)}` or `{name: w}`.

    A float fixes the weight; a pair bounds it (e.g. general >= 0.2 is
    `{"general": (0.2, 1.0)}`).
    """
    lo = np.array(self.lower, np.float64)
    hi = np.array(self.upper, np.float64)
    for name, c in constraints.items():
      if name not in names:
        raise ValueError(
            f"constraint on unknown candidate {name!r}; "
            f"candidates are {names}"
        )
      i = names.index(name)
      # A number fixes the weight, a pair bounds it (numpy's isscalar guard
      # widens c to any scalar, hence the cast back to the pair it is).
      pair = (c, c) if np.isscalar(c) else c
      a, b = cast(tuple[float, float], pair)
      lo[i] = max(lo[i], float(a))
      hi[i] = min(hi[i], float(b))
    out = Bounds(lo, hi)
    out.validate(names)
    return out


@dataclasses.dataclass(frozen=True)
class PoolConfig:
  """How the candidate pool is drawn.

  Attributes:
    size: number of distinct mixtures (DeMix: 200_000).
    sampler: "demix" (prior Dirichlet) or "uniform" (Dirichlet(1)).
    temperature: exponent T of the prior, p^T renormalised (demix only).
    concentration_range: (min, max) of the log-uniform concentration grid.
    concentration_count: number of grid values (DeMix: 15).
    floor: entries below it become 0 (where the lower bound allows).
    resolution: weights are multiples of it (None: no rounding). 1 /
      resolution must be an integer.
    oversample: draws per wanted mixture per attempt (dedup loses some).
    caps: "hard" (bounds always hold) or "official" (the official sample.py's
      leaky left-to-right clipping; only upper bounds, no lower bounds).
  """

  size: int = 200_000
  sampler: str = "demix"
  temperature: float = 0.7
  concentration_range: tuple[float, float] = (0.5, 5.0)
  concentration_count: int = 15
  floor: float = 2e-4
  resolution: float | None = 2e-4
  oversample: float = 1.3
  caps: str = "hard"


def prior_from_tokens(token_counts, temperature: float = 1.0) -> np.ndarray:
  """Token-availability prior p_i ∝ tokens_i, tempered as p^T renormalised.

  Args:
    token_counts: [K] unique tokens per candidate (any unit).
    temperature: T; 1 keeps the natural shares, < 1 flattens them.

  Returns:
    [K] prior on the simplex.
  """
  t = np.asarray(token_counts, np.float64)
  if t.ndim != 1 or not np.all(np.isfinite(t)):
    raise ValueError(f"token_counts must be a finite 1-D array, got {t}")
  if np.any(t <= 0):
    bad = np.flatnonzero(t <= 0).tolist()
    raise ValueError(
        f"candidates {bad} have zero (or negative) token counts {t[bad]}; a "
        "candidate with no data cannot be mixed: drop it or fix its source"
    )
  p = t / t.sum()
  p = p**temperature
  return p / p.sum()


def epoch_caps(
    token_counts,
    run_tokens: float | None = None,
    max_epochs: float = 4.0,
    beta: float = 0.0,
    general_index: int | None = None,
) -> np.ndarray:
  """Upper caps on alpha so that no source is repeated over `max_epochs`.

  The official sample.py caps alpha_i at min(max_epochs * p_i, 1) with p the
  natural token shares, i.e. this function with run_tokens = total tokens and
  beta = 0. With beta > 0 the caps account for the general padding of the
  final run (source weights: general = alpha_g + beta * (1 - alpha_g),
  candidate i = (1 - beta) * alpha_i).

  Args:
    token_counts: [K] unique tokens per candidate.
    run_tokens: tokens of the run the mixture is used for (default: the sum
      of token_counts, the official code's implicit choice).
    max_epochs: most passes over any source.
    beta: general fraction padded into every non-general candidate.
    general_index: index of the general pool (required when beta > 0).

  Returns:
    [K] caps in [0, 1].
  """
  t = np.asarray(token_counts, np.float64)
  prior_from_tokens(t)  # validates (zero tokens -> error)
  run = float(t.sum() if run_tokens is None else run_tokens)
  if run <= 0 or max_epochs <= 0:
    raise ValueError("run_tokens and max_epochs must be positive")
  budget = max_epochs * t / run  # max source weight of each source
  if beta <= 0.0:
    return np.minimum(budget, 1.0)
  if general_index is None:
    raise ValueError("epoch_caps: general_index is required when beta > 0")
  g = general_index
  if budget[g] < beta:
    raise ValueError(
        f"infeasible: the general pool gets at least beta={beta} of the run "
        f"({beta * run:.3g} tokens) but max_epochs allows only "
        f"{budget[g] * run:.3g}; add general data or shorten the run"
    )
  # The padded formula lives in one place: data.mixture.alpha_caps.
  names = [str(i) for i in range(len(t))]
  caps = mixture_lib.alpha_caps(
      names, names[g], dict(zip(names, t)), run, beta, max_epochs
  )
  return np.array([caps[n] for n in names])


def cap_project(
    x: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> np.ndarray:
  """Maps rows on the simplex into {lower <= a <= upper, sum a = 1}.

  Lower bounds are reserved first (a = lower + (1 - sum lower) * z); then
  over-cap entries of z are clipped and their excess is redistributed among
  entries still below their cap, proportionally to their weight (to their
  room when they are all zero). Entries at a cap stay there, so caps hold.

  Args:
    x: [N, K] rows summing to 1.
    lower, upper: [K] feasible bounds.

  Returns:
    [N, K] rows within the bounds, summing to 1.
  """
  lower = np.asarray(lower, np.float64)
  free = 1.0 - lower.sum()
  if free <= _EPS:
    return np.broadcast_to(lower, x.shape).copy()
  cap = np.clip((upper - lower) / free, 0.0, None)
  z = np.array(x, np.float64)
  fixed = np.zeros(z.shape, bool)
  for _ in range(z.shape[1] + 1):
    over = ~fixed & (z > cap)
    if not over.any():
      break
    z = np.where(over, cap, z)
    fixed |= over
    excess = 1.0 - z.sum(axis=1, keepdims=True)
    w = np.where(fixed, 0.0, z)
    wsum = w.sum(axis=1, keepdims=True)
    room = np.where(fixed, 0.0, cap - z)
    # Rows whose free entries are all zero take the excess by room instead.
    share = np.where(
        wsum > _EPS,
        w / np.maximum(wsum, _EPS),
        room / np.maximum(room.sum(axis=1, keepdims=True), _EPS),
    )
    z = z + excess * share
  return lower + free * z


def round_to_grid(
    a: np.ndarray, lower: np.ndarray, upper: np.ndarray, resolution: float
) -> np.ndarray:
  """Rounds rows to integer multiples of `resolution`, keeping bounds and sum.

  Units are floored, then the missing units go one at a time to the entries
  with the largest remainder that still have room under their cap (largest
  remainder method); surplus units from lower bounds are taken back from the
  entries furthest above their exact value.

  Returns:
    [N, K] int64 grid units; weights = units * resolution sum to exactly 1.
  """
  total = int(round(1.0 / resolution))
  if abs(total * resolution - 1.0) > 1e-9:
    raise ValueError(f"resolution {resolution} must divide 1 exactly")
  lo_u = np.ceil(np.asarray(lower) * total - 1e-6).astype(np.int64)
  hi_u = np.floor(np.asarray(upper) * total + 1e-6).astype(np.int64)
  if np.any(lo_u > hi_u) or lo_u.sum() > total or hi_u.sum() < total:
    raise ValueError(
        f"bounds are infeasible on a grid of resolution {resolution} (a "
        "fixed weight must be a multiple of it); use a finer resolution"
    )
  exact = a * total
  units = np.clip(np.floor(exact + 1e-9).astype(np.int64), lo_u, hi_u)
  for _ in range(4 * a.shape[1] + 8):
    gap = total - units.sum(axis=1)
    if not gap.any():
      break
    rem = exact - units
    rows = np.flatnonzero(gap > 0)
    if rows.size:
      r = np.where(units[rows] < hi_u, rem[rows], -np.inf)
      units[rows, np.argmax(r, axis=1)] += 1
    rows = np.flatnonzero(gap < 0)
    if rows.size:
      r = np.where(units[rows] > lo_u, rem[rows], np.inf)
      units[rows, np.argmin(r, axis=1)] -= 1
  if np.any(units.sum(axis=1) != total):
    raise RuntimeError("round_to_grid did not converge")  # cannot happen
  return units


def leaky_clip(x: np.ndarray, upper: np.ndarray) -> np.ndarray:
  """The official sampler's capping, one candidate at a time, left to right.

  For each candidate j in order, a row whose weight exceeds its cap gives
  the excess to all other entries in proportion (the whole row is scaled by
  1 + excess / (1 - x_j)) and is then set to the cap. Later steps rescale
  entries capped earlier, so a cap can be exceeded in the result: this is
  the behaviour of the official code, kept exactly for `caps="official"`.

  Args:
    x: [N, K] rows on the simplex.
    upper: [K] caps.

  Returns:
    [N, K] rows (each still sums to 1).
  """
  x = np.array(x, np.float64, copy=True)
  upper = np.asarray(upper, np.float64)
  for j in range(x.shape[1]):
    over = x[:, j] - upper[j]
    hit = over > 0
    if not hit.any():
      continue
    rest = 1.0 - x[hit, j]
    # A row that is all on candidate j (rest 0) has nothing to scale: the
    # official code divides by zero there; give the excess uniformly.
    scale = np.where(rest > 0, 1.0 + over[hit] / np.where(rest > 0, rest, 1), 1)
    rows = x[hit] * scale[:, None]
    flat = rest <= 0
    if flat.any():
      k = x.shape[1]
      rows[flat] = over[hit][flat, None] / (k - 1)
    rows[:, j] = upper[j]
    x[hit] = rows
  return x


def _finish_official(
    x: np.ndarray, upper: np.ndarray, floor: float, resolution: float | None
) -> np.ndarray:
  """The official post-processing: leaky caps, floor, round, renormalise."""
  x = leaky_clip(x, upper)
  x = np.where(x < floor, 0.0, x)
  x = x / x.sum(axis=1, keepdims=True)
  if resolution is None:
    return x
  x = np.round(x / resolution) * resolution
  s = x.sum(axis=1, keepdims=True)
  return x / np.where(s > 0, s, 1.0)


def finish_rows(
    x: np.ndarray,
    bounds: Bounds,
    floor: float,
    resolution: float | None,
    caps: str = "hard",
) -> np.ndarray:
  """Floor, bounds and rounding applied to raw simplex draws [N, K]."""
  if caps == "official":
    if np.any(np.asarray(bounds.lower) > 0):
      raise ValueError(
          "caps='official' applies upper caps only; lower bounds (fixed"
          " weights in search.constraints) need caps='hard'"
      )
    return _finish_official(x, bounds.upper, floor, resolution)
  if caps != "hard":
    raise ValueError(f"unknown caps {caps!r}; use one of {CAPS}")
  lower = np.asarray(bounds.lower, np.float64)
  upper = np.asarray(bounds.upper, np.float64)
  x = np.where((x < floor) & (lower <= 0.0), 0.0, x)
  s = x.sum(axis=1, keepdims=True)
  # A row floored to all-zero (impossible for K >= 2 and floor < 1/K) would
  # divide by zero; give it the uniform row instead.
  x = np.where(s > 0, x / np.where(s > 0, s, 1.0), 1.0 / x.shape[1])
  a = cap_project(x, lower, upper)
  if resolution is None:
    return a
  return round_to_grid(a, lower, upper, resolution) * resolution


def _draw(
    rng: np.random.Generator, n: int, cfg: PoolConfig, prior: np.ndarray
) -> np.ndarray:
  k = len(prior)
  if cfg.sampler == "uniform":
    g = rng.standard_exponential((n, k))
  elif cfg.sampler == "demix":
    lo, hi = cfg.concentration_range
    grid = np.logspace(np.log10(lo), np.log10(hi), cfg.concentration_count)
    s = grid[rng.integers(0, len(grid), size=n)]
    g = rng.standard_gamma(s[:, None] * prior[None, :])
  else:
    raise ValueError(f"unknown sampler {cfg.sampler!r}; use one of {SAMPLERS}")
  ssum = g.sum(axis=1, keepdims=True)
  # Tiny concentrations can underflow every gamma draw to 0: such a row is a
  # vertex in the limit, which argmax recovers.
  vertex = np.eye(k)[np.argmax(g, axis=1)]
  return np.where(ssum > 0, g / np.where(ssum > 0, ssum, 1.0), vertex)


def sample_pool(
    cfg: PoolConfig,
    rng: np.random.Generator,
    bounds: Bounds,
    prior: np.ndarray | None = None,
    names: tuple[str, ...] | None = None,
) -> np.ndarray:
  """Draws `cfg.size` distinct mixtures within `bounds`.

  Args:
    cfg: sampler settings.
    rng: the generator (seeded by the caller; the pool is reproducible).
    bounds: per-candidate bounds (validated here).
    prior: [K] prior for the demix sampler (e.g. `prior_from_tokens(tokens,
      cfg.temperature)`); ignored by the uniform sampler.
    names: candidate names for error messages.

  Returns:
    [M, K] float64 rows on the simplex in random order; M == cfg.size unless
    the bounded grid holds fewer distinct mixtures (a warning is logged).
  """
  bounds.validate(names)
  k = bounds.k
  if cfg.sampler == "demix":
    if prior is None:
      raise ValueError("the demix sampler needs a prior (prior_from_tokens)")
    prior = np.asarray(prior, np.float64)
    if prior.shape != (k,) or np.any(prior <= 0):
      raise ValueError(f"prior must be [K={k}] and positive, got {prior}")
    prior = prior / prior.sum()
  else:
    prior = np.full(k, 1.0 / k)
  if cfg.size <= 0:
    raise ValueError(f"pool size must be positive, got {cfg.size}")
  found = np.zeros((0, k))
  for _ in range(20):
    want = cfg.size - len(found)
    n = max(64, int(want * cfg.oversample))
    rows = finish_rows(
        _draw(rng, n, cfg, prior), bounds, cfg.floor, cfg.resolution, cfg.caps
    )
    found = np.concatenate([found, rows])
    # Exact dedup; with a grid this is on integer units.
    if cfg.resolution:
      key = np.round(found / cfg.resolution).astype(np.int64)
    else:
      key = np.round(found, 12)
    _, first = np.unique(key, axis=0, return_index=True)
    found = found[np.sort(first)]
    if len(found) >= cfg.size:
      break
  if len(found) < cfg.size:
    _LOG.warning(
        "pool: only %d distinct mixtures found (asked %d); the "
        "bounded grid is small",
        len(found),
        cfg.size,
    )
  # Draw order is already random; keep the first `size` distinct rows.
  return found[: cfg.size]
