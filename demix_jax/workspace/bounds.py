"""The mixture side of a run: candidates, prior, epoch caps, alpha bounds.

`MixtureBounds(spec, data)` turns the counted tokens into what the search
samples from and is bounded by: the token-count prior, the natural mixture,
the per-candidate epoch caps and `search.constraints`, and maps a mixture
over candidates (alpha) to source weights.
"""

from __future__ import annotations

import functools
from typing import Mapping

import numpy as np

from demix_jax import spec as spec_lib
from demix_jax.config_lib import ConfigError
from demix_jax.data import mixture as mixture_lib
from demix_jax.search import pool as pool_lib
from demix_jax.workspace import data as data_lib


class MixtureBounds:
  """What alpha may be, from the spec and the counted tokens."""

  def __init__(self, spec: spec_lib.RunSpec, data: data_lib.DataCaches):
    self.spec = spec
    self.data = data

  @property
  def candidates(self) -> tuple[str, ...]:
    return self.spec.data.candidates

  @functools.cached_property
  def prior_tokens(self) -> dict[str, float]:
    """Tokens per candidate for the prior, the caps and the natural mixture:
    the counted train tokens, with `search.prior_tokens` replacing some."""
    over = self.spec.search.prior_tokens
    return {
        c: float(over.get(c, self.data.token_counts[c]))
        for c in self.candidates
    }

  @functools.cached_property
  def natural_alpha(self) -> dict[str, float]:
    """The token-count prior over candidates (the paper's "Uniform")."""
    t = np.array([self.prior_tokens[c] for c in self.candidates], float)
    return dict(zip(self.candidates, (t / t.sum()).tolist()))

  @property
  def cap_run_tokens(self) -> int:
    """The run length the epoch caps assume (`search.cap_run_tokens`)."""
    total = sum(self.prior_tokens.values())
    return int(self.spec.search.cap_run_tokens or total)

  def source_weights(self, alpha: Mapping[str, float]) -> dict[str, float]:
    d = self.spec.data
    return mixture_lib.alpha_to_weights(alpha, d.general, d.beta)

  def alpha_bounds(self) -> pool_lib.Bounds:
    """Per-candidate alpha bounds: epoch caps + `search.constraints`.

    The caps follow the official code: no candidate repeated more than
    data.max_epochs times in a run of `cap_run_tokens` tokens (default the
    sum of the prior token counts). The final run's own repetition is
    checked separately when it trains (data.on_overrun).
    """
    d = self.spec.data
    caps = mixture_lib.alpha_caps(
        self.candidates,
        d.general,
        self.prior_tokens,
        self.cap_run_tokens,
        # The official caps, min(max_epochs * p, 1), ignore the padding.
        0.0 if self.spec.search.pool.caps == "official" else d.beta,
        d.max_epochs,
    )
    bounds = pool_lib.Bounds(
        np.zeros(len(self.candidates)),
        np.array([caps[c] for c in self.candidates]),
    )
    try:
      return bounds.with_constraints(
          self.candidates, dict(self.spec.search.constraints)
      )
    except ValueError as e:
      raise ConfigError(
          "search.constraints",
          f"with the epoch caps {caps} (data.max_epochs): {e}",
          "loosen the constraints, raise data.max_epochs or lower"
          " search.cap_run_tokens",
      ) from e
