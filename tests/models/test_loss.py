"""Tests of the packed next-token loss."""

import jax
import numpy as np

from demix_jax import models


def test_next_token_nll_matches_manual():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 6, 5)).astype(np.float32)
  tokens = rng.integers(0, 5, size=(2, 6)).astype(np.int32)
  segs = np.array([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]], np.int32)
  nll, mask = models.next_token_nll(logits, tokens, segs)
  want_mask = np.array([[1, 1, 0, 1, 0, 0], [1, 1, 1, 1, 1, 0]], np.float32)
  np.testing.assert_array_equal(np.asarray(mask), want_mask)
  logp = np.asarray(jax.nn.log_softmax(logits, axis=-1))
  for b in range(2):
    for t in range(6):
      want = -logp[b, t, tokens[b, (t + 1) % 6]] * want_mask[b, t]
      np.testing.assert_allclose(float(nll[b, t]), want, atol=1e-6)
