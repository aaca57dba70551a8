"""Model-merging methods over parameter pytrees (jit- and vmap-compatible).

Every method exists at two levels:

* a *tensor* function `*_tensor(stack, weights, base, ...)` (defined in
  `merging.tensors`, importable from here too) that merges one
  tensor given its K component versions stacked on a leading axis
  (`stack` [K, ...]) and, where the method needs one, the base tensor; and
* a *tree* function with the same name without the suffix that maps the
  tensor function over a pytree whose leaves all carry the K axis first.

Methods that act "per tensor" (trimming by magnitude, spherical geometry)
treat each leaf as one tensor. The merge engine calls the tensor functions
per layer inside the scanned forward pass, so for layer-stacked leaves the
unit is one layer's tensor, which matches per-tensor merging of Hugging Face
checkpoints (one tensor per layer) as done by the DeMix ablations.

All arithmetic is done in float32 and the result is cast back to the leaf's
dtype. `weights` are the mixture weights alpha (one per component).

`merge` is the one walk over a tree's leaves: the tree API below and the
merge engine's per-layer path (`merging.store`) both go through it and so
through `merge_tensor`, with the same weight normalisation and DARE keys;
a method therefore has one definition, whichever path scores it.

Notation: theta_k = component k, b = base, tau_k = theta_k - b (task vector),
w_k = weights. `merge(spec, ...)` dispatches on a `MergeSpec`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from demix_jax.merging import tensors

Params = Any

# The per-tensor definitions live in `tensors`; their names stay importable
# from here, where the method registry and the tree API are.
DARE_RESCALES = tensors.DARE_RESCALES
SLERP_DOT_THRESHOLD = tensors.SLERP_DOT_THRESHOLD
breadcrumbs_tensor = tensors.breadcrumbs_tensor
check_weights = tensors.check_weights
dare_drop = tensors.dare_drop
dare_tensor = tensors.dare_tensor
linear_tensor = tensors.linear_tensor
normalize_weights = tensors.normalize_weights
slerp_tensor = tensors.slerp_tensor
spherical_tensor = tensors.spherical_tensor
task_arithmetic_tensor = tensors.task_arithmetic_tensor
ties_tensor = tensors.ties_tensor
trim_topk = tensors.trim_topk

METHODS = (
    "linear",
    "task_arithmetic",
    "ties",
    "dare_linear",
    "dare_ties",
    "breadcrumbs",
    "breadcrumbs_ties",
    "slerp",
    "spherical",
)
# Methods whose weights are used as given (see MergeSpec.normalize): those
# whose mergekit registry default is normalize=False.
UNNORMALISED = frozenset(
    {
        "task_arithmetic",
        "dare_linear",
        "dare_ties",
        "breadcrumbs",
        "breadcrumbs_ties",
    }
)
# Methods that read the base model.
NEEDS_BASE = frozenset(
    {
        "task_arithmetic",
        "ties",
        "dare_linear",
        "dare_ties",
        "breadcrumbs",
        "breadcrumbs_ties",
    }
)


@dataclasses.dataclass(frozen=True)
class MergeSpec:
  """A merge method and its hyperparameters.

  Attributes:
    method: one of `METHODS`.
    density: fraction of task-vector entries kept (TIES, DARE, Breadcrumbs).
      The DeMix ablations used 0.9.
    gamma: Breadcrumbs: fraction of largest-magnitude entries removed.
    scale: lambda, the multiplier of the merged task vector (TIES, DARE,
      Breadcrumbs); 1.0 as in the DeMix configs.
    normalize: mergekit's `normalize`: divide by the sum of the weights
      (for the sign-consensus methods, by the weights of the components that
      agree with the elected sign: the disjoint mean). None (the default)
      takes the method's mergekit default (`normalizes_weights`): linear and
      TIES normalise; task arithmetic, DARE and Breadcrumbs (and their TIES
      variants) use the weights as given (theta = b + sum_k w_k tau_k).
    seed: DARE's drop-mask seed (fixed, so a mixture's proxy is
      deterministic and the same across calls).
    spherical_iters: fixed-point iterations of the spherical mean.
    dare_rescale: how DARE rescales the kept task-vector entries: "l1"
      (mergekit's default `rescale: true`: each tau_k scaled to keep its L1
      norm), "inverse_density" (Yu et al.: divided by density, unbiased in
      expectation) or "none" (mergekit's `rescale: false`).
  """

  method: str = "linear"
  density: float = 0.9
  gamma: float = 0.01
  scale: float = 1.0
  normalize: bool | None = None
  seed: int = 0
  spherical_iters: int = 8
  dare_rescale: str = "l1"

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f"merge.method={self.method!r}; use one of {METHODS}")
    if not 0.0 < self.density <= 1.0:
      raise ValueError(f"merge density must be in (0, 1], got {self.density}")
    bad_gamma = not 0.0 <= self.gamma < 1.0 or (
        self.gamma + self.density > 1.0 + 1e-9
    )
    if self.dare_rescale not in DARE_RESCALES:
      raise ValueError(
          f"merge dare_rescale={self.dare_rescale!r}; use one of "
          f"{DARE_RESCALES}"
      )
    if self.method.startswith("breadcrumbs") and bad_gamma:
      raise ValueError(
          f"breadcrumbs needs 0 <= gamma and gamma + density <= 1, got "
          f"gamma={self.gamma}, density={self.density}"
      )

  @property
  def needs_base(self) -> bool:
    return self.method in NEEDS_BASE

  @property
  def normalizes_weights(self) -> bool:
    """Whether the weights are divided by their sum before merging.

    Resolved here, not stored, so that `dataclasses.replace(spec,
    method=...)` picks up the new method's convention.
    """
    if self.normalize is not None:
      return bool(self.normalize)
    return self.method not in UNNORMALISED


LINEAR = MergeSpec()  # the default (DeMix's) method


# ------------------------------------------------------------------ trees


def merge_tensor(
    spec: MergeSpec,
    stack: jax.Array,
    weights: jax.Array,
    base: jax.Array | None = None,
    key: jax.Array | None = None,
) -> jax.Array:
  """Merges one tensor stack [K, ...] with the method of `spec`.

  Args:
    spec: the method and its hyperparameters.
    stack: the K component versions of the tensor.
    weights: [K] mixture weights, >= 0 with a positive sum (checked when
      concrete; normalised here when `spec.normalizes_weights`).
    base: the base tensor, required by `spec.needs_base` methods.
    key: PRNG key for DARE (defaults to `spec.seed`).

  Returns:
    The merged tensor, with the dtype of `stack`.

  Raises:
    ValueError: negative, non-finite or zero-sum weights; a missing base.
  """
  check_weights(weights)
  norm = spec.normalizes_weights
  w = normalize_weights(weights) if norm else jnp.asarray(weights, jnp.float32)
  m = spec.method
  if spec.needs_base and base is None:
    raise ValueError(f"merge method {m!r} needs the base model")
  if m == "linear":
    return linear_tensor(stack, w)
  if m == "task_arithmetic":
    return task_arithmetic_tensor(stack, w, base, spec.scale)
  if m == "ties":
    return ties_tensor(stack, w, base, spec.density, spec.scale, norm)
  if m in ("dare_linear", "dare_ties"):
    key = jax.random.key(spec.seed) if key is None else key
    return dare_tensor(
        stack,
        w,
        base,
        spec.density,
        key,
        spec.scale,
        ties=m == "dare_ties",
        rescale=spec.dare_rescale,
        disjoint_mean=norm,
    )
  if m in ("breadcrumbs", "breadcrumbs_ties"):
    return breadcrumbs_tensor(
        stack,
        w,
        base,
        spec.density,
        spec.gamma,
        spec.scale,
        ties=m == "breadcrumbs_ties",
        disjoint_mean=norm,
    )
  if m == "slerp":
    if stack.shape[0] != 2:
      raise ValueError(
          f"slerp merges exactly 2 models, got K="
          f"{stack.shape[0]}; use method='spherical'"
      )
    return slerp_tensor(stack[0], stack[1], w[1] / (w[0] + w[1]))
  if m == "spherical":
    return spherical_tensor(stack, w, base, spec.spherical_iters)
  raise ValueError(f"unknown merge method {m!r}")


def leaf_key(seed_or_key, leaf_index: int, layer=0) -> jax.Array:
  """The DARE key of one tensor: fold_in(fold_in(seed, leaf), layer)."""
  key = (
      jax.random.key(seed_or_key)
      if isinstance(seed_or_key, int)
      else seed_or_key
  )
  return jax.random.fold_in(jax.random.fold_in(key, leaf_index), layer)


def merge(
    spec: MergeSpec,
    stacked: Params,
    weights: jax.Array,
    base: Params | None = None,
    *,
    layer: int | jax.Array = 0,
    leaf_ids: Params | None = None,
) -> Params:
  """Merges a pytree whose leaves are [K, ...] stacks, one tensor per leaf.

  Args:
    spec: the method and its hyperparameters.
    stacked: pytree of [K, ...] arrays.
    weights: [K] mixture weights.
    base: pytree like one component (no K axis), for base-using methods.
    layer: the layer these tensors belong to (DARE's key); the engine
      merges one layer's slice at a time and passes its index, possibly
      traced.
    leaf_ids: ints in the structure of `stacked`, each leaf's index in the
      whole model (DARE's key), for when `stacked` is part of a larger
      tree; default: the flattening order of `stacked`.

  Returns:
    The merged pytree (leaves without the K axis). DARE uses
    `leaf_key(spec.seed, i, layer)` for the leaf with id i.
  """
  leaves, treedef = jax.tree.flatten(stacked)
  bases = jax.tree.leaves(base) if base is not None else [None] * len(leaves)
  if len(bases) != len(leaves):
    raise ValueError("base and components have different tree structures")
  ids = range(len(leaves)) if leaf_ids is None else jax.tree.leaves(leaf_ids)
  if len(ids) != len(leaves):
    raise ValueError("leaf_ids and components have different structures")
  out = [
      merge_tensor(spec, x, weights, b, leaf_key(spec.seed, i, layer))
      for x, b, i in zip(leaves, bases, ids)
  ]
  return jax.tree.unflatten(treedef, out)


def _tree_fn(method: str) -> Callable[..., Params]:
  def fn(stacked, weights, base=None, **hparams):
    return merge(MergeSpec(method, **hparams), stacked, weights, base)

  fn.__name__ = method
  fn.__doc__ = (
      f"Tree version of the {method!r} merge; see `merge` and the "
      f"`*_tensor` function for the definition."
  )
  return fn


linear = _tree_fn("linear")
task_arithmetic = _tree_fn("task_arithmetic")
ties = _tree_fn("ties")
dare_linear = _tree_fn("dare_linear")
dare_ties = _tree_fn("dare_ties")
breadcrumbs = _tree_fn("breadcrumbs")
breadcrumbs_ties = _tree_fn("breadcrumbs_ties")
spherical = _tree_fn("spherical")


def slerp(params_a: Params, params_b: Params, t: float) -> Params:
  """SLERP of two models, per tensor (see `slerp_tensor`)."""
  return jax.tree.map(lambda a, b: slerp_tensor(a, b, t), params_a, params_b)


def stack_params(params_list: list[Params]) -> Params:
  """Stacks K param pytrees into one pytree of [K, ...] leaves."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *params_list)
