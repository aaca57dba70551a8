"""Per-token and per-row NLL sums of the evaluator's row batches.

What `merging.engine` computes for every row batch, apart so each piece can
be tested on its own: the masked per-token NLL (from full logits, or with
the LM head in chunks so no [B, T, V] logits exist), its sum per row
(unpacked rows), or per slot of a packed row and then per logical row
(`evals.rows.PackedRows`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from demix_jax.models import loss as loss_lib


def token_nll(
    logits: jax.Array, tokens: jax.Array, target_mask: jax.Array
) -> jax.Array:
  """NLL (nats) of tokens 1..T-1, 0 where not scored: float32 [B, T-1].

  Args:
    logits: [B, T, V]; position t predicts token t+1.
    tokens: int [B, T].
    target_mask: [B, T]; 1 where token t is scored.
  """
  lg = logits[:, :-1].astype(jnp.float32)
  lse = jax.nn.logsumexp(lg, axis=-1)
  picked = jnp.take_along_axis(lg, tokens[:, 1:, None], axis=-1)[..., 0]
  return (lse - picked) * target_mask[:, 1:]


def row_nll(
    logits: jax.Array, tokens: jax.Array, target_mask: jax.Array
) -> jax.Array:
  """Summed NLL (nats) of each row's scored tokens: float32 [B]
  (arguments as `token_nll`)."""
  return jnp.sum(token_nll(logits, tokens, target_mask), axis=-1)


def shift_left(x: jax.Array) -> jax.Array:
  """x[:, t + 1] at t, 0 at the end: position t's view of its target."""
  return jnp.concatenate([x[:, 1:], jnp.zeros_like(x[:, :1])], 1)


def chunked_token_nll(cfg, params, layer_transform, b) -> jax.Array:
  """[B, T] masked NLL of the model on batch `b`; entry t is token t+1's
  (0 at the end). The LM head runs in `cfg.loss_chunk`-position chunks, so
  no [B, T, V] logits exist (equal to `token_nll` to float32 rounding)."""
  nll = loss_lib.target_nll(
      cfg,
      params,
      b["tokens"],
      b["positions"],
      b["segment_ids"],
      shift_left(b["tokens"]),
      layer_transform=layer_transform,
  )
  return nll * shift_left(b["target_mask"]).astype(jnp.float32)


def chunked_row_nll(cfg, params, layer_transform, b) -> jax.Array:
  """`row_nll` of the model on batch `b`, the LM head run in chunks."""
  return jnp.sum(chunked_token_nll(cfg, params, layer_transform, b), axis=-1)


# Slots summed per pass of `slot_sums`: its temporary is [B, 8, T] float32.
SLOT_BLOCK = 8


def slot_sums(
    values: jax.Array, slot_ids: jax.Array, slots: jax.Array
) -> jax.Array:
  """[B, S] sums of `values` [B, T] over the tokens of each slot.

  Decision: compare-and-select reductions, `SLOT_BLOCK` slots per pass
  (a `lax.map` over blocks), rather than a scatter-add (`segment_sum`):
  the summation order is fixed (a GPU scatter-add's is not, so repeated
  evaluations could differ in the last bits), and the temporary stays
  [B, SLOT_BLOCK, T] (XLA:CPU materialises the whole [B, S, T] select of a
  single pass: 64 MiB at B = 8, S = 256, T = 8192). The work, S x B x T
  selects, is small next to the forward.

  Args:
    values: [B, T] masked per-token NLL.
    slot_ids: int [B, T] slot of each token.
    slots: int [S], 0..S-1 (its length is the slot count).
  """
  n = slots.shape[0]
  blk = min(SLOT_BLOCK, n)
  n_blocks = -(-n // blk)

  def block(first):
    ids = first + jnp.arange(blk, dtype=slot_ids.dtype)
    hit = slot_ids[:, None, :] == ids[None, :, None]
    return jnp.sum(jnp.where(hit, values[:, None, :], 0.0), axis=-1)

  if n_blocks == 1:
    return block(0)
  firsts = jnp.arange(n_blocks, dtype=slot_ids.dtype) * blk
  out = jax.lax.map(block, firsts)  # [n_blocks, B, blk]
  b = values.shape[0]
  return jnp.moveaxis(out, 0, 1).reshape(b, n_blocks * blk)[:, :n]


def pair_sums(per_slot: jax.Array, pair_slot: jax.Array) -> jax.Array:
  """[R] logical-row sums from the flat per-slot sums (0 where -1)."""
  got = per_slot[jnp.maximum(pair_slot, 0)]
  return jnp.where(pair_slot >= 0, got, 0.0)
