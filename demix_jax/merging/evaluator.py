"""What a merge+evaluate engine offers the stages: the `Evaluator` protocol.

Two engines implement it: `merging.engine.MixtureEvaluator` (every target
from the row NLLs of the merged proxies) and
`merging.generative.GenerativeEvaluator` (the same plus generated-text
targets such as exact match and pass@k). The search, final and validate
stages, the component diagnostics and the notebooks use only this.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from demix_jax.evals import rows as rows_lib
from demix_jax.merging import objective as objective_lib
from demix_jax.merging import store as store_lib


@runtime_checkable
class Evaluator(Protocol):
  """Scores mixtures of stored components (and single models).

  Attributes:
    store: the stacked components (and the base) the mixtures merge.
    suite: the evaluation rows (benchmarks and held-out rows).
    targets: the names of every target `evaluate` returns.
    domain_metrics: {domain: metric} of the domain scores.
  """

  store: store_lib.ComponentStore
  suite: rows_lib.EvalSuite
  targets: Sequence[str]
  domain_metrics: Mapping[str, str]

  def evaluate(
      self, alphas: Any, progress: Callable[[int, int], None] | None = None
  ) -> dict[str, np.ndarray]:
    """{target: float64 [M]} for mixtures `alphas` [M, K]."""

  def evaluate_params(self, params: Any) -> dict[str, float]:
    """{target: value} of one model (a trained run, a merged tree)."""

  def make_objective(
      self, targets: Sequence[str] | Mapping[str, float] | None = None
  ) -> objective_lib.BoundObjective:
    """A differentiable objective alpha [K] -> scalar over bpb/loss targets."""

  def row_nll_evaluator(self) -> Evaluator:
    """The evaluator that scores from row NLLs alone (itself, or the one
    inside): the loss barriers are measured on held-out bits per byte, as
    decoding text at every barrier point would cost as much as a search."""

  def generation_stats(self) -> dict[str, float]:
    """Models decoded, prompt and generated tokens, decoding seconds so far
    ({} for an evaluator that generates no text)."""
