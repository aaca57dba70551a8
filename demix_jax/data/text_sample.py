"""Seeded samples of documents for tokenizer training, read as streams.

`sample_texts(texts, max_chars, seed, sampler)` picks whole documents
totalling about max_chars characters:

* "stream" (`stream_sample`): one pass over any iterable; each document's
  key is a hash of its text and the seed, and the sample is the documents
  of smallest key, the prefix of a seeded random order of the whole
  stream. Only the sample is held, so memory does not grow with the corpus,
  and the result does not depend on the order of the documents.
* "shuffle" (`shuffle_sample`): a seeded permutation of a random-access
  sequence's indices (one index per document in memory), the sampler
  demix_jax used first; the demo keeps it so its tokenizer, and the numbers
  measured with it, are reproduced exactly.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from typing import Iterable, Sequence

# "stream": a seeded hash sample over one pass of any iterable of documents
# (memory bounded by the sample). "shuffle": a seeded permutation of the
# document indices of a random-access sequence (one index per document in
# memory); kept so tokenizers trained before "stream" existed, and the
# numbers measured with them, are reproduced exactly.
TEXT_SAMPLERS = ("stream", "shuffle")


def _doc_key(text: str, seed: int) -> int:
  h = hashlib.blake2b(f"{seed}\0".encode(), digest_size=8)
  h.update(text.encode("utf-8", "surrogatepass"))
  return int.from_bytes(h.digest(), "little")


def stream_sample(texts: Iterable[str], max_chars: int, seed: int) -> list[str]:
  """A seeded sample of about max_chars characters from one pass of texts.

  Every document gets a key, a hash of its text and the seed; the sample is
  the documents of smallest key until max_chars is reached (the last one
  cut), i.e. the prefix of a seeded random order of the whole stream. Only
  the current sample is held (a heap), so memory is bounded by max_chars
  plus one document, whatever the stream's length; the result depends on
  the documents and the seed, not on their order.

  Returns:
    The chosen texts, in key order.
  """
  heap: list[tuple[int, int, str]] = []  # (-key, -position, text)
  total = 0
  for n, t in enumerate(texts):
    if not t:
      continue
    key = -_doc_key(t, seed)  # heapq is a min-heap: the top = largest key
    if total >= max_chars and heap and key < heap[0][0]:
      continue  # larger key than everything kept, and the sample is full
    heapq.heappush(heap, (key, -n, t))
    total += len(t)
    while heap and total - len(heap[0][2]) >= max_chars:
      total -= len(heapq.heappop(heap)[2])
  chosen = [t for *_, t in sorted(heap, reverse=True)]
  out, total = [], 0
  for t in chosen:
    t = t[: max_chars - total]
    out.append(t)
    total += len(t)
  return out


def shuffle_sample(
    texts: Iterable[str], max_chars: int, seed: int
) -> list[str]:
  """The "shuffle" sampler: texts in a seeded permutation of their indices,
  until max_chars (the last cut). Needs a random-access sequence."""
  if not isinstance(texts, Sequence):
    raise ValueError(
        "data.tokenizer.sampler='shuffle' needs a random-access source, "
        f"got a {type(texts).__name__}. Fix: use sampler='stream'"
    )
  order = list(range(len(texts)))
  random.Random(seed).shuffle(order)
  out, total = [], 0
  for i in order:
    if total >= max_chars:
      break
    t = texts[i][: max_chars - total]
    out.append(t)
    total += len(t)
  return out


def sample_texts(
    texts: Iterable[str], max_chars: int, seed: int, sampler: str = "stream"
) -> list[str]:
  """A seeded sample of whole texts totalling about max_chars characters.

  Args:
    texts: the documents (any iterable for "stream"; a sequence for
      "shuffle").
    max_chars: stop once this many characters are collected.
    seed: the sampling seed.
    sampler: "stream" (`stream_sample`) or "shuffle" (`shuffle_sample`).

  Returns:
    The chosen texts.
  """
  if sampler == "stream":
    return stream_sample(texts, max_chars, seed)
  if sampler == "shuffle":
    return shuffle_sample(texts, max_chars, seed)
  raise ValueError(
      f"data.tokenizer.sampler={sampler!r} is not one of {TEXT_SAMPLERS}. "
      f"Fix: use one of {TEXT_SAMPLERS}"
  )
