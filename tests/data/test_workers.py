"""Grain with worker processes (worker_count > 0), as the paper config uses.

Measured here: with 2 workers the stream is not the in-process one (each
worker reads its own slice of every source), so `data.worker_count` changes
what a run trains on and is part of the training stages' result hash
(each stage record's `hashed`). What must hold: batches keep their format and
packing, the iterator state is a small JSON-safe dict, and restoring it in
a fresh loader with the same worker count continues the stream exactly;
restoring it with another worker count fails loudly instead of silently
reading other data.
"""

import json

import numpy as np
import pytest

from demix_jax.data import pipeline
from demix_jax.stages import registry

T = 64
W3 = {"general": 0.5, "math": 0.3, "code": 0.2}


def _iter(srcs, vocab, workers):
  return pipeline.make_train_iterator(
      srcs, W3, vocab, T, 8, 0, worker_count=workers
  )


def _take(it, n):
  return [next(it) for _ in range(n)]


def _same(a, b):
  return len(a) == len(b) and all(
      np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x
  )


def test_worker_stream_resumes_exactly(offline_sources, vocab):
  it = _iter(offline_sources, vocab, 2)
  first = _take(it, 7)
  for b in first:
    assert set(b) == {"tokens", "segment_ids", "positions"}
    assert b["tokens"].shape == (8, T) and b["tokens"].dtype == np.int32
    assert (b["segment_ids"] > 0).all()  # rows are full, as inline
  # Like a checkpoint: the state goes through JSON.
  state = json.loads(json.dumps(it.get_state()))
  expected = _take(it, 5)
  fresh = _iter(offline_sources, vocab, 2)
  fresh.set_state(state)
  assert _same(_take(fresh, 5), expected)
  # Not the in-process stream: hence data.worker_count is hashed.
  inline = _take(_iter(offline_sources, vocab, 0), 7)
  assert not _same(inline, first)
  for stage in ("base", "components", "search", "final"):
    assert "data.worker_count" in registry.get(stage).hashed
  # Another worker count cannot take this state.
  other = _iter(offline_sources, vocab, 0)
  with pytest.raises((KeyError, IndexError, ValueError)):
    other.set_state(state)
