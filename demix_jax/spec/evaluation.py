"""Reader of the `eval` config section: benchmarks, metrics, target names."""

from __future__ import annotations

from typing import Mapping

from demix_jax import config_lib
from demix_jax.config_lib import ConfigError
from demix_jax.evals import benchmarks as bench_lib
from demix_jax.evals import scoring
from demix_jax.spec import sections
from demix_jax.spec import types


def static_targets(
    benchmarks: tuple[str, ...],
    heldout_sources: tuple[str, ...],
    domain_metrics: Mapping[str, str],
) -> tuple[str, ...]:
  """The evaluator's target names, from names alone (no data needed)."""
  groups = [(b, bench_lib.spec_of(b).kind) for b in benchmarks]
  groups += [(f"heldout/{s}", "heldout") for s in heldout_sources]
  return tuple(scoring.names_for_groups(groups, domain_metrics))


def eval(r: config_lib.Reader, data: types.DataSpec) -> types.EvalSpec:
  benchmarks = r.names("eval.benchmarks", tuple(bench_lib.BENCHMARKS))
  dm = r.mapping("eval.domain_metrics")
  for d in dm:
    if d not in bench_lib.DOMAINS:
      raise ConfigError(
          f"eval.domain_metrics.{d}",
          "unknown domain",
          f"use one of {tuple(bench_lib.DOMAINS)}",
      )
  targets = sections.lib(
      "eval.domain_metrics",
      "use bpb for every domain, or acc/acc_norm where all its benchmarks"
      " are multiple choice",
      static_targets,
      benchmarks,
      tuple(data.sources),
      dm,
  )
  return types.EvalSpec(
      benchmarks=benchmarks,
      max_items=r.int("eval.max_items"),
      heldout_sequences=r.int("eval.heldout_sequences"),
      batch_size=r.int("eval.batch_size"),
      domain_metrics=dm,
      targets=targets,
  )
