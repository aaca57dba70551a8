"""Autoregressive decoding with a KV cache, on the model of `transformer`.

No second model: the layers are `transformer.DecoderLayer` with its
optional `kv_cache` argument, embedding and head are `embed_tokens` and
`lm_head`, and the same params pytree drives both paths (so a
merged params pytree decodes as it scores).

Layout. Prompts are LEFT-padded to a common length P and the cache has
S = P + max_new_tokens slots per row. Left padding puts every row's last
prompt token at slot P - 1 and its i-th generated token at slot P + i, so
a whole batch writes one cache slot per step at one scalar index (a single
`dynamic_update_slice`, fixed shapes, no per-row scatter), and the
next-token logits of every row after the prefill are at the same slot.
Padding slots get segment id 0, real slots 1, and positions restart at 0
at each row's first real token: the cached attention mask (`key slot <=
query slot` and same segment) is exactly `transformer.attention_mask` of
the full left-padded sequence, so the cached decode computes what a full
re-forward of the padded sequence computes (tested token for token).

Everything here is a pure function of arrays, jittable at fixed shapes and
vmappable over a leading mixture axis of the params (`evals.generation`
merges once per mixture chunk, then decodes the chunk under `jax.vmap`).
The host drives `decode_steps` in chunks, checking stop strings between
chunks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from demix_jax.models import transformer

Params = Any


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DecodeState:
  """Decoding state of a batch of B rows (a pytree).

  Attributes:
    cache_k: [L, B, S, kv_heads, head_dim] keys of every slot.
    cache_v: [L, B, S, kv_heads, head_dim] values.
    segments: [B, S] int32, 0 = padding slot, 1 = real (prompt or generated).
    offsets: [B] int32, the row's padding length (position = slot - offset).
    index: int32 scalar, the next slot to write (P + steps taken).
    logits: [B, V] float32 logits of the next token.
    tokens: [B, max_new_tokens] int32 generated tokens (pad id after EOS).
    steps: int32 scalar, tokens generated so far.
    done: [B] bool, row finished (EOS, stop string, or padding row).
    keys: [B] PRNG keys of each row (sampling; step i uses fold_in(key, i)).
  """

  cache_k: jax.Array
  cache_v: jax.Array
  segments: jax.Array
  offsets: jax.Array
  index: jax.Array
  logits: jax.Array
  tokens: jax.Array
  steps: jax.Array
  done: jax.Array
  keys: jax.Array


@dataclasses.dataclass(frozen=True)
class Sampling:
  """How the next token is chosen (static under jit).

  Attributes:
    temperature: 0 = greedy argmax (ties: the lowest id); > 0 samples from
      softmax(logits / temperature).
    top_k: sample among the k most likely tokens only (0 = all).
    eos_id: a row is done after emitting this id.
    pad_id: written after a row is done.
  """

  temperature: float = 0.0
  top_k: int = 0
  eos_id: int = 1
  pad_id: int = 0


def forward_cached(
    cfg: transformer.ModelConfig,
    params: Params,
    tokens: jax.Array,
    positions: jax.Array,
    segments: jax.Array,
    cache: tuple[jax.Array, jax.Array],
    index: jax.Array,
    last_only: bool = False,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  """Runs tokens [B, t] that occupy cache slots index .. index + t - 1.

  Args:
    cfg: the model config.
    params: the model params (as `transformer.forward`).
    tokens: int [B, t].
    positions: int [B, t] RoPE positions of those tokens.
    segments: int [B, S] segment id of every cache slot.
    cache: (k, v), each [L, B, S, kv_heads, head_dim].
    index: int scalar, the first slot written.
    last_only: the logits of the last token only ([B, 1, V]: the prefill
      needs no others, and [B, t, V] float32 logits of a long prompt
      would dwarf the cache).

  Returns:
    (float32 logits [B, t, V] (t = 1 with last_only), the updated cache).
  """
  b, t = tokens.shape
  s = segments.shape[1]
  q_slot = index + jnp.arange(t)
  q_seg = jax.lax.dynamic_slice_in_dim(segments, index, t, axis=1)
  causal = jnp.arange(s)[None, :] <= q_slot[:, None]  # [t, S]
  mask = causal[None] & (segments[:, None, :] == q_seg[:, :, None])
  x = transformer.embed_tokens(cfg, params, tokens)
  layer = transformer.DecoderLayer(cfg)

  def body(h, xs):
    lp, ck, cv = xs
    h, (ck, cv) = layer.apply(
        {"params": lp}, h, mask, positions, (ck, cv), index
    )
    return h, (ck, cv)

  x, (k, v) = jax.lax.scan(body, x, (params["layers"], cache[0], cache[1]))
  if last_only:
    x = x[:, -1:]
  return transformer.lm_head(cfg, params, x), (k, v)


# The prefill runs the prompt this many tokens at a time (at most): the
# attention scores of a chunk are [B, heads, chunk, S] float32, so a
# 7168-token prompt in one piece would need 14x the memory.
PREFILL_CHUNK = 512


def prefill_chunk(p: int, most: int = PREFILL_CHUNK) -> int:
  """The largest divisor of the prompt length P that is <= `most`."""
  for c in range(min(p, most), 0, -1):
    if p % c == 0:
      return c
  return 1


def prefill(
    cfg: transformer.ModelConfig,
    params: Params,
    prompts: jax.Array,
    lengths: jax.Array,
    keys: jax.Array,
    max_new_tokens: int,
    chunk: int = 0,
) -> DecodeState:
  """Encodes left-padded prompts and returns the state before step 0.

  The prompt runs `chunk` tokens at a time (a scan over P / chunk pieces,
  each writing its slots of the cache and attending to the slots before
  it): the same attention and the same cache as one piece, with the
  scores of one chunk live at a time.

  Args:
    cfg: the model config.
    params: the model params.
    prompts: int [B, P], each row's tokens right-aligned (left padding).
    lengths: int [B] real prompt lengths, 1..P (0 marks a padding row: it
      is done from the start).
    keys: [B] PRNG keys (one per row).
    max_new_tokens: decode budget (static); the cache has P + it slots.
    chunk: prompt tokens per piece (static; must divide P); 0 =
      `prefill_chunk(P)`.

  Returns:
    The DecodeState.
  """
  b, p = prompts.shape
  s = p + max_new_tokens
  dt = cfg.compute_dtype
  shape = (cfg.n_layers, b, s, cfg.n_kv_heads, cfg.head_dim)
  cache = (jnp.zeros(shape, dt), jnp.zeros(shape, dt))
  offsets = (p - lengths).astype(jnp.int32)
  slots = jnp.arange(s)[None, :]
  segments = (slots >= offsets[:, None]).astype(jnp.int32)
  positions = jnp.maximum(jnp.arange(p)[None, :] - offsets[:, None], 0)
  c = chunk or prefill_chunk(p)
  if p % c:
    raise ValueError(f"prefill chunk {c} does not divide the prompt length {p}")

  def piece(carry, i):
    cache, _ = carry
    start = i * c
    logits, cache = forward_cached(
        cfg,
        params,
        jax.lax.dynamic_slice_in_dim(prompts, start, c, axis=1),
        jax.lax.dynamic_slice_in_dim(positions, start, c, axis=1),
        segments,
        cache,
        start,
        last_only=True,
    )
    return (cache, logits[:, 0]), None

  last = jnp.zeros((b, cfg.vocab_size), jnp.float32)
  (cache, last), _ = jax.lax.scan(
      piece, (cache, last), jnp.arange(p // c, dtype=jnp.int32)
  )
  return DecodeState(
      cache_k=cache[0],
      cache_v=cache[1],
      segments=segments,
      offsets=offsets,
      index=jnp.int32(p),
      logits=last,
      tokens=jnp.zeros((b, max_new_tokens), jnp.int32),
      steps=jnp.int32(0),
      done=lengths <= 0,
      keys=keys,
  )


def choose(
    logits: jax.Array, keys: jax.Array, step: jax.Array, sampling: Sampling
) -> jax.Array:
  """Next token per row: argmax, or a seeded sample (see `Sampling`)."""
  if sampling.temperature <= 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  z = logits / sampling.temperature
  if sampling.top_k:
    kth = jax.lax.top_k(z, sampling.top_k)[0][:, -1:]
    z = jnp.where(z < kth, -jnp.inf, z)
  step_keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)
  return jax.vmap(jax.random.categorical)(step_keys, z).astype(jnp.int32)


def decode_steps(
    cfg: transformer.ModelConfig,
    params: Params,
    state: DecodeState,
    n_steps: int,
    sampling: Sampling = Sampling(),
) -> DecodeState:
  """Generates up to `n_steps` more tokens (fewer if every row is done or
  the budget is spent).

  Args:
    cfg: the model config.
    params: the model params (those of the prefill).
    state: from `prefill` or a previous call.
    n_steps: most tokens to add (static).
    sampling: the sampling rule (static).

  Returns:
    The advanced state.
  """
  budget = state.tokens.shape[1]
  stop_at = jnp.minimum(state.steps + n_steps, budget)

  def cond(st):
    return (st.steps < stop_at) & ~jnp.all(st.done)

  def body(st):
    tok = choose(st.logits, st.keys, st.steps, sampling)
    tok = jnp.where(st.done, sampling.pad_id, tok)
    tokens = jax.lax.dynamic_update_slice_in_dim(
        st.tokens, tok[:, None], st.steps, axis=1
    )
    done = st.done | (tok == sampling.eos_id)
    pos = (st.index - st.offsets)[:, None]
    logits, (k, v) = forward_cached(
        cfg,
        params,
        tok[:, None],
        pos,
        st.segments,
        (st.cache_k, st.cache_v),
        st.index,
    )
    return dataclasses.replace(
        st,
        cache_k=k,
        cache_v=v,
        index=st.index + 1,
        logits=logits[:, 0],
        tokens=tokens,
        steps=st.steps + 1,
        done=done,
    )

  return jax.lax.while_loop(cond, body, state)
