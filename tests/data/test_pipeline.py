"""Tests of the Grain pipeline: packing, mixing, determinism, resume."""

import collections
import json

import grain
import numpy as np
import pytest

from demix_jax.data import pipeline

T = 64
W3 = {"general": 0.5, "math": 0.3, "code": 0.2}


def _iter(srcs, vocab, weights=W3, batch=8, seed=0, **kw):
  return pipeline.make_train_iterator(
      srcs, weights, vocab, T, batch, seed, **kw
  )


def _take(it, n):
  return [next(it) for _ in range(n)]


def _same(a, b):
  return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_batch_format(offline_sources, vocab):
  b = next(_iter(offline_sources, vocab, batch=8, process_count=2))
  assert set(b) == {"tokens", "segment_ids", "positions"}
  for v in b.values():
    assert v.shape == (4, T) and v.dtype == np.int32


def test_rebuild_gives_same_batches(offline_sources, vocab):
  a = _take(_iter(offline_sources, vocab), 6)
  b = _take(_iter(offline_sources, vocab, prefetch=0), 6)
  assert _same(a, b)
  c = _take(_iter(offline_sources, vocab, seed=1), 6)
  assert not _same(a, c)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_resume_from_state(offline_sources, vocab, prefetch):
  it = _iter(offline_sources, vocab, prefetch=prefetch)
  _take(it, 7)
  state = json.loads(json.dumps(it.get_state()))  # survives a JSON file
  expected = _take(it, 5)
  fresh = _iter(offline_sources, vocab, prefetch=prefetch)
  fresh.set_state(state)
  assert _same(_take(fresh, 5), expected)


def test_packing_invariants(offline_sources, vocab):
  eos = vocab.eos_id
  for b in _take(_iter(offline_sources, vocab), 20):
    tok, seg, pos = b["tokens"], b["segment_ids"], b["positions"]
    assert (seg > 0).all()  # training rows are full: no padding
    for r in range(tok.shape[0]):
      starts = np.flatnonzero(np.diff(seg[r]) != 0) + 1
      assert seg[r, 0] == 1
      assert (np.diff(seg[r]) >= 0).all() and (np.diff(seg[r]) <= 1).all()
      bounds = [0, *starts, T]
      for i, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
        np.testing.assert_array_equal(pos[r, s:e], np.arange(e - s))
        # EOS only closes a document; every segment but a row's last is a
        # whole document tail, so it ends with EOS.
        assert eos not in tok[r, s : e - 1]
        if i < len(bounds) - 2:
          assert tok[r, e - 1] == eos


def _stream_docs(rows, vocab):
  """Splits the concatenated rows of one source at EOS into texts."""
  stream = np.concatenate([r for r in rows])
  cut = np.flatnonzero(stream == vocab.eos_id)
  docs, start = [], 0
  for c in cut:
    docs.append(vocab.decode(stream[start:c]))
    start = c + 1
  return docs


def _rows(it, n):
  return [row for b in _take(it, n) for row in b["tokens"]]


def test_nothing_dropped_and_hosts_disjoint(offline_sources, vocab):
  src = offline_sources["math"]
  all_docs = collections.Counter(src.docs("train"))
  n_tokens = src.token_count(vocab, "train")
  n_batches = n_tokens // (8 * T) + 4
  got = _stream_docs(
      _rows(_iter({"math": src}, vocab, {"math": 1.0}), n_batches), vocab
  )
  # The first epoch is a permutation of all documents, none cut or lost.
  assert collections.Counter(got[: len(src.docs("train"))]) == all_docs
  per_host = []
  for host in range(2):
    it = _iter(
        {"math": src}, vocab, {"math": 1.0}, process_index=host, process_count=2
    )
    # Each host gets half the rows per batch and half the documents.
    docs = _stream_docs(_rows(it, n_batches), vocab)
    per_host.append(collections.Counter(docs[: len(all_docs) // 2]))
  assert not set(per_host[0]) & set(per_host[1])
  assert per_host[0] + per_host[1] == all_docs


def test_three_source_token_proportions(offline_sources, vocab):
  """Row-exact attribution of mixed rows to the per-source streams."""
  batch, n_rows = 16, 3200
  mixed = _rows(_iter(offline_sources, vocab, batch=batch), n_rows // batch)
  streams = {
      n: iter(
          pipeline.packed_source_dataset(
              offline_sources[n].docs("train"),
              vocab,
              T,
              pipeline.source_seed(0, n),
              name=n,
          )
      )
      for n in W3
  }
  heads = {n: next(s)["tokens"] for n, s in streams.items()}
  tokens = collections.Counter()
  for row in mixed:
    match = [n for n, h in heads.items() if np.array_equal(h, row)]
    assert match, "a mixed row is not the next row of any source"
    tokens[match[0]] += int(row.size)
    heads[match[0]] = next(streams[match[0]])["tokens"]
  total = sum(tokens.values())
  for n, w in W3.items():
    assert abs(tokens[n] / total - w) < 0.01, (n, tokens[n] / total)


def _labelled(name):
  inline = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
  return grain.MapDataset.source([name]).repeat().to_iter_dataset(inline)


def test_tiny_weight_is_honoured_and_exact():
  w = {"big": 0.9999, "tiny": 1e-4}
  it = iter(pipeline.MixIterDataset({n: _labelled(n) for n in w}, w))
  counts = collections.Counter(next(it) for _ in range(30_000))
  assert counts["tiny"] == 3
  w = {"a": 0.34, "b": 0.33, "c": 0.33}
  it = iter(pipeline.MixIterDataset({n: _labelled(n) for n in w}, w))
  counts = collections.Counter()
  for step in range(1, 2001):
    counts[next(it)] += 1
    for n in w:  # within one row of the target at every step
      assert abs(counts[n] - w[n] * step) <= 1.0


def test_zero_weight_source_is_never_read(offline_sources, vocab):
  class Exploding:
    name = "boom"

    def docs(self, split):
      raise AssertionError(f"read {split}")

  srcs = dict(offline_sources, boom=Exploding())
  weights = {"general": 0.6, "math": 0.4, "code": 0.0, "boom": 0.0}
  next(_iter(srcs, vocab, weights))
  with pytest.raises(ValueError, match="sum to"):
    _iter(srcs, vocab, {"general": 0.6, "math": 0.6})


def test_heldout_sequences(offline_sources, vocab):
  src = offline_sources["general"]
  a = pipeline.heldout_sequences(src, vocab, T, 6)
  b = pipeline.heldout_sequences(src, vocab, T, 6)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert a["tokens"].shape == (6, T)
  # num_bytes counts the UTF-8 bytes of the predicted tokens: in each
  # segment all but its first token. Expected from the text itself: decode
  # those tokens and count bytes (the tokenizer has no normalization and no
  # dummy prefix, so decoding a run of whole pieces gives their text).
  expect = []
  for tok, seg in zip(a["tokens"], a["segment_ids"]):
    n = 0
    for s in np.unique(seg[seg > 0]):
      text = vocab.decode(tok[seg == s][1:])
      assert "\ufffd" not in text  # no byte piece cut in two
      n += len(text.encode("utf-8"))
    expect.append(n)
  np.testing.assert_array_equal(a["num_bytes"], expect)
  assert (a["num_bytes"] > 0).all()
  # Asking for more rows than the split holds pads the last one and stops.
  small = pipeline.heldout_sequences(offline_sources["math"], vocab, T, 10_000)
  assert 0 < len(small["tokens"]) < 10_000
  assert (small["segment_ids"][-1] == 0).any()
