"""Model-merging methods over parameter pytrees (jit- and vmap-compatible).

Every method exists at two levels:

* a *tensor* function `*_tensor(stack, weights, base, ...)` (defined in
  `merging.tensors`, and in `merging.spherical` for SLERP, Multi-SLERP and
  the Karcher mean) that merges one tensor given its K component versions stacked on a leading axis
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

Where a method has mergekit's name it computes what mergekit 0.1.5 computes
with the same parameters (mergekit's defaults where `MergeSpec` leaves them
unset). The deliberate differences:

* ties at a magnitude cut-off (TIES, Breadcrumbs; DELLA's ranks): among
  entries of equal magnitude we keep the ones mergekit keeps when its sorts
  are stable; torch's default sort leaves that order unspecified, so on
  bf16-valued task vectors (many equal magnitudes) plain mergekit may keep
  other entries of the same magnitude. Counts and every other entry agree;
* random draws (DARE, DELLA) come from JAX's PRNG keyed by `seed`, leaf and
  layer, not from torch's generator: the same probabilities, other draws;
* `karcher` is weighted (mergekit's `karcher` method ignores weights);
  Multi-SLERP falls back to the linear merge for antipodal inputs at any K
  (mergekit does for two and raises for more); `karcher` and `multislerp`
  ignore a base, `multislerp_base` is Multi-SLERP of the task vectors
  (mergekit's `multislerp` with a `base_model`).

Notation: theta_k = component k, b = base, tau_k = theta_k - b (task vector),
w_k = weights. `merge(spec, ...)` dispatches on a `MergeSpec`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from demix_jax.merging import spherical as spherical_lib
from demix_jax.merging import tensors

Params = Any

METHODS = (
    "linear",
    "task_arithmetic",
    "ties",
    "dare_linear",
    "dare_ties",
    "breadcrumbs",
    "breadcrumbs_ties",
    "della",
    "della_linear",
    "slerp",
    "multislerp",
    "multislerp_base",
    "karcher",
)
# Names no longer accepted, with the method that computes what they did.
RENAMED = {"spherical": "karcher"}
# Methods whose weights are used as given (see MergeSpec.normalize): those
# whose mergekit registry default is normalize=False.
UNNORMALISED = frozenset(
    {
        "task_arithmetic",
        "dare_linear",
        "dare_ties",
        "breadcrumbs",
        "breadcrumbs_ties",
        "della_linear",
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
        "della",
        "della_linear",
        "multislerp_base",
    }
)
# Methods that elect a sign per entry (TIES' consensus).
SIGN_CONSENSUS = frozenset({"ties", "dare_ties", "breadcrumbs_ties", "della"})
# DELLA ranks magnitudes within each row of a Hugging Face [out, in] matrix
# (mergekit's `della_magprune`); these are the axes of our leaves (negative,
# so a leading layer axis is a row axis too) that hold HF's `in` dimension,
# by leaf name (`interop.hf` maps the layouts). Other leaves: the last axis
# (embeddings are [vocab, d] in both; 1-D leaves are one row).
DELLA_RANK_AXES = {
    "q_proj": (-3,),
    "k_proj": (-3,),
    "v_proj": (-3,),
    "o_proj": (-3, -2),
    "gate_proj": (-2,),
    "up_proj": (-2,),
    "down_proj": (-2,),
    "lm_head": (-2,),
}


@dataclasses.dataclass(frozen=True)
class MergeSpec:
  """A merge method and its hyperparameters (mergekit's names in brackets).

  Attributes:
    method: one of `METHODS`.
    density: fraction of task-vector entries kept (TIES, DARE, Breadcrumbs,
      DELLA; `density`). The DeMix ablations used 0.9.
    gamma: Breadcrumbs: fraction of largest-magnitude entries removed
      (`gamma`); when gamma + density > 1 fewer are removed, as mergekit.
    epsilon: DELLA: keep probabilities span density -/+ epsilon from the
      smallest to the largest magnitude (`epsilon`; the DeMix ablations
      used 0.01). density - epsilon > 0 and density + epsilon < 1.
    scale: lambda, the multiplier of the merged task vector (task
      arithmetic, TIES, DARE, Breadcrumbs, DELLA; `lambda`); 1.0 as in the
      DeMix configs.
    normalize: mergekit's `normalize` (`normalize_weights` for
      Multi-SLERP): divide by the sum of the weights (for the
      sign-consensus methods, by the weights of the components that agree
      with the elected sign: the disjoint mean). None (the default) takes
      the method's mergekit default (`normalizes_weights`): linear, TIES,
      DELLA, SLERP, Multi-SLERP and Karcher normalise; task arithmetic,
      DARE, Breadcrumbs and della_linear (and the TIES variants of DARE and
      Breadcrumbs) use the weights as given (theta = b + sum_k w_k tau_k).
    seed: the seed of DARE's drop masks and DELLA's draws (fixed, so a
      mixture's proxy is deterministic and the same across calls).
    karcher_iters: most steps of the Karcher mean (mergekit's `max_iter`).
    rescale: how DARE and DELLA rescale the kept task-vector entries
      (`rescale`): "l1" (mergekit's default `rescale: true`: each tau_k
      scaled to keep its L1 norm), "inverse_density" (divided by the
      entry's keep probability: density for DARE (Yu et al.), DELLA's
      per-entry probability (Deep et al.); unbiased in expectation) or
      "none" (mergekit's `rescale: false`).
  """

  method: str = "linear"
  density: float = 0.9
  gamma: float = 0.01
  epsilon: float = 0.01
  scale: float = 1.0
  normalize: bool | None = None
  seed: int = 0
  karcher_iters: int = 10
  rescale: str = "l1"

  def __post_init__(self):
    if self.method in RENAMED:
      raise ValueError(
          f"merge.method={self.method!r} was renamed: use "
          f"{RENAMED[self.method]!r} (same merge), or 'multislerp' for "
          "mergekit's Multi-SLERP"
      )
    if self.method not in METHODS:
      raise ValueError(f"merge.method={self.method!r}; use one of {METHODS}")
    if not 0.0 < self.density <= 1.0:
      raise ValueError(f"merge density must be in (0, 1], got {self.density}")
    if not 0.0 <= self.gamma < 1.0:
      raise ValueError(f"merge gamma must be in [0, 1), got {self.gamma}")
    if self.rescale not in tensors.RESCALES:
      raise ValueError(
          f"merge rescale={self.rescale!r}; use one of {tensors.RESCALES}"
      )
    if self.karcher_iters < 0:
      raise ValueError(f"karcher_iters must be >= 0, got {self.karcher_iters}")
    della = self.method.startswith("della") and self.density < 1.0
    d, e = self.density, self.epsilon
    if self.epsilon < 0 or (della and not (d - e > 0 and d + e < 1)):
      raise ValueError(
          f"merge epsilon={e} with density={d}: DELLA needs epsilon >= 0 and "
          "density - epsilon > 0 and density + epsilon < 1; lower epsilon "
          "(the DeMix ablations used 0.01)"
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
    rank_axes: tuple[int, ...] = (-1,),
) -> jax.Array:
  """Merges one tensor stack [K, ...] with the method of `spec`.

  Args:
    spec: the method and its hyperparameters.
    stack: the K component versions of the tensor.
    weights: [K] mixture weights, >= 0 with a positive sum (checked when
      concrete; normalised here when `spec.normalizes_weights`, except for
      the sign-consensus methods, which vote with the weights as given and
      normalise through the disjoint mean, as mergekit).
    base: the base tensor, required by `spec.needs_base` methods (other
      methods ignore it).
    key: PRNG key for DARE and DELLA (defaults to `spec.seed`).
    rank_axes: DELLA: the axes of one tensor ranked together (see
      `DELLA_RANK_AXES`).

  Returns:
    The merged tensor, with the dtype of `stack`.

  Raises:
    ValueError: negative, non-finite or zero-sum weights; a missing base.
  """
  tensors.check_weights(weights)
  norm = spec.normalizes_weights
  raw = jnp.asarray(weights, jnp.float32)
  w = tensors.normalize_weights(weights) if norm else raw
  m = spec.method
  if spec.needs_base and base is None:
    raise ValueError(f"merge method {m!r} needs the base model")
  if m in SIGN_CONSENSUS:
    w = raw  # the disjoint mean normalises (`norm`)
  if key is None:
    key = jax.random.key(spec.seed)
  if m == "linear":
    return tensors.linear_tensor(stack, w)
  if m == "task_arithmetic":
    return tensors.task_arithmetic_tensor(stack, w, base, spec.scale)
  if m == "ties":
    return tensors.ties_tensor(stack, w, base, spec.density, spec.scale, norm)
  if m in ("dare_linear", "dare_ties"):
    return tensors.dare_tensor(
        stack,
        w,
        base,
        spec.density,
        key,
        spec.scale,
        ties=m == "dare_ties",
        rescale=spec.rescale,
        disjoint_mean=norm,
    )
  if m in ("breadcrumbs", "breadcrumbs_ties"):
    return tensors.breadcrumbs_tensor(
        stack,
        w,
        base,
        spec.density,
        spec.gamma,
        spec.scale,
        ties=m == "breadcrumbs_ties",
        disjoint_mean=norm,
    )
  if m in ("della", "della_linear"):
    return tensors.della_tensor(
        stack,
        w,
        base,
        spec.density,
        spec.epsilon,
        key,
        spec.scale,
        ties=m == "della",
        rescale=spec.rescale,
        disjoint_mean=norm,
        rank_axes=rank_axes,
    )
  if m == "slerp":
    if stack.shape[0] != 2:
      raise ValueError(
          f"slerp merges exactly 2 models, got K="
          f"{stack.shape[0]}; use method='multislerp' or 'karcher'"
      )
    return spherical_lib.slerp_tensor(stack[0], stack[1], w[1] / (w[0] + w[1]))
  if m in ("multislerp", "multislerp_base"):
    b = base if m == "multislerp_base" else None
    return spherical_lib.multislerp_tensor(stack, w, b)
  if m == "karcher":
    return spherical_lib.karcher_tensor(stack, w, spec.karcher_iters)
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
    layer: the layer these tensors belong to (DARE's and DELLA's key); the engine
      merges one layer's slice at a time and passes its index, possibly
      traced.
    leaf_ids: ints in the structure of `stacked`, each leaf's index in the
      whole model (DARE's and DELLA's key), for when `stacked` is part of a larger
      tree; default: the flattening order of `stacked`.

  Returns:
    The merged pytree (leaves without the K axis). DARE and DELLA use
    `leaf_key(spec.seed, i, layer)` for the leaf with id i; DELLA ranks
    each leaf over its `DELLA_RANK_AXES` (by the leaf's name).
  """
  with_path, treedef = jax.tree_util.tree_flatten_with_path(stacked)
  leaves = [x for _, x in with_path]
  ranks = [
      DELLA_RANK_AXES.get(str(getattr(p[-1], "key", p[-1])), (-1,))
      if p
      else (-1,)
      for p, _ in with_path
  ]
  bases = jax.tree.leaves(base) if base is not None else [None] * len(leaves)
  if len(bases) != len(leaves):
    raise ValueError("base and components have different tree structures")
  ids = range(len(leaves)) if leaf_ids is None else jax.tree.leaves(leaf_ids)
  if len(ids) != len(leaves):
    raise ValueError("leaf_ids and components have different structures")
  out = [
      merge_tensor(spec, x, weights, b, leaf_key(spec.seed, i, layer), r)
      for x, b, i, r in zip(leaves, bases, ids, ranks)
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
della = _tree_fn("della")
della_linear = _tree_fn("della_linear")
multislerp = _tree_fn("multislerp")
multislerp_base = _tree_fn("multislerp_base")
karcher = _tree_fn("karcher")


def slerp(params_a: Params, params_b: Params, t: float) -> Params:
  """SLERP of two models, per tensor (see `spherical.slerp_tensor`)."""
  return jax.tree.map(
      lambda a, b: spherical_lib.slerp_tensor(a, b, t), params_a, params_b
  )


def stack_params(params_list: list[Params]) -> Params:
  """Stacks K param pytrees into one pytree of [K, ...] leaves."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *params_list)
