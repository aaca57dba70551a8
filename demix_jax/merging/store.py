"""The component store: K component models (and the base) resident on device.

Components are checked before anything is stacked: identical tree
structure, shapes, dtypes and tokenizer fingerprint, with an error naming
the first mismatching leaf and the component it belongs to. They are then
held stacked on a component axis:

* non-layer leaves (embedding, final norm, LM head): [K, ...];
* leaves under `layers` (scanned, leading layer axis): [L, K, ...], so the
  model's layer scan hands each step a [K, ...] slice that the engine merges
  to one layer inside the forward pass.

With a mesh, the stacks are sharded like the model's own parameters (its
logical axes, plus a `components` axis the rules leave replicated).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np

from demix_jax.merging import methods
from demix_jax.training import checkpointing
from demix_jax.training import sharding as sharding_lib

Params = Any
LAYERS = "layers"


class ComponentMismatchError(ValueError):
  """Components (or the base) that cannot be merged with each other."""


def _leaves(tree) -> list[tuple[str, Any]]:
  return [
      (jax.tree_util.keystr(p), x)
      for p, x in jax.tree_util.tree_leaves_with_path(tree)
  ]


def check_compatible(
    components: Sequence[Params],
    names: Sequence[str],
    base: Params | None = None,
    fingerprints: Sequence[str | None] | None = None,
    base_fingerprint: str | None = None,
) -> None:
  """Raises ComponentMismatchError naming the first mismatching leaf.

  Args:
    components: K param pytrees.
    names: their names (for messages).
    base: optional base params, checked the same way.
    fingerprints: tokenizer fingerprint per component (None = unknown).
    base_fingerprint: the base's tokenizer fingerprint.
  """
  if len(components) != len(names):
    raise ValueError(f"{len(components)} components but {len(names)} names")
  if not components:
    raise ComponentMismatchError("no components to merge")
  ref_name = names[0]
  ref = _leaves(components[0])
  others = list(zip(names[1:], components[1:]))
  if base is not None:
    others.append(("base", base))
  for name, params in others:
    got = _leaves(params)
    for i in range(max(len(ref), len(got))):
      if i >= len(got) or i >= len(ref) or got[i][0] != ref[i][0]:
        want = ref[i][0] if i < len(ref) else "(nothing)"
        have = got[i][0] if i < len(got) else "(nothing)"
        raise ComponentMismatchError(
            f"component {name!r} has a different tree structure than "
            f"{ref_name!r}: first mismatching leaf {want} (found {have})"
        )
      (path, a), (_, b) = ref[i], got[i]
      if tuple(a.shape) != tuple(b.shape):
        raise ComponentMismatchError(
            f"component {name!r} leaf {path} has shape {tuple(b.shape)}, "
            f"{ref_name!r} has {tuple(a.shape)}"
        )
      if a.dtype != b.dtype:
        raise ComponentMismatchError(
            f"component {name!r} leaf {path} has dtype {b.dtype}, "
            f"{ref_name!r} has {a.dtype}"
        )
  fps = list(fingerprints or [None] * len(names))
  if base is not None:
    fps.append(base_fingerprint)
  all_names = list(names) + (["base"] if base is not None else [])
  known = [(n, f) for n, f in zip(all_names, fps) if f]
  for n, f in known[1:]:
    if f != known[0][1]:
      raise ComponentMismatchError(
          f"component {n!r} was trained with tokenizer {f[:12]}..., "
          f"{known[0][0]!r} with {known[0][1][:12]}...; components must "
          "share one tokenizer"
      )


def stacked_logical_axes(logical_axes: Params) -> Params:
  """Logical axes of stacked params: `components` after `layers`, or first."""
  out = {
      k: (
          jax.tree.map(
              lambda n: (n[0], "components") + tuple(n[1:]),
              v,
              is_leaf=lambda n: isinstance(n, tuple),
          )
          if k == LAYERS
          else jax.tree.map(
              lambda n: ("components",) + tuple(n),
              v,
              is_leaf=lambda n: isinstance(n, tuple),
          )
      )
      for k, v in logical_axes.items()
  }
  return out


def _stack(components: Sequence[Params]) -> Params:
  first = components[0]
  out = {}
  for k in first:
    axis = 1 if k == LAYERS else 0
    out[k] = jax.tree.map(
        lambda *xs, a=axis: jnp.stack(xs, axis=a), *[c[k] for c in components]
    )
  return out


def _shardings(components, mesh, rules, logical_axes) -> tuple[Any, Any]:
  """(stacked shardings, base shardings): the model's own axes, plus a
  replicated-by-default `components` axis on the stacks."""
  axes = (
      logical_axes
      if logical_axes is not None
      else jax.tree.map(lambda x: (None,) * x.ndim, components[0])
  )
  shapes = jax.eval_shape(_stack, components)
  sh = sharding_lib.param_shardings(
      shapes, stacked_logical_axes(axes), mesh, rules or ()
  )
  bsh = sharding_lib.param_shardings(components[0], axes, mesh, rules or ())
  return sh, bsh


def _with_shardings(shapes: Params, shardings: Params | None) -> Params:
  if shardings is None:
    return shapes
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      shapes,
      shardings,
  )


class ComponentStore:
  """K stacked components (+ optional base) on device.

  Attributes:
    names: component names, in alpha's order.
    stacked: params dict; leaves [K, ...], under `layers` [L, K, ...].
    base: base params (unstacked) or None.
    fingerprint: the shared tokenizer fingerprint (or None if unknown).
  """

  def __init__(
      self,
      stacked: Params,
      names: Sequence[str],
      base: Params | None = None,
      fingerprint: str | None = None,
  ):
    self.stacked = stacked
    self.names = tuple(names)
    self.base = base
    self.fingerprint = fingerprint

  @property
  def k(self) -> int:
    return len(self.names)

  @classmethod
  def from_params(
      cls,
      components: Sequence[Params],
      names: Sequence[str] | None = None,
      base: Params | None = None,
      fingerprints: Sequence[str | None] | None = None,
      base_fingerprint: str | None = None,
      mesh: Mesh | None = None,
      rules=None,
      logical_axes: Params | None = None,
  ) -> "ComponentStore":
    """Checks and stacks already-loaded param pytrees.

    Args:
      components: K params dicts (models.init_params structure).
      names: component names (default "c0", "c1", ...).
      base: optional base params (TIES, DARE, task arithmetic, Breadcrumbs
        and the diagnostics need it).
      fingerprints: tokenizer fingerprint per component.
      base_fingerprint: the base's tokenizer fingerprint.
      mesh: optional mesh to shard the stacks over.
      rules: logical axis rules (with `mesh`).
      logical_axes: `models.param_logical_axes(cfg)` (with `mesh`).

    Returns:
      The store.
    """
    names = list(names or [f"c{i}" for i in range(len(components))])
    check_compatible(components, names, base, fingerprints, base_fingerprint)
    if LAYERS not in components[0]:
      raise ComponentMismatchError(
          f"params have no {LAYERS!r} subtree (keys "
          f"{sorted(components[0])}); expected models.init_params output"
      )
    fp = next(
        (f for f in list(fingerprints or []) + [base_fingerprint] if f), None
    )
    if mesh is not None:
      sh, bsh = _shardings(components, mesh, rules, logical_axes)
      stacked = jax.jit(_stack, out_shardings=sh)(components)
      if base is not None:
        base = jax.device_put(base, bsh)
    else:
      stacked = jax.jit(_stack)(components)
    return cls(stacked, names, base, fp)

  @classmethod
  def abstract(
      cls,
      component: Params,
      names: Sequence[str],
      *,
      with_base: bool = True,
      mesh: Mesh | None = None,
      rules=None,
      logical_axes: Params | None = None,
  ) -> "ComponentStore":
    """A store of shapes and shardings only, laid out like `from_params`.

    For compile checks: the engine lowered over it (`MixtureEvaluator.
    lower_chunk`) allocates nothing, so a model too big for this host, or
    the devices of a compile-only topology, can be checked, with exactly
    the layout real components would get.

    Args:
      component: one component's params or their ShapeDtypeStructs (e.g.
        `jax.eval_shape` of `models.init_params`).
      names: the K component names.
      with_base: also lay out a base model (the pipeline always has one).
      mesh, rules, logical_axes: see `from_params`.

    Returns:
      A store whose `stacked` and `base` hold `jax.ShapeDtypeStruct`s.
    """
    shapes = jax.eval_shape(lambda c: c, component)
    comps = [shapes] * len(names)
    stacked = jax.eval_shape(_stack, comps)
    sh = bsh = None
    if mesh is not None:
      sh, bsh = _shardings(comps, mesh, rules, logical_axes)
    return cls(
        _with_shardings(stacked, sh),
        names,
        _with_shardings(shapes, bsh) if with_base else None,
    )

  @classmethod
  def from_checkpoints(
      cls,
      run_dirs: Mapping[str, str],
      base_dir: str | None = None,
      tokens: int | None = None,
      base_tokens: int | None = None,
      mesh: Mesh | None = None,
      rules=None,
      logical_axes: Params | None = None,
  ) -> "ComponentStore":
    """Loads K component checkpoints (Orbax) and the base, then stacks them.

    Args:
      run_dirs: {component name: run dir}, in alpha's order.
      base_dir: the base run dir (optional).
      tokens: the component token budget to load (None = latest).
      base_tokens: the base's budget (None = latest).
      mesh, rules, logical_axes: see `from_params`.

    Returns:
      The store.
    """
    names = list(run_dirs)

    def target(run_dir, tok):
      # With a mesh, restore straight onto it: the default (one local
      # device) cannot feed a computation over other devices or hosts.
      if mesh is None:
        return None
      shapes = checkpointing.params_metadata(
          run_dir, checkpointing.find_step(run_dir, tok)
      )
      axes = (
          logical_axes
          if logical_axes is not None
          else jax.tree.map(lambda x: (None,) * len(x.shape), shapes)
      )
      sh = sharding_lib.param_shardings(shapes, axes, mesh, rules or ())
      return jax.tree.map(
          lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
          shapes,
          sh,
      )

    comps, fps = [], []
    for n in names:
      meta = checkpointing.read_metadata(run_dirs[n], tokens)
      fps.append(meta.get("tokenizer_fingerprint"))
      comps.append(
          checkpointing.load_params(
              run_dirs[n], tokens, target=target(run_dirs[n], tokens)
          )
      )
    base, base_fp = None, None
    if base_dir is not None:
      meta = checkpointing.read_metadata(base_dir, base_tokens)
      base_fp = meta.get("tokenizer_fingerprint")
      base = checkpointing.load_params(
          base_dir, base_tokens, target=target(base_dir, base_tokens)
      )
    return cls.from_params(
        comps, names, base, fps, base_fp, mesh, rules, logical_axes
    )

  def component(self, i: int) -> Params:
    """The i-th component's params (unstacked)."""
    return {
        k: jax.tree.map(
            lambda x, a=(1 if k == LAYERS else 0): jnp.take(x, i, axis=a), v
        )
        for k, v in self.stacked.items()
    }

  def merge(self, alpha, spec: methods.MergeSpec = methods.LINEAR) -> Params:
    """The merged params of one mixture (per tensor; per layer under
    `layers`), the reference the engine must reproduce.

    Args:
      alpha: [K] mixture weights.
      spec: merge method.

    Returns:
      Params with the structure of one component.
    """
    if spec.needs_base and self.base is None:
      raise ValueError(
          f"merge method {spec.method!r} needs the base model; "
          "build the store with base="
      )
    return _merge_jit(
        spec, self.stacked, self.base, jnp.asarray(alpha, jnp.float32)
    )


def leaf_ids(tree: Params) -> Params:
  """Each leaf's index in flattening order, in the tree's structure."""
  leaves, treedef = jax.tree.flatten(tree)
  return jax.tree.unflatten(treedef, list(range(len(leaves))))


def merge_outer(
    spec: methods.MergeSpec,
    stacked: Params,
    base: Params | None,
    alpha: jax.Array,
) -> dict:
  """Merges the non-layer leaves ([K, ...] stacks) of stacked params.

  Through `methods.merge` with each leaf's id in the whole tree, so DARE
  draws the same masks as the tree API's merge of the same components.
  """
  ids = leaf_ids(stacked)
  # Each leaf merged under its own name (DELLA's ranked axes follow it).
  return {
      k: methods.merge(
          spec,
          {k: v},
          alpha,
          None if base is None else {k: base[k]},
          leaf_ids={k: ids[k]},
      )[k]
      for k, v in stacked.items()
      if k != LAYERS
  }


def merge_layer(
    spec: methods.MergeSpec,
    stacked: Params,
    layer_stack: Params,
    layer_base: Params | None,
    layer_index: jax.Array,
    alpha: jax.Array,
) -> Params:
  """Merges one layer's [K, ...] slices (per tensor) into one layer.

  Through `methods.merge`, the same per-tensor definition as the tree API,
  so merging inside the forward pass changes where a merge happens, never
  what it computes.

  Args:
    spec: merge method.
    stacked: the full stacked params (only its structure is used, for the
      leaf ids that key DARE).
    layer_stack: one layer's slice of `stacked["layers"]`.
    layer_base: that layer's slice of the base, or None.
    layer_index: the layer's index (DARE key).
    alpha: [K] weights.

  Returns:
    One layer's params.
  """
  return methods.merge(
      spec,
      layer_stack,
      alpha,
      layer_base,
      layer=layer_index,
      leaf_ids=leaf_ids(stacked)[LAYERS],
  )


def merge_stacked(
    spec: methods.MergeSpec,
    stacked: Params,
    base: Params | None,
    alpha: jax.Array,
) -> Params:
  """The merged params of one mixture from stacked params (traceable)."""
  out = merge_outer(spec, stacked, base, alpha)
  layers = stacked[LAYERS]
  n_layers = jax.tree.leaves(layers)[0].shape[0]
  base_layers = base[LAYERS] if base is not None else None
  out[LAYERS] = jax.vmap(
      lambda ls, lb, li: merge_layer(spec, stacked, ls, lb, li, alpha)
  )(layers, base_layers, jnp.arange(n_layers, dtype=jnp.int32))
  return out


_merge_jit = jax.jit(merge_stacked, static_argnums=0)


def host_linear_merge(components: Sequence[Params], alpha) -> Params:
  """Linear merge of unstacked components with numpy (float64 accumulate):
  an independent reference for tests and the naive benchmark loop."""
  w = np.asarray(alpha, np.float64)
  w = w / w.sum()
  return jax.tree.map(
      lambda *xs: sum(
          wi * np.asarray(x, np.float64) for wi, x in zip(w, xs)
      ).astype(np.asarray(xs[0]).dtype),
      *components,
  )
