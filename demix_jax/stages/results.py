"""What each stage returns: frozen, typed, JSON round-trippable.

A stage's result is the only thing later stages read of it (the pipeline
saves it as `workdir/<stage>/done.json` and loads it back), so its fields are
the stage's interface. `to_json()` gives plain JSON values;
`from_json(d)` rebuilds the result and fails on a missing or unknown field,
so a truncated or foreign done.json is named rather than half-read.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Mapping

import numpy as np


class ResultError(ValueError):
  """A saved result does not have the fields of its type."""


def _plain(x: Any) -> Any:
  if dataclasses.is_dataclass(x):
    return {f.name: _plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
  if isinstance(x, Mapping):
    return {str(k): _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  if isinstance(x, np.ndarray):
    return _plain(x.tolist())
  if isinstance(x, (np.floating, np.integer, np.bool_)):
    x = x.item()
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def _build(tp: Any, value: Any, where: str) -> Any:
  """Rebuilds `value` as type `tp` where `tp` is a result dataclass."""
  origin = typing.get_origin(tp)
  if isinstance(tp, type) and dataclasses.is_dataclass(tp):
    return tp.from_json(value, where)
  if origin in (dict, Mapping) or tp is dict:
    args = typing.get_args(tp)
    if len(args) == 2 and isinstance(value, Mapping):
      return {k: _build(args[1], v, f"{where}.{k}") for k, v in value.items()}
    return dict(value)
  if origin in (typing.Union, types.UnionType):
    options = [a for a in typing.get_args(tp) if a is not type(None)]
    if value is None:
      return None
    return _build(options[0], value, where) if len(options) == 1 else value
  if origin is tuple:
    return tuple(value)
  return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class Result:
  """Fields every stage result has: training tokens spent, wall seconds."""

  tokens: int = 0
  seconds: float = 0.0

  def to_json(self) -> dict[str, Any]:
    return _plain(self)

  @classmethod
  def from_json(cls, d: Mapping[str, Any], where: str = "") -> "Result":
    where = where or cls.__name__
    if not isinstance(d, Mapping):
      raise ResultError(f"{where}: expected an object, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
      raise ResultError(f"{where}: unknown fields {unknown}")
    kwargs = {}
    for name, f in fields.items():
      if name not in d:
        if f.default is dataclasses.MISSING and (
            f.default_factory is dataclasses.MISSING
        ):
          raise ResultError(f"{where}: missing field {name!r}")
        continue
      kwargs[name] = _build(hints[name], d[name], f"{where}.{name}")
    return cls(**kwargs)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainedRun(Result):
  """One training run (a component, a final run)."""

  run_dir: str
  steps: int
  train_seconds: float
  mixture: dict[str, float]
  eval: dict[str, float] = dataclasses.field(default_factory=dict)
  # Token budget -> checkpoint path (components keep these forever).
  budget_checkpoints: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BaseResult(TrainedRun):
  """The shared base model."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ComponentsResult(Result):
  components: dict[str, TrainedRun]

  def run_dirs(self) -> dict[str, str]:
    return {c: r.run_dir for c, r in self.components.items()}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearchResult(Result):
  """The found mixture, how it was found, and the components' diagnostics."""

  alpha: dict[str, float]
  source_weights: dict[str, float]
  predicted: dict[str, float]
  predicted_std: dict[str, float]
  merged_scores: dict[str, float]
  methods: dict[str, Any]  # {"surrogate": {...}, "gradient": {...}}
  epochs: dict[str, float]
  rounds: list[Any]
  final_cv: dict[str, Any]
  proxies_csv: str
  n_proxies: int
  diagnostics: dict[str, Any]
  config_snippet: str
  objective: dict[str, Any]
  search_seconds: float
  # The surrogate the final refit used ("auto" resolved by its size).
  surrogate: str = ""
  # The base model's scores on the same evaluator (the normalised
  # objective's reference).
  base_scores: dict[str, float] = dataclasses.field(default_factory=dict)
  # The found mixture and every baseline as merged proxies:
  # {name: {alpha, merged_scores, objective, normalized}}.
  proxies: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinalRun(Result):
  run_dir: str
  weights: dict[str, float]
  train_seconds: float
  scores: dict[str, float]


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinalResult(Result):
  runs: dict[str, FinalRun]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ValidateResult(Result):
  rows: list[Any]
  table: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportResult(Result):
  summary: str
  report: str
  plots: dict[str, str]
