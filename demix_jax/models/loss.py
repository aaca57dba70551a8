"""Next-token loss over packed sequences.

Token t predicts token t+1 only inside one document: the pair counts when
`segment_ids[t] == segment_ids[t+1] != 0`. The last position of a row and
every position before a document boundary or padding are masked out.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


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
