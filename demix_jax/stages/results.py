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
    # A field left at its default of None is not written (from_json reads
    # it back as None).
    return {
        f.name: _plain(getattr(x, f.name))
        for f in dataclasses.fields(x)
        if not (getattr(x, f.name) is None and f.default is None)
    }
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


# How a saved result writes a path inside its own workdir: `portable`
# replaces the workdir's prefix with this, `localize` puts the workdir it
# is read from in its place. A workdir moved, renamed or copied then
# resumes and reports; absolute paths in a done.json pointed into the old
# place. Results written before this
# hold absolute paths, which `localize` leaves as they are.
WORKDIR = "<workdir>"


def _reroot(x: Any, old: str, new: str) -> Any:
  """Plain JSON `x` with each string `old` or `old/...` as `new`/`new/...`."""
  if isinstance(x, str):
    if x == old or x.startswith(old + "/"):
      return new + x[len(old) :]
    return x
  if isinstance(x, Mapping):
    return {k: _reroot(v, old, new) for k, v in x.items()}
  if isinstance(x, list):
    return [_reroot(v, old, new) for v in x]
  return x


def portable(d: Any, workdir: Any) -> Any:
  """Plain JSON `d` with every path under `workdir` as `<workdir>/...`."""
  return _reroot(d, str(workdir).rstrip("/"), WORKDIR)


def localize(d: Any, workdir: Any) -> Any:
  """The inverse of `portable`, for the workdir `d` is read from."""
  return _reroot(d, WORKDIR, str(workdir).rstrip("/"))


class Record:
  """A frozen dataclass that round-trips through plain JSON."""

  def to_json(self) -> dict[str, Any]:
    return _plain(self)

  @classmethod
  def from_json(cls, d: Mapping[str, Any], where: str = "") -> Any:
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
class Result(Record):
  """Fields every stage result has: training tokens spent, wall seconds."""

  tokens: int = 0
  seconds: float = 0.0


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
class SearchObjective(Record):
  """What the search minimised: its kind and targets (`search.objective`)."""

  kind: str
  targets: tuple[str, ...]


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
  objective: SearchObjective
  search_seconds: float
  # The surrogate the final refit used ("auto" resolved by its size).
  surrogate: str = ""
  # The base model's scores on the same evaluator (the normalised
  # objective's reference).
  base_scores: dict[str, float] = dataclasses.field(default_factory=dict)
  # The found mixture and every baseline as merged proxies:
  # {name: {alpha, merged_scores, objective, normalized}}.
  proxies: dict[str, Any] = dataclasses.field(default_factory=dict)
  # The gradient search's iterates, [start][step][candidate] (for the
  # landscape plot); empty without a gradient search.
  gradient_paths: list[Any] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinalRun(Result):
  run_dir: str
  weights: dict[str, float]
  train_seconds: float
  # With `final.seeds` > 1: the mean over the seeds, and each seed's own
  # scores (seed 0's run is `run_dir`; `tokens`, `train_seconds`: all seeds).
  scores: dict[str, float]
  seed_scores: list[dict[str, float]] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class MixtureOrigin(Record):
  """A found mixture taken from another run (`final.mixture_from`).

  Attributes:
    path: the mixture.json it was read from.
    source_weights: {source: weight}, what the final's "demix" run trains.
    alpha: the source run's alpha, as written ({} if absent).
    search_config_hash: the config hash of the source run's search result
      (its search/done.json), "" when that file is not beside the report.
  """

  path: str
  source_weights: dict[str, float]
  alpha: dict[str, float]
  search_config_hash: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinalResult(Result):
  runs: dict[str, FinalRun]
  # Where "demix" came from; None = this run's search.
  mixture_from: MixtureOrigin | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProxySearchRun(Record):
  """The mixture one trained-proxy search (RegMix, CLIMB) found.

  `proxy_tokens` is what the method spent on its proxies (each of its
  `n_proxies` trained for about `tokens_per_proxy`), counted for the
  method alone even where two methods shared a proxy run.
  """

  kind: str
  alpha: dict[str, float]
  source_weights: dict[str, float]
  n_proxies: int
  tokens_per_proxy: int
  proxy_tokens: int
  predicted: dict[str, float]
  rounds: list[Any]
  final_cv: dict[str, Any]
  proxies_csv: str
  surrogate: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class BaselinesResult(Result):
  """Every trained-proxy search of `search.baselines`, by name; `tokens`
  counts each proxy run once."""

  methods: dict[str, ProxySearchRun]
  base_scores: dict[str, float]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreparedSource(Record):
  """One source as prepare wrote it (its manifest's counts)."""

  directory: str
  documents: int
  tokens: int
  heldout_documents: int
  heldout_tokens: int
  shards: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrepareResult(Result):
  """The sources as token shards: where, and how much of each."""

  sources: dict[str, PreparedSource]
  tokenizer_fingerprint: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ValidateResult(Result):
  rows: list[Any]
  table: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportResult(Result):
  summary: str
  report: str
  plots: dict[str, str]


@dataclasses.dataclass(frozen=True, kw_only=True)
class StageCost(Record):
  """Training tokens and wall seconds of one stage; with generative
  metrics, the prompt and generated tokens of the search's decoding."""

  tokens: int
  seconds: float
  prompt_tokens: int | None = None
  generated_tokens: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ObjectiveRow(Record):
  """The search objective for one final run, trained and as a proxy."""

  trained_normalized: float
  trained_composite: float
  trained_mean: float
  # The merged proxy at the same mixture (None: no proxy for this run).
  proxy_normalized: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class RankedRun(Record):
  """One final run in the Table 3 ranking (report/ranking.py).

  Attributes:
    method: how its mixture was chosen: "demix" (merged proxies),
      "regmix" / "climb" (trained proxies), "natural" or "fixed".
    search_tokens: training tokens spent finding the mixture: the base and
      the components for DeMix, the base and the trained proxies for
      RegMix and CLIMB, 0 for a mixture set by hand or by the prior.
    scores: its trained score per benchmark target.
    ranks: its rank per benchmark target among the final runs (1 = best,
      ties share the mean rank).
    macro_rank: the mean of `ranks`.
    domain_ranks: its rank per domain score ("domain/<name>").
    domain_macro_rank: the mean of `domain_ranks`.
    n_proxies: proxies its search scored (None: no search).
    tokens_per_proxy: training tokens of each proxy (0: merged proxies).
  """

  method: str
  search_tokens: int
  scores: dict[str, float]
  ranks: dict[str, float]
  macro_rank: float
  domain_ranks: dict[str, float] = dataclasses.field(default_factory=dict)
  domain_macro_rank: float | None = None
  n_proxies: int | None = None
  tokens_per_proxy: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Summary(Record):
  """What a reader wants of a run in one object (report/summary.json)."""

  alpha: dict[str, float]
  source_weights: dict[str, float]
  epochs: dict[str, float]
  predicted: dict[str, float]
  predicted_std: dict[str, float]
  merged: dict[str, float]
  search_methods: dict[str, Any]
  # The found mixture's trained scores ({} without a final stage).
  final: dict[str, float]
  baselines: dict[str, dict[str, float]]
  final_weights: dict[str, dict[str, float]]
  cost: dict[str, StageCost]
  key_targets: list[str]
  n_proxies: int
  surrogate: str
  rounds: list[Any]
  diagnostics: dict[str, Any]
  config_snippet: str
  objectives: dict[str, ObjectiveRow] = dataclasses.field(default_factory=dict)
  # The validation table's rows (None without a validate stage).
  validation: list[Any] | None = None
  # The final runs ranked on each benchmark (DeMix's Table 3), best first;
  # {} without a final stage.
  ranking: dict[str, RankedRun] = dataclasses.field(default_factory=dict)
  # The seed verdict (`summary.seed_verdict`); None with one seed per run.
  verdict: dict[str, Any] | None = None
