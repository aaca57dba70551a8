"""Errors of the data library: what is wrong with a source, and the fix."""

from __future__ import annotations

from demix_jax.config_lib import ConfigError


class SourceError(ConfigError):
  """A source is misconfigured or its data is missing; names field and fix."""

  def __init__(self, source: str, key: str, problem: str, fix: str):
    self.source = source
    self.key = key
    self.problem = problem
    self.fix = fix
    super().__init__(f"data.sources.{source}.{key}", problem, fix)
