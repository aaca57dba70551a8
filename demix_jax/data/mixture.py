"""Mixtures: {source: weight} token fractions, and the DeMix arithmetic.

A weight is the fraction of *training tokens* a source contributes (the
pipeline mixes full-length packed sequences, so example fractions equal
token fractions). Zero drops a source; tiny positive weights are kept.

DeMix (docs/paper_notes.md, alpha-to-weights):
  * component i trains on D'_i = beta * G + (1 - beta) * D_i; the general
    candidate's component trains on G alone (`component_weights`);
  * a mixture alpha over candidates becomes source weights
    general = alpha_g + beta * sum_{i != g} alpha_i and
    candidate i = (1 - beta) * alpha_i (`alpha_to_weights`), i.e. the final
    corpus is sum_i alpha_i * D'_i.

Repetition: `epochs_per_source` gives how often each source is seen in a
run; `check_repetition` enforces `max_epochs` (error or warning);
`alpha_caps` turns the same limit into upper bounds on alpha for the search's
candidate sampler.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from absl import logging

from demix_jax.data.errors import MixtureError

SUM_TOL = 1e-6


class RepetitionError(ValueError):
  """A run would repeat some source more than max_epochs times."""


def validate_weights(
    weights: Mapping[str, float],
    sources: Sequence[str],
    field: str = "mixture",
    normalize: str = "error",
) -> dict[str, float]:
  """Checks a mixture and returns it (normalised if allowed).

  Args:
    weights: source name -> token fraction.
    sources: the known source names.
    field: the caller's name for the mixture, used in messages and as
      `MixtureError.mixture` (e.g. where it was configured).
    normalize: what to do when weights do not sum to 1: "error", "warn"
      (normalise and log a warning) or "silent" (normalise).

  Returns:
    A new dict with the same keys, summing to 1.

  Raises:
    MixtureError: unknown source, negative/NaN/inf weight, all zero, or a sum
      != 1 with normalize="error".
  """
  if normalize not in ("error", "warn", "silent"):
    raise ValueError(f"normalize must be error|warn|silent, got {normalize}")
  if not weights:
    raise MixtureError(
        "no source weights", "give at least one source weight", mixture=field
    )
  out = {}
  for name, w in weights.items():
    if name not in sources:
      raise MixtureError(
          f"unknown source {name!r}",
          f"use names of the defined sources: {list(sources)}",
          mixture=field,
          key=name,
      )
    try:
      w = float(w)
    except (TypeError, ValueError) as e:
      raise MixtureError(
          f"weight {w!r} is not a number",
          "give a float token fraction",
          mixture=field,
          key=name,
      ) from e
    if not math.isfinite(w) or w < 0:
      raise MixtureError(
          f"weight {w} is negative or not finite",
          "use a weight >= 0",
          mixture=field,
          key=name,
      )
    out[name] = w
  total = sum(out.values())
  if total <= 0:
    raise MixtureError(
        "all weights are zero",
        "give some source a positive weight",
        mixture=field,
    )
  if abs(total - 1.0) > SUM_TOL:
    if normalize == "error":
      raise MixtureError(
          f"weights sum to {total:.6g}, not 1",
          "fix them, or let them be normalised (normalize='warn')",
          mixture=field,
      )
    if normalize == "warn":
      logging.warning("%s: weights sum to %.6g; normalising to 1", field, total)
  return {k: v / total for k, v in out.items()}


def active(weights: Mapping[str, float]) -> dict[str, float]:
  """The sources with positive weight (zero weights drop a source)."""
  return {k: float(v) for k, v in weights.items() if v > 0}


def component_weights(
    candidate: str, general: str, beta: float
) -> dict[str, float]:
  """Source weights of candidate's component: beta*G + (1-beta)*D_i."""
  _check_beta(beta)
  if candidate == general or beta >= 1.0:
    return {general: 1.0}
  if beta <= 0.0:
    return {candidate: 1.0}
  return {general: beta, candidate: 1.0 - beta}


def alpha_to_weights(
    alpha: Mapping[str, float], general: str, beta: float
) -> dict[str, float]:
  """DeMix mapping from component weights alpha to source token weights.

  Args:
    alpha: candidate -> weight (on the simplex; includes the general one).
    general: name of the general candidate G.
    beta: token fraction of G in every non-general component's data.

  Returns:
    source -> weight; general = alpha_g + beta * sum_{i!=g} alpha_i,
    candidate i = (1 - beta) * alpha_i. Sums to sum(alpha).
  """
  _check_beta(beta)
  if general not in alpha:
    raise MixtureError(
        f"the general candidate {general!r} is not in alpha {list(alpha)}",
        "include the general candidate",
        key="general",
    )
  others = sum(float(v) for k, v in alpha.items() if k != general)
  out = {general: float(alpha[general]) + beta * others}
  for k, v in alpha.items():
    if k != general:
      out[k] = (1.0 - beta) * float(v)
  return out


def weights_to_alpha(
    weights: Mapping[str, float], general: str, beta: float
) -> dict[str, float]:
  """Inverse of alpha_to_weights (for beta < 1): alpha_i = w_i / (1-beta)."""
  _check_beta(beta)
  if beta >= 1.0:
    raise ValueError("alpha is not identifiable from weights when beta = 1")
  out = {k: float(v) / (1.0 - beta) for k, v in weights.items() if k != general}
  out[general] = 1.0 - sum(out.values())
  return out


def _check_beta(beta: float) -> None:
  if not 0.0 <= beta <= 1.0 or math.isnan(beta):
    raise MixtureError(
        f"beta={beta} is not in [0, 1]",
        "use a token fraction, e.g. 0.5",
        key="beta",
    )


def epochs_per_source(
    weights: Mapping[str, float],
    token_counts: Mapping[str, int],
    run_tokens: int,
) -> dict[str, float]:
  """How many times a run of run_tokens passes over each weighted source."""
  out = {}
  for name, w in weights.items():
    if w <= 0:
      continue
    n = token_counts.get(name, 0)
    out[name] = math.inf if n <= 0 else w * run_tokens / n
  return out


def check_repetition(
    weights: Mapping[str, float],
    token_counts: Mapping[str, int],
    run_tokens: int,
    max_epochs: float,
    on_overrun: str = "error",
    what: str = "run",
) -> dict[str, float]:
  """Enforces max_epochs per source; returns the epochs per source.

  Args:
    weights: the run's source weights.
    token_counts: train tokens per source.
    run_tokens: training tokens of the run.
    max_epochs: the cap (DeMix: 4); <= 0 disables the check.
    on_overrun: "error" raises RepetitionError, "warn" logs.
    what: name of the run for messages.

  Returns:
    source -> epochs.
  """
  epochs = epochs_per_source(weights, token_counts, run_tokens)
  if max_epochs <= 0:
    return epochs
  over = {k: e for k, e in epochs.items() if e > max_epochs}
  if over:
    msg = (
        f"{what}: {run_tokens} tokens would repeat "
        + ", ".join(
            f"{k} {e:.2f}x ({token_counts.get(k, 0)} tokens)"
            for k, e in sorted(over.items())
        )
        + f", above data.max_epochs={max_epochs}. Fix: add data, lower "
        "the run's tokens or these weights, or raise data.max_epochs "
        "(data.on_overrun='warn' to proceed anyway)"
    )
    if on_overrun == "error":
      raise RepetitionError(msg)
    logging.warning("%s", msg)
  return epochs


def alpha_caps(
    candidates: Sequence[str],
    general: str,
    token_counts: Mapping[str, float],
    run_tokens: float,
    beta: float,
    max_epochs: float,
) -> dict[str, float]:
  """Per-candidate upper bounds on alpha so that no source exceeds max_epochs.

  A non-general candidate i receives (1-beta) alpha_i run_tokens tokens, so
  alpha_i <= max_epochs T_i / ((1-beta) run_tokens). G receives
  (alpha_g + beta (1 - alpha_g)) run_tokens, so
  alpha_g <= (max_epochs T_g / run_tokens - beta) / (1 - beta). Caps are
  clipped to [0, 1]; a cap of 0 on G means even the padding alone overruns
  (the run is infeasible for every alpha; see `check_repetition`).

  Args:
    candidates: candidate names (alpha's order).
    general: the general candidate.
    token_counts: train tokens per source.
    run_tokens: the run length the mixture will be trained for.
    beta: general padding fraction.
    max_epochs: the repetition cap; <= 0 means no caps (all 1).

  Returns:
    candidate -> cap in [0, 1].
  """
  _check_beta(beta)
  if max_epochs <= 0 or run_tokens <= 0:
    return {c: 1.0 for c in candidates}
  caps = {}
  for c in candidates:
    budget = max_epochs * token_counts.get(c, 0) / run_tokens
    if c == general:
      cap = 1.0 if beta >= 1.0 else (budget - beta) / (1.0 - beta)
    else:
      cap = 1.0 if beta >= 1.0 else budget / (1.0 - beta)
    caps[c] = min(1.0, max(0.0, cap))
  return caps
