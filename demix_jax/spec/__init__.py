"""The run spec: a pipeline config read once, typed and validated.

`resolve(config)` is the only place a ConfigDict is read. It returns a frozen
`RunSpec` whose sections are the typed arguments the libraries take
(ModelConfig, OptimConfig, SourceSpec, MergeSpec, PoolConfig, SearchConfig,
ObjectiveSpec, GradientConfig, ...), built once and checked against the
libraries' own registries (merge methods, surrogates, samplers, benchmarks,
target names). Every invalid value, whichever stage would use it, is refused
here, before any work, as a `ConfigError` naming the field and the fix: a
typo in a search field must not surface after hours of component training.

Target names need no data: they follow from the benchmark names, the source
names (held-out rows) and the domain metrics, so `search.objective` is
checked at startup too.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import ml_collections

from demix_jax import config_lib
from demix_jax.config_lib import ConfigError
from demix_jax.spec import evaluation
from demix_jax.spec import search
from demix_jax.spec import sections
from demix_jax.spec.evaluation import static_targets
from demix_jax.spec.sections import library_error_field
from demix_jax.spec.types import BASELINES
from demix_jax.spec.types import NORMALIZE
from demix_jax.spec.types import PROXY_SEARCH_KINDS
from demix_jax.spec.types import SEARCH_METHODS
from demix_jax.spec.types import BudgetSpec
from demix_jax.spec.types import DataSpec
from demix_jax.spec.types import EvalSpec
from demix_jax.spec.types import FinalSpec
from demix_jax.spec.types import MergeSettings
from demix_jax.spec.types import MeshSpec
from demix_jax.spec.types import PrepareSpec
from demix_jax.spec.types import ProxySearchSpec
from demix_jax.spec.types import RunSpec
from demix_jax.spec.types import SearchSpec
from demix_jax.spec.types import TokenizerSpec
from demix_jax.spec.types import TrainSpec
from demix_jax.spec.types import ValidateSpec
from demix_jax.stages import stage as stage_lib


def resolve(
    config: ml_collections.ConfigDict | Mapping[str, Any],
    num_devices: int | None = None,
    stages: tuple[str, ...] | None = None,
) -> RunSpec:
  """Reads, types and validates a whole pipeline config.

  Args:
    config: the pipeline ConfigDict (configs/*.py) or its plain dict.
    num_devices: the global device count; None skips the checks that need
      it (mesh size, batch divisibility).
    stages: the stages this run will execute (default: config.stages).

  Returns:
    The frozen RunSpec.

  Raises:
    ConfigError: naming the first offending field and the fix.
  """
  if isinstance(config, ml_collections.ConfigDict):
    config = config_lib.to_dict(config)
  else:
    # A private copy: the spec must not change when the caller's dict does.
    config = copy.deepcopy(dict(config))
  r = config_lib.Reader(config)
  seed = r.int("seed", 0)
  if stages is None:
    stages = r.names("stages", stage_lib.ORDER, empty=False)
  else:
    for s in stages:
      if s not in stage_lib.ORDER:
        raise ConfigError(
            "stages",
            f"unknown stage {s!r}",
            f"use names from {stage_lib.ORDER}",
        )
  model = sections.model(r)
  mesh = sections.mesh(r, num_devices)
  data = sections.data(r, model)
  budgets = sections.budgets(r)
  ev = evaluation.eval(r, data)
  merge = sections.merge(r, seed)
  validate = search.validate(r, budgets)
  sections.check_merge_variants(merge, validate.merge_methods)
  optim = sections.optim(r)
  searched = evaluation.check_search(
      search.search(r, seed, data, ev, merge.chunk_size), ev
  )
  spec = RunSpec(
      seed=seed,
      stages=tuple(stages),
      model=model,
      optim=optim,
      component_optim=sections.component_optim(r, optim),
      mesh=mesh,
      data=data,
      train=sections.train(r, num_devices, mesh),
      budgets=budgets,
      eval=ev,
      merge=merge,
      search=searched,
      final=search.final(r, data, tuple(searched.baselines)),
      validate=validate,
      config=config,
      prepare=sections.prepare(r),
  )
  r.skip("stages")  # read above, unless the caller's `stages` replace it
  r.check_all_read()  # a key nothing read is a typo, not a default
  return spec


__all__ = [
    "BASELINES",
    "BudgetSpec",
    "ConfigError",
    "DataSpec",
    "EvalSpec",
    "FinalSpec",
    "MergeSettings",
    "MeshSpec",
    "PrepareSpec",
    "PROXY_SEARCH_KINDS",
    "ProxySearchSpec",
    "NORMALIZE",
    "RunSpec",
    "SEARCH_METHODS",
    "SearchSpec",
    "TokenizerSpec",
    "TrainSpec",
    "ValidateSpec",
    "library_error_field",
    "resolve",
    "static_targets",
]
