"""A Qwen3-style decoder-only language model, used functionally.

The layers are Flax linen modules, but the model is driven through plain
functions over a params pytree so that merging, vmapping over many models
and sharding are ordinary JAX:

  params = init_params(cfg, rng)
  logits = forward(cfg, params, tokens, positions, segment_ids)

Architecture (Qwen3): token embedding -> n_layers x [RMSNorm -> GQA
attention with per-head RMSNorm on queries and keys (QK-norm) and RoPE ->
residual -> RMSNorm -> SwiGLU MLP -> residual] -> RMSNorm -> LM head (tied to
the embedding or not). Attention is causal and restricted to the same packed
document (`segment_ids`), so packing never leaks across documents.

Layers are scanned: every leaf under `params["layers"]` carries a leading
layer axis, compile time does not grow with depth, and `forward` can apply a
`layer_transform` to each per-layer slice inside the scan (the merge engine
passes component-stacked layers `[L, K, ...]` and merges K -> 1 per layer, so
only one merged layer is ever materialised).

Every parameter carries logical axis names (`embed`, `mlp`, `heads`, `kv`,
`vocab`, `layers`; see `param_logical_axes`) and activations are constrained
with `batch`, `length`, `embed`, ... via `flax.linen.with_logical_constraint`,
which is a no-op unless the caller sets logical axis rules (the trainer does,
under its mesh).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, cast

import flax.linen as nn
import jax
import jax.numpy as jnp

from demix_jax.models import attention as attention_lib
from demix_jax.models import memory

Params = Any
LayerTransform = Callable[[Params], Params]

_DTYPES = {
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
}
# A large finite negative (not -inf) so fully masked rows cannot make NaNs.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and numerics of the decoder (the fields of `config.model`).

  Attributes:
    vocab_size: number of token ids (must equal the tokenizer's size).
    d_model: residual stream width.
    n_layers: number of decoder layers (scanned).
    n_heads: query heads.
    n_kv_heads: key/value heads (grouped-query attention); divides n_heads.
    head_dim: width of one attention head.
    d_ff: SwiGLU hidden width.
    rope_theta: RoPE base frequency (Qwen3: 1e6).
    tie_embeddings: LM head reuses the token embedding matrix.
    norm_eps: RMSNorm epsilon.
    dtype: compute dtype name ("float32", "bfloat16").
    param_dtype: storage dtype of the parameters.
    remat: what each layer keeps for the backward pass: a policy name of
      `models.memory.REMAT_POLICIES` ("none", "full", "minimal", ...; True
      and False mean "full" and "none").
    attention: "auto", "xla", "splash" or "cudnn" (`models.attention`;
      auto = splash on TPU, cudnn on GPU, xla elsewhere).
    loss_chunk: positions per chunk of the LM head + log-softmax in the
      loss and the evaluator's row NLL (0 = unchunked; `models.memory`).
  """

  vocab_size: int
  d_model: int
  n_layers: int
  n_heads: int
  n_kv_heads: int
  head_dim: int
  d_ff: int
  rope_theta: float = 10_000.0
  tie_embeddings: bool = True
  norm_eps: float = 1e-6
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: bool | str = False
  attention: str = "auto"
  loss_chunk: int = 0

  def __post_init__(self):
    memory.remat_name(self.remat)
    attention_lib.resolve(self.attention, backend="cpu")
    if (
        isinstance(self.loss_chunk, bool)
        or not isinstance(self.loss_chunk, int)
        or self.loss_chunk < 0
    ):
      raise ValueError(
          f"model.loss_chunk must be an int >= 0, got {self.loss_chunk!r}"
      )
    for name in (
        "vocab_size",
        "d_model",
        "n_layers",
        "n_heads",
        "n_kv_heads",
        "head_dim",
        "d_ff",
    ):
      v = getattr(self, name)
      if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"model.{name} must be a positive int, got {v!r}")
    if self.n_heads % self.n_kv_heads:
      raise ValueError(
          f"model.n_heads ({self.n_heads}) must be a multiple of "
          f"model.n_kv_heads ({self.n_kv_heads}) for grouped-query attention"
      )
    if self.head_dim % 2:
      raise ValueError(f"model.head_dim ({self.head_dim}) must be even (RoPE)")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in _DTYPES:
        raise ValueError(
            f"model.{name}={getattr(self, name)!r}; use one of "
            f"{sorted(_DTYPES)}"
        )

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
    """Builds a config from a mapping (e.g. `config.model.to_dict()`).

    Args:
      d: field name -> value; unknown keys raise ValueError.

    Returns:
      The ModelConfig.
    """
    d = dict(d)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(
          f"unknown model config keys {unknown}; known: " f"{sorted(names)}"
      )
    return cls(**d)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @property
  def compute_dtype(self):
    return _DTYPES[self.dtype]

  @property
  def weight_dtype(self):
    return _DTYPES[self.param_dtype]


def constrain(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
  """Logical sharding constraint; a no-op without axis rules and a mesh."""
  return nn.with_logical_constraint(x, names)


def _init(std: float = 0.02):
  return nn.initializers.normal(stddev=std)


class RMSNorm(nn.Module):
  """RMSNorm over the last axis, computed in float32."""

  eps: float
  dtype: Any
  param_dtype: Any
  axis_name: str = "embed"

  @nn.compact
  def __call__(self, x):
    scale = self.param(
        "scale",
        nn.with_logical_partitioning(nn.initializers.ones, (self.axis_name,)),
        (x.shape[-1],),
        self.param_dtype,
    )
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    return (y * scale.astype(jnp.float32)).astype(self.dtype)


def _rope(x, positions, theta: float):
  """Rotary embedding (rotate-half convention); x [B,T,N,D], pos [B,T]."""
  d = x.shape[-1]
  freq = theta ** (-jnp.arange(0, d // 2, dtype=jnp.float32) * 2.0 / d)
  ang = positions.astype(jnp.float32)[..., None] * freq  # [B,T,D/2]
  sin = jnp.sin(ang)[:, :, None, :]
  cos = jnp.cos(ang)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def attention_mask(segment_ids: jax.Array) -> jax.Array:
  """Causal mask within packed documents: [B, T] ids -> [B, T, T] bool.

  Query t attends to key s iff s <= t and both lie in the same segment.
  Padding (segment 0) attends to earlier padding only, which keeps every row
  non-empty (no NaNs) and never touches real tokens.
  """
  t = segment_ids.shape[-1]
  causal = jnp.tril(jnp.ones((t, t), dtype=jnp.bool_))
  same = segment_ids[:, :, None] == segment_ids[:, None, :]
  return jnp.logical_and(causal[None], same)


class Attention(nn.Module):
  """Grouped-query self-attention with QK-norm and RoPE."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, mask, positions, kv_cache=None, cache_index=None):
    # With kv_cache=(k, v) [B, S, kvh, hd], the new keys/values are written
    # at slots cache_index.. and attention reads all S slots (mask [B, t, S]);
    # returns (out, (k, v)). Without it, the plain path (mask [B, t, t]).
    cfg = self.cfg
    dt, pdt = cfg.compute_dtype, cfg.weight_dtype
    h, kvh, hd, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_model
    p = lambda name, shape, names: self.param(
        name, nn.with_logical_partitioning(_init(), names), shape, pdt
    ).astype(dt)
    wq = p("q_proj", (d, h, hd), ("embed", "heads", "kv"))
    wk = p("k_proj", (d, kvh, hd), ("embed", "heads", "kv"))
    wv = p("v_proj", (d, kvh, hd), ("embed", "heads", "kv"))
    wo = p("o_proj", (h, hd, d), ("heads", "kv", "embed"))
    q = jnp.einsum("btd,dhk->bthk", x, wq)
    k = jnp.einsum("btd,dhk->bthk", x, wk)
    v = jnp.einsum("btd,dhk->bthk", x, wv)
    q = RMSNorm(cfg.norm_eps, dt, pdt, "kv", name="q_norm")(q)
    k = RMSNorm(cfg.norm_eps, dt, pdt, "kv", name="k_norm")(k)
    q = _rope(q, positions, cfg.rope_theta)
    k = _rope(k, positions, cfg.rope_theta)
    if kv_cache is not None:
      put = lambda c, u: jax.lax.dynamic_update_slice_in_dim(
          c, u.astype(c.dtype), cache_index, axis=1
      )
      k, v = put(kv_cache[0], k), put(kv_cache[1], v)
    q = constrain(q, ("batch", "length", "heads", "kv"))
    # `mask`: bool [B, t, S], or attention.Segments for the kernel paths.
    o = attention_lib.attend(cfg.attention, q, k, v, mask)
    out = jnp.einsum("bthk,hkd->btd", o, wo)
    out = constrain(out, ("batch", "length", "embed"))
    return out if kv_cache is None else (out, (k, v))


class Mlp(nn.Module):
  """SwiGLU MLP: down(silu(gate(x)) * up(x))."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    dt, pdt = cfg.compute_dtype, cfg.weight_dtype
    p = lambda name, shape, names: self.param(
        name, nn.with_logical_partitioning(_init(), names), shape, pdt
    ).astype(dt)
    wg = p("gate_proj", (cfg.d_model, cfg.d_ff), ("embed", "mlp"))
    wu = p("up_proj", (cfg.d_model, cfg.d_ff), ("embed", "mlp"))
    wd = p("down_proj", (cfg.d_ff, cfg.d_model), ("mlp", "embed"))
    hid = jax.nn.silu(x @ wg) * (x @ wu)
    hid = constrain(hid, ("batch", "length", "mlp"))
    return constrain(hid @ wd, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
  """One pre-norm decoder layer: attention and SwiGLU with residuals."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, mask, positions, kv_cache=None, cache_index=None):
    # kv_cache: see Attention; then returns (x, new cache).
    cfg = self.cfg
    dt, pdt = cfg.compute_dtype, cfg.weight_dtype
    hn = RMSNorm(cfg.norm_eps, dt, pdt, name="attn_norm")(x)
    attn = Attention(cfg, name="attn")
    if kv_cache is None:
      x = x + attn(hn, mask, positions)
    else:
      a, kv_cache = attn(hn, mask, positions, kv_cache, cache_index)
      x = x + a
    hn = RMSNorm(cfg.norm_eps, dt, pdt, name="mlp_norm")(x)
    x = x + Mlp(cfg, name="mlp")(hn)
    x = constrain(x, ("batch", "length", "embed"))
    return x if kv_cache is None else (x, kv_cache)


class _Outer(nn.Module):
  """Embedding, final norm and (untied) LM head: the non-layer params."""

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    pdt = cfg.weight_dtype
    self.embed = self.param(
        "embed",
        nn.with_logical_partitioning(_init(), ("vocab", "embed")),
        (cfg.vocab_size, cfg.d_model),
        pdt,
    )
    self.final_norm = RMSNorm(
        cfg.norm_eps, cfg.compute_dtype, pdt, name="final_norm"
    )
    if not cfg.tie_embeddings:
      self.lm_head = self.param(
          "lm_head",
          nn.with_logical_partitioning(_init(), ("embed", "vocab")),
          (cfg.d_model, cfg.vocab_size),
          pdt,
      )

  def __call__(self, tokens):
    # Used only by init: touches every parameter once.
    x = self.encode(tokens)
    return self.decode(x)

  def encode(self, tokens):
    x = jnp.take(self.embed, tokens, axis=0).astype(self.cfg.compute_dtype)
    return constrain(x, ("batch", "length", "embed"))

  def decode(self, x):
    cfg = self.cfg
    x = self.final_norm(x)
    if cfg.tie_embeddings:
      w = self.embed.astype(cfg.compute_dtype)
      logits = jnp.einsum(
          "btd,vd->btv", x, w, preferred_element_type=jnp.float32
      )
    else:
      logits = jnp.einsum(
          "btd,dv->btv",
          x,
          self.lm_head.astype(cfg.compute_dtype),
          preferred_element_type=jnp.float32,
      )
    return constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))


def _is_boxed(x) -> bool:
  return isinstance(x, nn.LogicallyPartitioned)


def _boxed_init(cfg: ModelConfig, rng: jax.Array) -> Params:
  """Initialises all params with their logical-axis boxes (layer axis not
  yet named)."""
  k_outer, k_layers = jax.random.split(rng)
  tok = jnp.zeros((1, 1), jnp.int32)
  outer = _Outer(cfg).init(k_outer, tok)["params"]
  x = jnp.zeros((1, 1, cfg.d_model), cfg.compute_dtype)
  mask = jnp.ones((1, 1, 1), jnp.bool_)
  pos = jnp.zeros((1, 1), jnp.int32)
  layer_keys = jax.random.split(k_layers, cfg.n_layers)
  layers = jax.vmap(
      lambda k: DecoderLayer(cfg).init(k, x, mask, pos)["params"]
  )(layer_keys)
  params = dict(outer)
  params["layers"] = layers
  return params


def init_params(cfg: ModelConfig, rng: jax.Array) -> Params:
  """Initialises the parameters (normal(0.02) weights, unit norm scales).

  Args:
    cfg: the model config.
    rng: a PRNG key.

  Returns:
    A nested dict of arrays: `embed` [V, d], `final_norm/scale` [d],
    optionally `lm_head` [d, V], and `layers/...` with a leading [n_layers]
    axis on every leaf. Jit it with `out_shardings` to create it sharded.
  """
  return nn.meta.unbox(_boxed_init(cfg, rng))


def param_logical_axes(cfg: ModelConfig) -> Params:
  """Logical axis names of every parameter (no allocation).

  Args:
    cfg: the model config.

  Returns:
    A pytree with the structure of `init_params(cfg, ...)` whose leaves are
    tuples of logical names (one per array axis); leaves under `layers` start
    with "layers". Map over it with `jax.tree.map(f, params, axes)` (params
    first: each tuple is passed whole).
  """
  boxed = jax.eval_shape(lambda: _boxed_init(cfg, jax.random.key(0)))
  outer = {k: v for k, v in boxed.items() if k != "layers"}
  names = jax.tree.map(lambda b: tuple(b.names), outer, is_leaf=_is_boxed)
  names["layers"] = jax.tree.map(
      lambda b: ("layers",) + tuple(b.names), boxed["layers"], is_leaf=_is_boxed
  )
  return names


def embed_tokens(cfg: ModelConfig, params: Params, tokens: jax.Array):
  """Token embeddings [B, T, d] in the compute dtype (`forward`'s first
  step; used by the cached decode path, `models.decode`)."""
  outer = {k: v for k, v in params.items() if k != "layers"}
  return _Outer(cfg).apply({"params": outer}, tokens, method=_Outer.encode)


def forward(
    cfg: ModelConfig,
    params: Params,
    tokens: jax.Array,
    positions: jax.Array,
    segment_ids: jax.Array,
    *,
    layer_transform: LayerTransform | None = None,
) -> jax.Array:
  """Logits of the decoder (pure; jit, vmap or grad it freely).

  Args:
    cfg: the model config.
    params: as returned by `init_params` (leaves may be any float dtype; they
      are cast to `cfg.dtype` for compute).
    tokens: int [B, T] token ids.
    positions: int [B, T] position of each token within its document.
    segment_ids: int [B, T] packed-document ids (0 = padding); attention never
      crosses documents.
    layer_transform: optional function applied, inside the layer scan, to each
      per-layer slice of `params["layers"]` before the layer runs; it must
      return one layer's params (e.g. a K -> 1 merge of component-stacked
      layers of shape [L, K, ...]).

  Returns:
    float32 logits [B, T, vocab_size].
  """
  x = forward_hidden(
      cfg,
      params,
      tokens,
      positions,
      segment_ids,
      layer_transform=layer_transform,
  )
  return lm_head(cfg, params, x)


def lm_head(cfg: ModelConfig, params: Params, x: jax.Array) -> jax.Array:
  """Final norm and LM head of `forward`: hidden [B, T, d] -> float32 logits
  [B, T, V] (the chunked losses call it on a few positions at a time)."""
  outer_params = {k: v for k, v in params.items() if k != "layers"}
  # Without `mutable`, apply returns the method's value alone (flax's
  # annotation also covers the (value, variables) pair of mutable calls).
  return cast(
      jax.Array,
      _Outer(cfg).apply({"params": outer_params}, x, method=_Outer.decode),
  )


def forward_hidden(
    cfg: ModelConfig,
    params: Params,
    tokens: jax.Array,
    positions: jax.Array,
    segment_ids: jax.Array,
    *,
    layer_transform: LayerTransform | None = None,
) -> jax.Array:
  """`forward` up to the last layer: hidden states [B, T, d] before the
  final norm and LM head (`lm_head`), for the chunked losses."""
  outer_params = {k: v for k, v in params.items() if k != "layers"}
  outer = _Outer(cfg)
  # Not mutable: apply returns the method's value alone (see lm_head).
  x = cast(
      jax.Array,
      outer.apply({"params": outer_params}, tokens, method=_Outer.encode),
  )
  mask: jax.Array | attention_lib.Segments
  if attention_lib.resolve(cfg.attention) == "xla":
    mask = attention_mask(segment_ids)
  else:
    mask = attention_lib.Segments(segment_ids)
  layer = DecoderLayer(cfg)

  def body(h, layer_params):
    if layer_transform is not None:
      layer_params = layer_transform(layer_params)
    return layer.apply({"params": layer_params}, h, mask, positions), None

  body = memory.remat_layer(body, cfg.remat)
  x, _ = jax.lax.scan(body, x, params["layers"])
  return x
