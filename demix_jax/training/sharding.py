"""Device mesh, logical-axis rules and batch placement.

The mesh shape and the mapping from the model's logical axis names to mesh
axes are config data (`config.mesh.axes`, `config.mesh.rules`), so the same
code runs data-parallel on 2 CPU cores and FSDP + tensor-parallel on a pod.

  mesh = create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  shardings = param_shardings(axes, mesh, rules)      # NamedSharding pytree
  batch = make_global_batch(host_batch, mesh, rules)  # global jax.Arrays

Every check raises `ShardingError` (a ValueError) naming the problem before
anything is compiled.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
from jax.sharding import AxisType
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

Rules = tuple[tuple[str, Any], ...]

# Logical names the model and trainer use, for validating rules.
LOGICAL_NAMES = (
    "batch",
    "length",
    "embed",
    "mlp",
    "heads",
    "kv",
    "vocab",
    "layers",
    "mixtures",
    "components",
)


class ShardingError(ValueError):
  """A mesh, rule or batch that cannot work on these devices."""


def create_mesh(
    axes: Mapping[str, int], devices: Sequence[jax.Device] | None = None
) -> Mesh:
  """Builds a mesh from {axis name: size}; one size may be -1 (inferred).

  Args:
    axes: ordered mapping of mesh axis names to sizes (e.g. data, fsdp,
      tensor). At most one size is -1, meaning all remaining devices.
    devices: devices to use (default: all of `jax.devices()`).

  Returns:
    A `jax.sharding.Mesh` with `AxisType.Auto` axes (pjit-style sharding
    propagation; jax.make_mesh defaults to Explicit, pitfall P4).

  Raises:
    ShardingError: the sizes do not multiply to the device count.
  """
  devices = list(devices) if devices is not None else jax.devices()
  n = len(devices)
  names = tuple(axes)
  sizes = [int(axes[k]) for k in names]
  if not names:
    raise ShardingError("mesh.axes is empty; give e.g. {'data': -1}")
  bad = [k for k, s in zip(names, sizes) if s == 0 or s < -1]
  if bad:
    raise ShardingError(f"mesh.axes {bad} must be positive or -1: {dict(axes)}")
  if sizes.count(-1) > 1:
    raise ShardingError(
        f"mesh.axes has more than one -1 ({dict(axes)}); set all but one"
    )
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if n % known:
      raise ShardingError(
          f"mesh.axes {dict(axes)}: the fixed axes need a multiple of "
          f"{known} devices, but there are {n}; change mesh.axes"
      )
    sizes[sizes.index(-1)] = n // known
  if math.prod(sizes) != n:
    raise ShardingError(
        f"mesh.axes {dict(zip(names, sizes))} needs {math.prod(sizes)} "
        f"devices but {n} are available; change mesh.axes (use -1 for one "
        f"axis to infer it)"
    )
  return jax.make_mesh(
      tuple(sizes),
      names,
      axis_types=(AxisType.Auto,) * len(names),
      devices=devices,
  )


def check_rules(rules: Rules, mesh: Mesh) -> Rules:
  """Validates logical rules against the mesh; returns them as tuples."""
  out = []
  for item in rules:
    if len(item) != 2:
      raise ShardingError(f"mesh.rules entry {item!r} must be (name, axes)")
    name, target = item
    targets = (target,) if isinstance(target, str) else tuple(target or ())
    for t in targets:
      if t not in mesh.axis_names:
        raise ShardingError(
            f"mesh.rules maps {name!r} to mesh axis {t!r}, which is not one "
            f"of the mesh axes {mesh.axis_names}"
        )
    out.append(
        (
            name,
            target
            if target is None or isinstance(target, str)
            else tuple(target),
        )
    )
  return tuple(out)


def logical_to_spec(names: Sequence[str | None], rules: Rules) -> P:
  """Maps logical axis names to a PartitionSpec (unmapped -> replicated)."""
  spec = nn.logical_to_mesh_axes(tuple(names), rules)
  return P(*tuple(spec)) if spec is not None else P()


def _axis_size(mesh: Mesh, entry) -> int:
  if entry is None:
    return 1
  entries = (entry,) if isinstance(entry, str) else entry
  return math.prod(mesh.shape[e] for e in entries)


def param_shardings(
    shapes: Any, logical_axes: Any, mesh: Mesh, rules: Rules
) -> Any:
  """NamedShardings for a params pytree from its logical axes.

  Args:
    shapes: params or their `jax.eval_shape` (for the divisibility check).
    logical_axes: same structure, leaves are tuples of logical names
      (`models.param_logical_axes`).
    mesh: the device mesh.
    rules: logical name -> mesh axis (or tuple of axes, or None).

  Returns:
    A pytree of `NamedSharding` matching `shapes`.

  Raises:
    ShardingError: a dimension does not divide by its mesh axes; the message
      names the parameter.
  """
  rules = check_rules(rules, mesh)

  def one(path, x, names):
    spec = logical_to_spec(names, rules)
    for dim, (size, entry) in enumerate(zip(x.shape, tuple(spec))):
      k = _axis_size(mesh, entry)
      if size % k:
        raise ShardingError(
            f"parameter {jax.tree_util.keystr(path)} dim {dim} (size {size}, "
            f"logical {names[dim]!r}) does not divide by mesh axes {entry} "
            f"(size {k}); change mesh.rules or mesh.axes"
        )
    return NamedSharding(mesh, spec)

  return jax.tree_util.tree_map_with_path(one, shapes, logical_axes)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int = 2) -> NamedSharding:
  """Sharding of a [B, T, ...] batch array: B over the `batch` rule."""
  spec = logical_to_spec(("batch",) + ("length",) * (ndim - 1), rules)
  return NamedSharding(mesh, spec)


def batch_shards(mesh: Mesh, rules: Rules) -> int:
  """How many ways the batch axis is split over the mesh."""
  spec = logical_to_spec(("batch",), rules)
  return _axis_size(mesh, tuple(spec)[0] if len(tuple(spec)) else None)


def check_batch(
    global_batch_size: int, mesh: Mesh, rules: Rules, grad_accum_steps: int = 1
) -> int:
  """Validates the global batch; returns the per-host batch size.

  Raises:
    ShardingError: the batch does not divide by processes, batch shards or
      gradient-accumulation steps.
  """
  # The mesh's processes, not jax.process_count(): the compile check lays
  # out a compile-only topology without starting the default backend.
  pc = len({d.process_index for d in mesh.devices.flat})
  shards = batch_shards(mesh, rules)
  if global_batch_size <= 0:
    raise ShardingError(
        f"train.global_batch_size={global_batch_size} must " "be positive"
    )
  if global_batch_size % grad_accum_steps:
    raise ShardingError(
        f"train.global_batch_size={global_batch_size} does not divide by "
        f"train.grad_accum_steps={grad_accum_steps}"
    )
  micro = global_batch_size // grad_accum_steps
  if micro % shards:
    raise ShardingError(
        f"train.global_batch_size={global_batch_size} / grad_accum_steps="
        f"{grad_accum_steps} = {micro} sequences per micro-batch does not "
        f"divide by the {shards} batch shards of mesh {dict(mesh.shape)}; "
        "change the batch size or mesh.axes"
    )
  if global_batch_size % pc:
    raise ShardingError(
        f"train.global_batch_size={global_batch_size} does not divide by the "
        f"{pc} processes"
    )
  return global_batch_size // pc


def make_global_batch(
    host_batch: Mapping[str, np.ndarray], mesh: Mesh, rules: Rules
) -> dict[str, jax.Array]:
  """Assembles each process's [B_host, ...] arrays into global arrays.

  Args:
    host_batch: this process's share of the batch (numpy arrays).
    mesh: the device mesh.
    rules: logical rules (the `batch` rule shards axis 0).

  Returns:
    Global `jax.Array`s of shape [B_host * process_count, ...].
  """
  out = {}
  pc = jax.process_count()
  for k, v in host_batch.items():
    v = np.asarray(v)
    sh = batch_sharding(mesh, rules, v.ndim)
    out[k] = jax.make_array_from_process_local_data(
        sh, v, (v.shape[0] * pc,) + v.shape[1:]
    )
  return out


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules: Rules) -> Iterator[None]:
  """Context in which the model's activation constraints take effect."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield
