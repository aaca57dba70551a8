"""The engine side of a run: the mesh, component stores, merge evaluators.

`Engines(spec, data)` loads the stacked components of a set of run
directories at a token budget onto the mesh once, and builds the
merge+evaluate engine over them once per merge method; both are cached on
it, keyed by what they are built from.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from demix_jax import models
from demix_jax import spec as spec_lib
from demix_jax.config_lib import ConfigError
from demix_jax.merging import evaluator as evaluator_lib
from demix_jax.workspace import data as data_lib


class Engines:
  """Cached component stores and evaluators of one run."""

  def __init__(self, spec: spec_lib.RunSpec, data: data_lib.DataCaches):
    self.spec = spec
    self.data = data
    # Keyed by what they are built from (directories, budget, method).
    self._stores: dict[tuple, Any] = {}
    self._evaluators: dict[tuple, evaluator_lib.Evaluator] = {}

  @property
  def candidates(self) -> tuple[str, ...]:
    return self.spec.data.candidates

  def mesh_and_rules(self):
    from demix_jax.training import sharding as sharding_lib  # pylint: disable=g-import-not-at-top  # jax mesh only when used

    mesh = sharding_lib.create_mesh(dict(self.spec.mesh.axes))
    return mesh, sharding_lib.check_rules(self.spec.mesh.rules, mesh)

  def component_store(
      self,
      base_dir: str,
      component_dirs: Mapping[str, str],
      tokens: int,
  ):
    """The stacked components at `tokens` (+ the base), sharded; cached."""
    from demix_jax.merging import store as store_lib  # pylint: disable=g-import-not-at-top  # orbax

    key = (
        str(base_dir),
        tuple(str(component_dirs[c]) for c in self.candidates),
        int(tokens),
    )
    if key in self._stores:
      return self._stores[key]
    mesh, rules = self.mesh_and_rules()
    store = store_lib.ComponentStore.from_checkpoints(
        {c: str(component_dirs[c]) for c in self.candidates},
        base_dir=str(base_dir),
        tokens=int(tokens),
        mesh=mesh,
        rules=rules,
        logical_axes=models.param_logical_axes(self.spec.model),
    )
    if store.fingerprint and store.fingerprint != self.data.vocab.fingerprint:
      raise ConfigError(
          "data.tokenizer",
          "the components were trained with a different tokenizer than the"
          " current one",
          "use the tokenizer of that run (data.tokenizer.path) or a new"
          " workdir",
      )
    self._stores[key] = store
    return store

  def evaluator(
      self,
      base_dir: str,
      component_dirs: Mapping[str, str],
      tokens: int,
      method: str | None = None,
  ) -> evaluator_lib.Evaluator:
    """The merge+evaluate engine over those components; cached per key.

    The row-NLL `MixtureEvaluator`, or with a generative domain metric
    (exact_match, pass@k) a `merging.generative.GenerativeEvaluator` around
    it; both implement `merging.evaluator.Evaluator`.
    """
    merge = self.spec.merge.spec
    if method is not None and method != merge.method:
      merge = dataclasses.replace(merge, method=method)
    key = (
        str(base_dir),
        tuple(str(component_dirs[c]) for c in self.candidates),
        int(tokens),
        merge,
    )
    if key not in self._evaluators:
      self._evaluators[key] = self._engine(
          self.component_store(base_dir, component_dirs, tokens), merge
      )
    return self._evaluators[key]

  def model_evaluator(self) -> evaluator_lib.Evaluator:
    """An evaluator of single models, over no components; cached.

    It scores a model (`evaluate_params`) exactly as `evaluator(...)` does,
    on the same rows and metrics, where no components exist to load (the
    final runs of a mixture taken from another run, `final.mixture_from`).
    Its store holds the model's shapes only, so nothing is loaded or
    allocated for it; it merges no mixtures (`evaluate` has no components
    to merge).
    """
    import jax  # pylint: disable=g-import-not-at-top  # heavy

    from demix_jax.merging import methods  # pylint: disable=g-import-not-at-top
    from demix_jax.merging import store as store_lib  # pylint: disable=g-import-not-at-top  # orbax

    key = ("model",)
    if key not in self._evaluators:
      mesh, rules = self.mesh_and_rules()
      cfg = self.spec.model
      shapes = jax.eval_shape(
          lambda k: models.init_params(cfg, k), jax.random.key(0)
      )
      store = store_lib.ComponentStore.abstract(
          shapes,
          ("model",),
          with_base=False,
          mesh=mesh,
          rules=rules,
          logical_axes=models.param_logical_axes(self.spec.model),
      )
      # Linear: a single model needs no base, whatever merge.method is.
      self._evaluators[key] = self._engine(store, methods.LINEAR)
    return self._evaluators[key]

  def _engine(self, store, merge) -> evaluator_lib.Evaluator:
    """The row-NLL engine over `store`, wrapped for generative metrics."""
    from demix_jax.merging import engine as engine_lib  # pylint: disable=g-import-not-at-top  # heavy: jit
    from demix_jax.merging import generative  # pylint: disable=g-import-not-at-top  # heavy: jit

    mesh, rules = self.mesh_and_rules()
    e = self.spec.eval
    inner = engine_lib.MixtureEvaluator(
        self.spec.model,
        store,
        self.data.suite,
        spec=merge,
        chunk_size=self.spec.merge.chunk_size,
        mesh=mesh,
        rules=rules,
        domain_metrics=generative.nll_domain_metrics(e.domain_metrics),
    )
    return generative.wrap(
        inner,
        self.data.vocab,
        domain_metrics=dict(e.domain_metrics),
        generation=e.generation,
        sandbox=e.sandbox,
        math_timeout_s=e.math_timeout_s,
        max_items=e.max_items,
        seed=self.spec.seed,
        files=dict(e.benchmark_files),
    )
