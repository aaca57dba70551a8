"""Next-token loss over packed sequences.

Token t predicts token t+1 only inside one document: the pair counts when
`segment_ids[t] == segment_ids[t+1] != 0`. The last position of a row and
every position before a document boundary or padding are masked out.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from demix_jax.models import memory
from demix_jax.models import transformer


def next_token_nll(
    logits: jax.Array, tokens: jax.Array, segment_ids: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Per-position negative log-likelihood of the next token.

  Args:
    logits: float [B, T, V] (computed in float32 here).
    tokens: int [B, T] token ids.
    segment_ids: int [B, T] packed-document ids, 0 = padding.

  Returns:
    (nll, mask): float32 [B, T] each. `nll[b, t]` is -log p(tokens[b, t+1])
    from position t (0 where the mask is 0); `mask[b, t]` is 1.0 where the
    pair (t, t+1) lies inside one document. Mean loss:
    `(nll * mask).sum() / mask.sum()`.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  targets = jnp.concatenate(
      [tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1
  )
  next_seg = jnp.concatenate(
      [segment_ids[:, 1:], jnp.zeros_like(segment_ids[:, :1])], axis=1
  )
  mask = jnp.logical_and(segment_ids == next_seg, segment_ids != 0)
  mask = mask.astype(jnp.float32)
  picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  return -picked * mask, mask


def next_targets(
    tokens: jax.Array, segment_ids: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """(targets, mask) [B, T]: the token each position predicts and whether
  the pair lies inside one document (as in `next_token_nll`)."""
  targets = jnp.concatenate(
      [tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1
  )
  next_seg = jnp.concatenate(
      [segment_ids[:, 1:], jnp.zeros_like(segment_ids[:, :1])], axis=1
  )
  mask = jnp.logical_and(segment_ids == next_seg, segment_ids != 0)
  return targets, mask.astype(jnp.float32)


def target_nll(
    cfg: transformer.ModelConfig,
    params,
    tokens: jax.Array,
    positions: jax.Array,
    segment_ids: jax.Array,
    targets: jax.Array,
    *,
    layer_transform=None,
) -> jax.Array:
  """-log p(targets[b, t]) from position t, float32 [B, T], unmasked.

  With `cfg.loss_chunk` = C > 0 the LM head and log-softmax run C positions
  at a time (`memory.chunked_target_nll`), so [B, T, V] float32 logits are
  never formed; with 0, the full logits (`forward`).
  """
  if not cfg.loss_chunk:
    logits = transformer.forward(
        cfg,
        params,
        tokens,
        positions,
        segment_ids,
        layer_transform=layer_transform,
    )
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  hidden = transformer.forward_hidden(
      cfg,
      params,
      tokens,
      positions,
      segment_ids,
      layer_transform=layer_transform,
  )
  return memory.chunked_target_nll(
      lambda h: transformer.lm_head(cfg, params, h),
      hidden,
      targets,
      cfg.loss_chunk,
  )


def batch_nll(
    cfg: transformer.ModelConfig,
    params,
    tokens: jax.Array,
    positions: jax.Array,
    segment_ids: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """(nll, mask) of `next_token_nll` straight from the model.

  Unchunked (`cfg.loss_chunk` = 0) it is `next_token_nll(forward(...))`
  exactly; chunked, the same values to float32 rounding, without [B, T, V]
  logits.
  """
  if not cfg.loss_chunk:
    logits = transformer.forward(cfg, params, tokens, positions, segment_ids)
    return next_token_nll(logits, tokens, segment_ids)
  targets, mask = next_targets(tokens, segment_ids)
  nll = target_nll(cfg, params, tokens, positions, segment_ids, targets)
  return nll * mask, mask
