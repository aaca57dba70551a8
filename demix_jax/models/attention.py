"""Causal attention within packed documents: XLA, Pallas splash, cuDNN.

`ModelConfig.attention` picks the implementation:

  xla     the reference: [B, kv, g, T, S] float32 scores, masked softmax.
          Memory grows with T^2; the CPU path (and the numbers of the demo).
  splash  the Pallas TPU flash kernel (`jax.experimental.pallas.ops.tpu.
          splash_attention`): causal mask AND equal segment ids, one MQA
          kernel per key/value head (grouped-query attention), never a T x T
          matrix in HBM. Under a mesh it runs inside `jax.shard_map` (batch
          over the `batch` rule, heads over the `heads` rule), since XLA
          cannot partition a Pallas call. Off TPU it runs in Pallas
          interpret mode (slow; for the parity test). Code that runs the
          model with no mesh set (the merge evaluator) names the mesh and
          the row axes with `shard_rows`; there, vmapped axes (the chunk's
          mixtures) are folded into the kernel's batch (see `shard_rows`).
  cudnn   cuDNN flash attention through `jax.nn.dot_product_attention`
          (`implementation="cudnn"`, causal plus the same-segment mask).
  auto    splash on TPU, cudnn on GPU, xla elsewhere.

All four see the same mask: query t attends to key s iff s <= t and both
have the same segment id (padding, id 0, attends to earlier padding only, so
no row is empty).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Iterator, Literal, NamedTuple

import flax.linen as nn
import jax
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

IMPLEMENTATIONS = ("auto", "xla", "splash", "cudnn")
# A large finite negative (not -inf) so fully masked rows cannot make NaNs.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


class Segments(NamedTuple):
  """What the kernel paths receive instead of a [B, T, T] mask."""

  ids: jax.Array  # int [B, T] packed-document ids, 0 = padding


# The platform programs are traced for, when it is not the default backend
# (the compile check lowers for compile-only TPU devices from a CPU host).
_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "attention_target", default=None
)


@contextlib.contextmanager
def target_platform(platform: str | None) -> Iterator[None]:
  """Traces attention for `platform` ("tpu", "gpu", "cpu") instead of the
  default backend: `auto` resolves for it and splash runs compiled (not in
  interpret mode) when it is "tpu"."""
  token = _TARGET.set(platform)
  try:
    yield
  finally:
    _TARGET.reset(token)


def platform() -> str:
  """The platform attention is traced for."""
  return _TARGET.get() or jax.default_backend()


def resolve(impl: str, backend: str | None = None) -> str:
  """'auto' -> the implementation for the backend; others are checked."""
  if impl not in IMPLEMENTATIONS:
    raise ValueError(
        f"model.attention={impl!r}; use one of {list(IMPLEMENTATIONS)}"
    )
  if impl != "auto":
    return impl
  backend = backend or platform()
  return {"tpu": "splash", "gpu": "cudnn"}.get(backend, "xla")


def xla_attention(q, k, v, mask):
  """The reference path.

  Args:
    q: [B, t, H, D] queries (compute dtype; not yet scaled).
    k: [B, S, KV, D] keys.
    v: [B, S, KV, D] values.
    mask: bool [B, t, S] (True = attend).

  Returns:
    [B, t, H, D] in q's dtype.
  """
  dt = q.dtype
  b, t, h, hd = q.shape
  kvh = k.shape[2]
  g = h // kvh
  q = q.reshape(b, t, kvh, g, hd) * jnp.asarray(hd**-0.5, dt)
  s = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32)
  s = jnp.where(mask[:, None, None], s, MASK_VALUE)
  prob = jax.nn.softmax(s, axis=-1).astype(dt)
  return jnp.einsum("bkgts,bskd->btkgd", prob, v).reshape(b, t, h, hd)


def _block(t: int) -> int:
  """The largest of 512/256/128 dividing t (the kernel tiles by it)."""
  for blk in (512, 256, 128):
    if t % blk == 0:
      return blk
  raise ValueError(
      f"splash attention needs a sequence length divisible by 128, got {t}; "
      "use model.attention='xla' or a multiple of 128"
  )


# Not cached: the kernel holds its mask tables as jnp arrays, which inside
# a trace are that trace's values, and a cache would hand them to later
# traces (custom_vmap traces the kernel more than once; a leaked tracer
# fails the lowering). Building it is numpy work on [T/block]^2 tables.
def _splash_kernel(t: int, groups: int, interpret: bool):
  # Imported here: the module imports fine on CPU, but only the kernel path
  # needs it.
  from jax.experimental.pallas.ops.tpu import splash_attention as sa

  blk = _block(t)
  sizes = sa.BlockSizes(
      block_q=blk,
      block_kv=blk,
      block_kv_compute=blk,
      block_q_dkv=blk,
      block_kv_dkv=blk,
      block_kv_dkv_compute=blk,
      block_q_dq=blk,
      block_kv_dq=blk,
  )
  mask = sa.MultiHeadMask([sa.CausalMask((t, t))] * groups)
  return sa.make_splash_mqa(
      mask,
      block_sizes=sizes,
      head_shards=1,
      q_seq_shards=1,
      mask_value=MASK_VALUE,
      interpret=interpret,
  )


def _splash_local(q, k, v, ids):
  """Splash on one shard: q [B,T,H,D], k/v [B,T,KV,D], ids [B,T]."""
  from jax.experimental.pallas.ops.tpu import splash_attention as sa

  dt = q.dtype
  b, t, h, hd = q.shape
  kvh = k.shape[2]
  g = h // kvh
  kernel = _splash_kernel(t, g, platform() != "tpu")
  q = q * jnp.asarray(hd**-0.5, dt)
  # [B, KV, g, T, D] queries against [B, KV, T, D] keys: one MQA kernel per
  # key/value head, vmapped over heads and rows.
  qg = q.reshape(b, t, kvh, g, hd).transpose(0, 2, 3, 1, 4)
  kg = k.transpose(0, 2, 1, 3)
  vg = v.transpose(0, 2, 1, 3)

  def one_row(qr, kr, vr, sr):
    seg = sa.SegmentIds(q=sr, kv=sr)
    return jax.vmap(lambda a, b_, c: kernel(a, b_, c, segment_ids=seg))(
        qr, kr, vr
    )

  o = jax.vmap(one_row)(qg, kg, vg, ids.astype(jnp.int32))
  return o.transpose(0, 3, 1, 2, 4).reshape(b, t, h, hd).astype(dt)


def _mesh_axes(name: str):
  """The mesh axes a logical name maps to under the active rules."""
  spec = nn.logical_to_mesh_axes((name,))
  return None if spec is None else tuple(spec)[0]


class _Rows(NamedTuple):
  mesh: jax.sharding.Mesh
  axes: tuple[str, ...]
  fold_vmapped: bool


_ROWS: contextvars.ContextVar[_Rows | None] = contextvars.ContextVar(
    "attention_rows", default=None
)


@contextlib.contextmanager
def shard_rows(
    mesh: jax.sharding.Mesh | None, axes, *, fold_vmapped: bool = True
) -> Iterator[None]:
  """Runs splash over `mesh` with rows split over `axes`, where no mesh is set.

  XLA cannot partition a Pallas kernel, so splash needs a `shard_map`, and
  that needs a mesh. The trainer sets one (`jax.set_mesh` and logical
  rules); the merge evaluator (`merging.engine`) traces its chunk function
  with neither, and vmaps the model over the chunk's mixtures, an axis
  sharded over the `mixtures` rule. A `shard_map` under a plain vmap sees
  that axis as replicated: every device would gather every mixture's
  queries. Inside this context splash instead
    * folds each vmapped axis into the kernel's batch ([M, B, ...] ->
      [M * B, ...], a free reshape when M is the sharded major axis) through
      `jax.custom_batching.custom_vmap`, and broadcasts unbatched inputs
      (the rows' segment ids, shared by all mixtures);
    * runs the kernel in a `shard_map` over `mesh` with that batch split over
      `axes` (heads not split), so each device scores its own mixture's rows.
  Results are the same whatever the layout (a `shard_map` is global
  semantics); the context only decides where the work runs.

  `custom_vmap` has no reverse-mode rule, so code that differentiates
  through the model (the gradient search's objective) passes
  `fold_vmapped=False`: splash then only runs sharded over `axes`.

  Args:
    mesh: the mesh (None: the context does nothing).
    axes: a mesh axis name, a tuple of them, or None (rows replicated).
    fold_vmapped: fold vmapped axes into the kernel batch (see above).
  """
  if mesh is None:
    yield
    return
  names = () if axes is None else (axes,) if isinstance(axes, str) else axes
  token = _ROWS.set(_Rows(mesh, tuple(names), fold_vmapped))
  try:
    yield
  finally:
    _ROWS.reset(token)


def _dividing_axes(mesh, axes, n: int) -> tuple[str, ...] | None:
  """The longest prefix of `axes` whose size divides n (None if empty):
  a batch that does not split evenly is split over fewer devices (the
  rest replicate the work) rather than refused."""
  kept = tuple(axes)
  while kept and n % math.prod(mesh.shape[a] for a in kept):
    kept = kept[:-1]
  return kept or None


def _sharded_splash(mesh, batch, heads, q, k, v, ids):
  qkv = P(batch, None, heads, None)
  return jax.shard_map(
      _splash_local,
      mesh=mesh,
      in_specs=(qkv, qkv, qkv, P(batch, None)),
      out_specs=qkv,
      check_vma=False,
  )(q, k, v, ids)


def _folding_splash(rows: _Rows):
  """Splash whose vmap rule folds the vmapped axis into the rows."""

  @jax.custom_batching.custom_vmap
  def fn(q, k, v, ids):
    batch = _dividing_axes(rows.mesh, rows.axes, q.shape[0])
    return _sharded_splash(rows.mesh, batch, None, q, k, v, ids)

  @fn.def_vmap
  def _rule(axis_size, in_batched, q, k, v, ids):
    # Batched inputs arrive with the vmapped axis first.
    def fold(x, batched):
      if not batched:
        x = jnp.broadcast_to(x, (axis_size,) + x.shape)
      return x.reshape((axis_size * x.shape[1],) + x.shape[2:])

    args = [fold(x, b) for x, b in zip((q, k, v, ids), in_batched)]
    out = fn(*args)  # nested vmaps fold again, one level at a time
    return out.reshape((axis_size, -1) + out.shape[1:]), True

  return fn


def splash_attention(q, k, v, ids):
  """Splash attention, inside `shard_map` when a mesh is active (set, or
  named by `shard_rows`)."""
  rows = _ROWS.get()
  if rows is not None:
    if rows.fold_vmapped:
      return _folding_splash(rows)(q, k, v, ids)
    batch = _dividing_axes(rows.mesh, rows.axes, q.shape[0])
    return _sharded_splash(rows.mesh, batch, None, q, k, v, ids)
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return _splash_local(q, k, v, ids)
  return _sharded_splash(
      mesh, _mesh_axes("batch"), _mesh_axes("heads"), q, k, v, ids
  )


def cudnn_attention(
    q, k, v, ids, implementation: Literal["xla", "cudnn"] = "cudnn"
):
  """cuDNN flash attention: causal, plus the same-segment mask."""
  same = ids[:, None, :, None] == ids[:, None, None, :]  # [B, 1, T, S]
  return jax.nn.dot_product_attention(
      q,
      k,
      v,
      mask=same,
      is_causal=True,
      scale=q.shape[-1] ** -0.5,
      implementation=implementation,
  ).astype(q.dtype)


def attend(impl: str, q, k, v, mask):
  """Dispatches on what `forward` built for the implementation.

  Args:
    impl: the config's `attention` (resolved here).
    q: [B, t, H, D]; k, v: [B, S, KV, D].
    mask: a bool [B, t, S] mask (xla, and the cached decode path) or
      `Segments` (splash, cudnn).

  Returns:
    [B, t, H, D].
  """
  # Names for the remat policies (`models.memory`); identities otherwise.
  q = checkpoint_name(q, "query_proj")
  k = checkpoint_name(k, "key_proj")
  v = checkpoint_name(v, "value_proj")
  if not isinstance(mask, Segments):
    out = xla_attention(q, k, v, mask)
  elif resolve(impl) == "splash":
    out = splash_attention(q, k, v, mask.ids)
  elif resolve(impl) == "cudnn":
    out = cudnn_attention(q, k, v, mask.ids)
  else:
    raise ValueError(f"attention {impl!r} was given segment ids, not a mask")
  return checkpoint_name(out, "context")
