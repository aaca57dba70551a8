"""Errors of the data library: what is wrong, where, and the fix.

Plain library errors (ValueError): they name the source or mixture and the
entry concerned, never a config field. The pipeline's edge, which knows
where a source or mixture came from in the config, maps them to field paths
(e.g. `data.sources.<source>.<key>`).
"""

from __future__ import annotations


class SourceError(ValueError):
  """A source is misconfigured, or its data is missing or malformed.

  Attributes:
    source: the source's name (`SourceSpec.name`).
    key: the `SourceSpec` field to fix (e.g. "paths", "feature", "kind");
      "" when the source as a whole is concerned.
    problem: what is wrong, e.g. "no file matches 'web/*.jsonl'".
    fix: what to do about it.
  """

  def __init__(self, source: str, key: str, problem: str, fix: str):
    self.source = source
    self.key = key
    self.problem = problem
    self.fix = fix
    where = f"source {source!r}" + (f" ({key})" if key else "")
    super().__init__(f"{where}: {problem}. Fix: {fix}")


class MixtureError(ValueError):
  """Bad mixture weights or mixture arithmetic arguments.

  Attributes:
    mixture: the caller's name for the mixture ("" when none was given).
    key: the entry to fix: a source name in the mixture, or the argument
      ("general", "beta"); "" when the mixture as a whole is concerned.
    problem: what is wrong, e.g. "weight -1.0 is negative or not finite".
    fix: what to do about it.
  """

  def __init__(
      self, problem: str, fix: str, *, mixture: str = "", key: str = ""
  ):
    self.mixture = mixture
    self.key = key
    self.problem = problem
    self.fix = fix
    if mixture and key:
      where = f"{mixture}[{key!r}]"
    else:
      where = mixture or key or "mixture"
    super().__init__(f"{where}: {problem}. Fix: {fix}")
