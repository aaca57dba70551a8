"""A deterministic, resumable synthetic batch iterator (tests, benchmarks).

Batches follow the interfaces contract (`tokens`, `segment_ids`,
`positions`, int32 [B_host, T]) and are a pure function of (seed, process,
batch index), so `get_state`/`set_state` need only the index. Documents are
noisy arithmetic progressions modulo the vocabulary, which a small model
learns quickly (the loss falls), and are packed with padding at the end.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class SyntheticIterator:
  """Infinite iterator of packed synthetic batches.

  Args:
    batch_size: sequences per batch on this host.
    seq_len: tokens per sequence.
    vocab_size: token ids are in [2, vocab_size).
    seed: base seed.
    process_index: this host's index (hosts see different data).
    with_bytes: also emit `num_bytes` [B] (a fake byte count per sequence:
      2 bytes per predicted token), as evaluation batches may.
  """

  def __init__(
      self,
      batch_size: int,
      seq_len: int,
      vocab_size: int,
      seed: int = 0,
      process_index: int = 0,
      with_bytes: bool = False,
  ):
    self.batch_size = batch_size
    self.seq_len = seq_len
    self.vocab_size = vocab_size
    self.seed = seed
    self.process_index = process_index
    self.with_bytes = with_bytes
    self._index = 0

  def __iter__(self):
    return self

  def _batch(self, index: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, self.process_index, index])
    b, t, v = self.batch_size, self.seq_len, self.vocab_size
    tokens = np.zeros((b, t), np.int32)
    segs = np.zeros((b, t), np.int32)
    pos = np.zeros((b, t), np.int32)
    for row in range(b):
      start, seg = 0, 1
      while start < t - 2:
        n = int(rng.integers(t // 4, t // 2 + 1))
        n = min(n, t - start)
        if rng.random() < 0.15 and start > 0:
          break  # leave some padding at the end
        first, step = rng.integers(2, v), rng.integers(1, 4)
        doc = (first - 2 + step * np.arange(n)) % (v - 2) + 2
        noise = rng.random(n) < 0.05
        doc[noise] = rng.integers(2, v, size=int(noise.sum()))
        doc[-1] = 1  # EOS
        tokens[row, start : start + n] = doc
        segs[row, start : start + n] = seg
        pos[row, start : start + n] = np.arange(n)
        start += n
        seg += 1
    out = {"tokens": tokens, "segment_ids": segs, "positions": pos}
    if self.with_bytes:
      nxt = np.concatenate([segs[:, 1:], np.zeros((b, 1), np.int32)], 1)
      pairs = ((segs == nxt) & (segs != 0)).sum(axis=1)
      out["num_bytes"] = (2 * pairs).astype(np.int64)
    return out

  def __next__(self) -> dict[str, np.ndarray]:
    batch = self._batch(self._index)
    self._index += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"index": self._index, "seed": self.seed}

  def set_state(self, state: dict[str, Any]) -> None:
    if state.get("seed", self.seed) != self.seed:
      raise ValueError(
          f"iterator state is for seed {state['seed']}, this "
          f"iterator has seed {self.seed}"
      )
    self._index = int(state["index"])
