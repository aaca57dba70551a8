"""Multi-host reading: each host reads its own shard, together all of it.

For hosts h in range(2) (process_count=2) the training iterator of each host
is read for one epoch of its shard; the documents are recovered from the
packed rows (split at EOS) and compared by content hash with the source's
documents and with the single-host stream.
"""

import collections
import hashlib

import numpy as np
import pytest

from demix_jax.data import pipeline

T = 64
GLOBAL_BATCH = 8
EOS = 1


def _hash(ids) -> str:
  return hashlib.sha256(np.asarray(ids, np.int32).tobytes()).hexdigest()


def _epoch(src, vocab, name, process_index, process_count):
  """(document hashes, row hashes) of this host's first epoch."""
  n_docs = len(src.docs("train")[process_index::process_count])
  it = pipeline.make_train_iterator(
      {name: src},
      {name: 1.0},
      vocab,
      T,
      GLOBAL_BATCH,
      seed=3,
      process_index=process_index,
      process_count=process_count,
      prefetch=0,
  )
  docs, rows, current = [], [], []
  while len(docs) < n_docs:
    batch = next(it)
    assert batch["tokens"].shape == (GLOBAL_BATCH // process_count, T)
    for r in range(batch["tokens"].shape[0]):
      row = batch["tokens"][r]
      assert np.all(batch["segment_ids"][r] > 0)  # rows are always full
      if len(docs) < n_docs:
        rows.append(_hash(row))
      for tok in row.tolist():
        current.append(tok)
        if tok == EOS:
          if len(docs) < n_docs:
            docs.append(_hash(current[:-1]))
          current = []
  return docs, rows


@pytest.mark.parametrize("name", ["general", "math", "code"])
def test_union_over_hosts_is_the_single_host_stream(
    offline_sources, vocab, name
):
  src = offline_sources[name]
  every_doc = collections.Counter(
      _hash(vocab.encode(d)) for d in src.docs("train")
  )
  single_docs, _ = _epoch(src, vocab, name, 0, 1)
  per_host = [_epoch(src, vocab, name, h, 2) for h in range(2)]

  # One epoch of one host reads every document exactly once.
  assert collections.Counter(single_docs) == every_doc
  # Two hosts: each reads its shard once; together exactly the same
  # documents as the single-host stream, none on both hosts.
  union = collections.Counter()
  for docs, _ in per_host:
    union.update(docs)
  assert union == collections.Counter(single_docs)
  # Each host reads exactly its shard (documents h, h + 2, ...). Compared
  # as multisets: some corpora repeat a document verbatim, and such a pair
  # may legitimately land on both hosts.
  docs = src.docs("train")
  for h, (got, _) in enumerate(per_host):
    want = collections.Counter(
        _hash(vocab.encode(docs[i])) for i in range(h, len(docs), 2)
    )
    assert collections.Counter(got) == want
    assert got
  # No packed sequence is read by both hosts (checked where the corpus has
  # no verbatim repeats, which can pack into identical rows on two hosts).
  if max(every_doc.values()) == 1:
    assert not set(per_host[0][1]) & set(per_host[1][1])


def test_hosts_get_disjoint_first_batches_of_a_mixture(offline_sources, vocab):
  weights = {"general": 0.5, "math": 0.3, "code": 0.2}
  batches = [
      next(
          pipeline.make_train_iterator(
              offline_sources,
              weights,
              vocab,
              T,
              GLOBAL_BATCH,
              seed=3,
              process_index=h,
              process_count=2,
              prefetch=0,
          )
      )
      for h in range(2)
  ]
  rows = [{_hash(r) for r in b["tokens"]} for b in batches]
  assert len(rows[0]) == len(rows[1]) == GLOBAL_BATCH // 2
  assert not rows[0] & rows[1]
