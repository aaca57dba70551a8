"""What the search minimises: a normalised mean, DeMix's composite rank, or
a single target.

* "normalized" (the demo's default): for each domain target, the relative
  change of the score from a fixed reference, the base model's score
  b_t on the same evaluator, signed so that lower is better:
  (s_t - b_t) / |b_t| for bits per byte and losses, -(s_t - b_t) / |b_t|
  for accuracies (|b_t| below 1e-9 counts as 1); the objective is the
  (optionally weighted) mean over domains. It is a fixed linear function of
  the scores, so a large loss in one domain weighs as much as the gains it
  costs elsewhere, and it means the same thing for two mixtures as for two
  thousand.
* "composite" (official train_predictor.py): for each domain target, the
  percentile rank of the score among the mixtures being compared, best =
  1/M (pandas `rank(ascending=not higher_is_better, pct=True)`, ties
  averaged), then the mean over domains. A rank only counts how many
  mixtures are beaten, not by how much: two small wins outvote one large
  loss. Kept as the paper's choice and reported beside the normalised mean.
* a single target, turned into a lower-is-better value by its direction.

Directions are injected (`direction(name) -> higher_is_better`), normally
`demix_jax.evals.scoring.higher_is_better`, so this module does not depend on
the evaluator.

NaN scores (a diverged proxy) are never ranked: the row gets a NaN objective,
a warning names the mixtures, and the callers exclude it.
"""

from collections.abc import Callable, Mapping
import dataclasses
import logging

import numpy as np
from scipy import stats

_LOG = logging.getLogger(__name__)

Direction = Callable[[str], bool]
KINDS = ("normalized", "composite", "target")


@dataclasses.dataclass(frozen=True)
class ObjectiveSpec:
  """The search objective.

  Attributes:
    targets: target names it uses (composite: the domain scores, e.g.
      ("domain/general", "domain/code", "domain/math"); single: one name).
    kind: "normalized" (mean relative change from `reference`),
      "composite" (mean percentile rank) or "target" (one target).
    weights: optional {target: weight} over the domains (missing = 1).
    reference: {target: the base model's score}, needed by "normalized"
      (the search stage fills it in before the search starts).
  """

  targets: tuple[str, ...]
  kind: str = "composite"
  weights: Mapping[str, float] | None = None
  reference: Mapping[str, float] | None = None

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"objective kind {self.kind!r}: use one of {KINDS}")
    if not self.targets:
      raise ValueError("objective: no targets given")
    if self.kind == "target" and len(self.targets) != 1:
      raise ValueError(
          f"a single-target objective needs exactly one target, "
          f"got {self.targets}"
      )
    for name in self.weights or {}:
      if name not in self.targets:
        raise ValueError(
            f"objective weight for {name!r}, which is not one of "
            f"the targets {self.targets}"
        )
    if self.weights and sum(self.weight_vector()) <= 0:
      raise ValueError("objective weights must have a positive sum")
    if self.reference is not None:
      missing = [t for t in self.targets if t not in self.reference]
      bad = [t for t, v in self.reference.items() if not np.isfinite(v)]
      if missing or bad:
        raise ValueError(
            f"objective reference lacks {missing} or is not finite for {bad}"
        )

  def with_reference(self, reference: Mapping[str, float]) -> "ObjectiveSpec":
    """This objective with the base model's scores as its reference."""
    return dataclasses.replace(
        self, reference={t: float(reference[t]) for t in self.targets}
    )

  def scales(self) -> np.ndarray:
    """[T] |reference| (1 where it is ~0): the normalised mean's divisors."""
    if self.reference is None:
      raise ValueError(
          "the normalized objective needs the base model's scores "
          "(ObjectiveSpec.with_reference) before it can be evaluated"
      )
    b = np.abs(np.array([self.reference[t] for t in self.targets]))
    return np.where(b < 1e-9, 1.0, b)

  def weight_vector(self) -> np.ndarray:
    w = self.weights or {}
    return np.array([float(w.get(t, 1.0)) for t in self.targets])


def percentile_rank(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
  """Percentile rank in (0, 1], best = 1/M; NaN stays NaN and is not ranked."""
  v = np.asarray(values, np.float64)
  out = np.full(v.shape, np.nan)
  ok = np.isfinite(v)
  n = int(ok.sum())
  if n:
    key = -v[ok] if higher_is_better else v[ok]
    out[ok] = stats.rankdata(key, method="average") / n
  return out


def _check(scores: Mapping[str, np.ndarray], spec: ObjectiveSpec) -> None:
  missing = [t for t in spec.targets if t not in scores]
  if missing:
    raise KeyError(
        f"objective targets {missing} not among the scores " f"{sorted(scores)}"
    )


def nan_rows(
    scores: Mapping[str, np.ndarray], spec: ObjectiveSpec
) -> np.ndarray:
  """Boolean [M]: rows with a non-finite value in any objective target."""
  _check(scores, spec)
  return np.any(
      [~np.isfinite(np.asarray(scores[t], np.float64)) for t in spec.targets],
      axis=0,
  )


def evaluate(
    scores: Mapping[str, np.ndarray],
    spec: ObjectiveSpec,
    direction: Direction,
    *,
    what: str = "mixtures",
) -> np.ndarray:
  """The objective of M scored rows (lower is better).

  Args:
    scores: {target: [M]} (measured or predicted).
    spec: the objective.
    direction: target name -> True when higher is better.
    what: how to name the rows in the warning.

  Returns:
    [M] objective; NaN for rows with a non-finite target (logged, excluded
    from the ranks of the others).
  """
  bad = nan_rows(scores, spec)
  if bad.any():
    _LOG.warning(
        "objective: %d of %d %s have NaN/inf scores (diverged proxy?) and are "
        "excluded: rows %s",
        int(bad.sum()),
        len(bad),
        what,
        np.flatnonzero(bad)[:20].tolist(),
    )
  if spec.kind == "target":
    t = spec.targets[0]
    v = np.asarray(scores[t], np.float64)
    out = -v if direction(t) else v.copy()
    out[bad] = np.nan
    return out
  w = spec.weight_vector()
  total = np.zeros(len(bad))
  if spec.kind == "normalized":
    scales = spec.scales()  # raises first when the reference is missing
    reference = spec.reference
    assert reference is not None  # scales() raised otherwise
    for wi, t, b, scale in zip(
        w,
        spec.targets,
        [reference[t] for t in spec.targets],
        scales,
    ):
      v = np.asarray(scores[t], np.float64)
      change = (v - b) / scale
      total += wi * (-change if direction(t) else change)
    total[bad] = np.nan
    return total / w.sum()
  for wi, t in zip(w, spec.targets):
    v = np.where(bad, np.nan, np.asarray(scores[t], np.float64))
    total += wi * percentile_rank(v, direction(t))
  return total / w.sum()


def optimistic_scores(
    mean: Mapping[str, np.ndarray],
    std: Mapping[str, np.ndarray],
    spec: ObjectiveSpec,
    direction: Direction,
    kappa: float,
) -> dict[str, np.ndarray]:
  """Upper confidence bounds: mean + kappa * std in each target's good way.

  Ranking these with `evaluate` gives a UCB version of the composite, which
  favours mixtures where the surrogate is unsure (exploration).
  """
  out = {}
  for t in spec.targets:
    sign = 1.0 if direction(t) else -1.0
    out[t] = np.asarray(mean[t]) + sign * kappa * np.asarray(std[t])
  return out
