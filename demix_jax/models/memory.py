"""Memory at scale: remat policies and chunked next-token losses.

Remat (`ModelConfig.remat`) names what each scanned layer keeps for the
backward pass, using MaxText's names where they exist:

  none                  keep everything (no rematerialisation; the default)
  full                  keep only the layer input; recompute the whole layer
  minimal               keep matmul outputs without batch dimensions
                        (`checkpoint_dots_with_no_batch_dims`)
  save_dots             keep every matmul output (`checkpoint_dots`)
  save_qkv_proj         keep the attention's query/key/value
  minimal_with_context  `minimal` plus the attention output ("context")
  save_out_proj         keep the attention output only

(True and False, the old boolean field, mean "full" and "none".)

Chunked losses (`ModelConfig.loss_chunk` = C > 0): the LM head and the
log-softmax run over C positions at a time inside a rematerialised scan, so
the float32 logits live as [B, C, V] and never as [B, T, V], in the forward
and the backward pass. C = 0 (the default) is the unchunked computation,
bit for bit; a chunked sum rounds differently (same value to float32
rounding).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

REMAT_POLICIES = (
    "none",
    "full",
    "minimal",
    "save_dots",
    "save_qkv_proj",
    "minimal_with_context",
    "save_out_proj",
)
QKV_NAMES = ("query_proj", "key_proj", "value_proj")
CONTEXT = "context"


def remat_name(remat) -> str:
  """The policy name of a `remat` field value (bools are the old field)."""
  if remat is True:
    return "full"
  if remat is False or remat is None:
    return "none"
  if remat not in REMAT_POLICIES:
    raise ValueError(
        f"model.remat={remat!r}; use one of {list(REMAT_POLICIES)}"
    )
  return remat


def remat_layer(body: Callable, remat) -> Callable:
  """`body` wrapped in jax.checkpoint with the named policy (or as is)."""
  name = remat_name(remat)
  if name == "none":
    return body
  cp = jax.checkpoint_policies
  policy = {
      "full": None,
      "minimal": cp.checkpoint_dots_with_no_batch_dims,
      "save_dots": cp.checkpoint_dots,
      "save_qkv_proj": cp.save_only_these_names(*QKV_NAMES),
      "minimal_with_context": cp.save_from_both_policies(
          cp.checkpoint_dots_with_no_batch_dims,
          cp.save_only_these_names(CONTEXT),
      ),
      "save_out_proj": cp.save_only_these_names(CONTEXT),
  }[name]
  return jax.checkpoint(body, prevent_cse=False, policy=policy)


def _chunks(x: jax.Array, c: int) -> jax.Array:
  """[B, T, ...] -> [T / c, B, c, ...] (T padded up to a multiple of c)."""
  b, t = x.shape[:2]
  n = -(-t // c)
  pad = [(0, 0), (0, n * c - t)] + [(0, 0)] * (x.ndim - 2)
  x = jnp.pad(x, pad)
  return jnp.swapaxes(x.reshape((b, n, c) + x.shape[2:]), 0, 1)


def chunked_target_nll(
    to_logits: Callable[[jax.Array], jax.Array],
    hidden: jax.Array,
    targets: jax.Array,
    chunk: int,
) -> jax.Array:
  """-log p(targets) per position, C positions at a time.

  Args:
    to_logits: hidden [B, C, d] -> float32 logits [B, C, V] (final norm and
      LM head).
    hidden: [B, T, d] the decoder's last hidden states.
    targets: int [B, T] the token each position predicts.
    chunk: C, positions per chunk.

  Returns:
    float32 [B, T]: logsumexp(logits) - logits[target].
  """
  t = hidden.shape[1]

  @jax.checkpoint
  def one(h, y):
    lg = to_logits(h).astype(jnp.float32)
    lse = jax.nn.logsumexp(lg, axis=-1)
    picked = jnp.take_along_axis(lg, y[..., None], axis=-1)[..., 0]
    return lse - picked

  out = jax.lax.map(
      lambda a: one(*a), (_chunks(hidden, chunk), _chunks(targets, chunk))
  )
  b = hidden.shape[0]
  return jnp.swapaxes(out, 0, 1).reshape(b, -1)[:, :t]
