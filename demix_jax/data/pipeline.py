"""Grain training iterators and deterministic held-out sequences.

Per source (each host reads only its shard of the documents; a prepared
source's host reads only its shard files, already tokenized):

  MapDataset.source(host_shard(docs)) -> shuffle(seed) -> repeat
    -> tokenize (+EOS) -> to_iter_dataset -> pack into [seq_len] rows

(`doc_views.host_shard`: documents host, host + hosts, ..., or whole row
groups per host for Parquet and Arrow sources)

then the packed rows of all sources are mixed with the token weights ->
batch -> optional prefetch (thread) or worker processes (mp_prefetch).

Packing concatenates documents (each ends with EOS) and cuts the stream into
rows of exactly seq_len tokens. A document that does not fit is continued in
the next row of the same source, so nothing is dropped and every training
row is full; `segment_ids` number the documents within a row (1, 2, ...) and
`positions` count from 0 within each segment of a row (a continued document
restarts at 0: RoPE is relative, so only in-row offsets matter, and
positions stay small). The loss never crosses a segment boundary.

Mixing is a deterministic weighted interleave of whole rows: at step n the
source with the largest deficit w_i * (n + 1) - count_i is taken, so after n
rows every source has within one row of w_i * n. Because rows are full, row
fractions are token fractions. Zero weights drop a source; a weight of 1e-4
yields one row in every 10,000. (Grain's own `mix` rounds weights to
integers relative to the smallest, which is up to 1% off; this one is
exact.)

The returned iterator has `get_state()` / `set_state()`: small dicts of ints
(JSON-serialisable) that restore the stream exactly. With worker processes
(`worker_count` > 0) grain gives each worker a slice of the documents, so the
stream differs from the in-process one (proportions stay exact, since each
worker mixes exactly); resume with the same `worker_count`.

Measured on 2 cores (bench/data_throughput.py, 16 x 128 batches, three
offline sources): ~290k tokens/s inline, ~190k with the default thread
prefetch while the consumer idles, ~380k with 2 worker processes; the tiny
CPU trainer consumes ~8k tokens/s.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

from absl import flags
from absl import logging
import grain
import numpy as np

from demix_jax.data import doc_views
from demix_jax.data import mixture as mixture_lib
from demix_jax.prepare import manifest as manifest_lib

BATCH_KEYS = ("tokens", "segment_ids", "positions")


def source_seed(seed: int, name: str) -> int:
  """A per-source shuffle seed, stable across Python processes."""
  h = hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()
  return int(h[:8], 16)


class Tokenize:
  """Grain map: document text -> int32 ids ending with EOS (picklable)."""

  def __init__(self, vocab):
    self.vocab = vocab

  def __call__(self, text: str) -> np.ndarray:
    ids = self.vocab.encode(text)
    ids.append(self.vocab.eos_id)
    return np.asarray(ids, np.int32)


# ----------------------------------------------------------------- packing


def _empty_row(seq_len: int) -> dict[str, np.ndarray]:
  return {k: np.zeros(seq_len, np.int32) for k in BATCH_KEYS}


class _PackIterator(grain.DatasetIterator):
  """Packs token arrays into full rows; state = (doc start state, offset)."""

  def __init__(self, parent: grain.DatasetIterator, seq_len: int):
    super().__init__(parent)
    self._seq_len = seq_len
    self._doc: Any = None  # the current document's token array
    self._offset = 0
    # Parent state *before* the current document was read: restoring it and
    # re-reading the document reproduces the stream exactly.
    self._doc_state = None

  def _next_doc(self) -> bool:
    state = self._parent.get_state()
    try:
      doc = next(self._parent)
    except StopIteration:
      return False
    self._doc_state, self._doc, self._offset = state, doc, 0
    return True

  def __next__(self) -> dict[str, np.ndarray]:
    t = self._seq_len
    row = _empty_row(t)
    fill, seg = 0, 0
    while fill < t:
      if self._doc is None or self._offset >= len(self._doc):
        if not self._next_doc():
          if fill == 0:
            raise StopIteration
          break  # finite input: the last row is padded
        if not len(self._doc):
          continue
      n = min(t - fill, len(self._doc) - self._offset)
      seg += 1
      row["tokens"][fill : fill + n] = self._doc[
          self._offset : self._offset + n
      ]
      row["segment_ids"][fill : fill + n] = seg
      row["positions"][fill : fill + n] = np.arange(n, dtype=np.int32)
      fill += n
      self._offset += n
    return row

  def get_state(self) -> dict[str, Any]:
    if self._doc is None:
      return {"parent": self._parent.get_state(), "offset": -1}
    return {"parent": self._doc_state, "offset": self._offset}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._doc, self._doc_state, self._offset = None, None, 0
    if state["offset"] >= 0:
      if not self._next_doc():
        raise ValueError("pack state points past the end of the data")
      self._offset = state["offset"]


class PackIterDataset(grain.IterDataset):
  """Concatenate-and-split packing of token arrays into seq_len rows."""

  def __init__(self, parent: grain.IterDataset, seq_len: int):
    super().__init__(parent)
    self._seq_len = seq_len

  def __iter__(self) -> _PackIterator:
    return _PackIterator(self._parent.__iter__(), self._seq_len)

  def __str__(self) -> str:
    return f"PackIterDataset(seq_len={self._seq_len})"


# ------------------------------------------------------------------ mixing


class _MixIterator(grain.DatasetIterator):
  """Largest-deficit weighted interleave of the parents (see module doc)."""

  def __init__(
      self, parents: dict[str, grain.DatasetIterator], weights: dict[str, float]
  ):
    super().__init__(list(parents.values()))
    self._names = list(parents)
    self._its = parents
    self._w = np.array([weights[n] for n in self._names], np.float64)
    self._counts = np.zeros(len(self._names), np.int64)
    self._step = 0

  def __next__(self):
    deficit = self._w * (self._step + 1) - self._counts
    i = int(np.argmax(deficit))  # ties: first name (sorted order)
    elem = next(self._its[self._names[i]])
    self._counts[i] += 1
    self._step += 1
    return elem

  def get_state(self) -> dict[str, Any]:
    return {
        "step": self._step,
        "counts": {n: int(c) for n, c in zip(self._names, self._counts)},
        "parents": {n: it.get_state() for n, it in self._its.items()},
    }

  def set_state(self, state: dict[str, Any]) -> None:
    if sorted(state["parents"]) != sorted(self._names):
      raise ValueError(
          f"iterator state has sources {sorted(state['parents'])}, the "
          f"pipeline has {sorted(self._names)}; resume with the same mixture"
      )
    self._step = int(state["step"])
    self._counts = np.array([state["counts"][n] for n in self._names], np.int64)
    for n, it in self._its.items():
      it.set_state(state["parents"][n])


class MixIterDataset(grain.IterDataset):
  """Deterministic exact-proportion mix of named IterDatasets."""

  def __init__(
      self,
      parents: Mapping[str, grain.IterDataset],
      weights: Mapping[str, float],
  ):
    names = sorted(parents)
    super().__init__([parents[n] for n in names])
    self._parents_by_name = {n: parents[n] for n in names}
    total = sum(weights[n] for n in names)
    self._weights = {n: weights[n] / total for n in names}

  def __iter__(self) -> _MixIterator:
    return _MixIterator(
        {n: p.__iter__() for n, p in self._parents_by_name.items()},
        self._weights,
    )

  def __str__(self) -> str:
    return f"MixIterDataset({self._weights})"


# ---------------------------------------------------------------- builders


def packed_source_dataset(
    docs: Sequence[str],
    vocab,
    seq_len: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    name: str = "",
    read_threads: int = 0,
) -> grain.IterDataset:
  """The infinite stream of packed rows of one source for this host.

  Args:
    docs: random-access training documents.
    vocab: the `tokenizer.Vocab`.
    seq_len: tokens per row.
    seed: this source's shuffle seed.
    process_index: this host.
    process_count: hosts; documents are sharded across them first.
    name: source name for messages.
    read_threads: grain read/tokenize threads (0 = inline; threads only pay
      off for slow, remote reads: on 2 cores they cost ~3x per element).

  Returns:
    An IterDataset of {"tokens", "segment_ids", "positions"} int32 rows.
  """
  n = len(docs)
  if n < process_count:
    raise ValueError(
        f"source {name!r} has {n} training documents, fewer than the "
        f"{process_count} hosts. Fix: add data or raise its max_docs"
    )
  # Shard documents per host before shuffling and mixing (by whole row
  # group or batch for Parquet and Arrow sources, else by document).
  docs = doc_views.host_shard(docs, process_index, process_count)
  ds = grain.MapDataset.source(docs)
  return _shuffle_pack(ds, Tokenize(vocab), seq_len, seed, read_threads)


def packed_prepared_dataset(
    prepared,
    vocab,
    seq_len: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    read_threads: int = 0,
) -> grain.IterDataset:
  """`packed_source_dataset` over prepared token shards (no tokenizing).

  Hosts read disjoint shards (shard i goes to host i % process_count);
  grain's shuffle permutes indices lazily, so memory does not grow with the
  corpus. With one host the stream equals that of the raw source.

  Args:
    prepared: a `prepare.manifest.Prepared`.
    vocab: the run's tokenizer (must be the one the shards were made with).
    seq_len: tokens per row.
    seed: this source's shuffle seed.
    process_index: this host.
    process_count: hosts.
    read_threads: grain read threads (0 = inline).

  Returns:
    An IterDataset of {"tokens", "segment_ids", "positions"} int32 rows.
  """
  prepared.check_tokenizer(vocab.fingerprint)
  ds = grain.MapDataset.source(
      prepared.records("train", process_index, process_count)
  )
  fn = manifest_lib.IdsWithEos(vocab.eos_id)
  return _shuffle_pack(ds, fn, seq_len, seed, read_threads)


def _shuffle_pack(ds, to_ids, seq_len, seed, read_threads) -> grain.IterDataset:
  ds = ds.shuffle(seed=seed).repeat()  # reshuffled every epoch
  ds = ds.map(to_ids)
  options = grain.ReadOptions(
      num_threads=read_threads, prefetch_buffer_size=64 if read_threads else 0
  )
  return PackIterDataset(ds.to_iter_dataset(options), seq_len)


def make_train_dataset(
    sources: Mapping[str, Any],
    weights: Mapping[str, float],
    vocab,
    seq_len: int,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    worker_count: int = 0,
    prefetch: int = 2,
    read_threads: int = 0,
) -> grain.IterDataset:
  """The mixed, batched training IterDataset (see make_train_iterator)."""
  if global_batch_size % process_count:
    raise ValueError(
        f"global_batch_size={global_batch_size} is not "
        f"divisible by process_count={process_count}"
    )
  weights = mixture_lib.validate_weights(
      weights, list(sources), normalize="error"
  )
  weights = mixture_lib.active(weights)
  parents = {}
  for name in sorted(weights):
    docs = sources[name].docs("train")
    prepared = getattr(sources[name], "prepared", None)
    if prepared is not None:
      parents[name] = packed_prepared_dataset(
          prepared,
          vocab,
          seq_len,
          source_seed(seed, name),
          process_index,
          process_count,
          read_threads,
      )
      continue
    parents[name] = packed_source_dataset(
        docs,
        vocab,
        seq_len,
        source_seed(seed, name),
        process_index,
        process_count,
        name,
        read_threads,
    )
  ds = MixIterDataset(parents, weights)
  ds = ds.batch(global_batch_size // process_count, drop_remainder=True)
  if worker_count > 0:
    if not flags.FLAGS.is_parsed():
      # Grain's workers read its absl flags; outside an absl app (tests,
      # notebooks, the Python API) they would raise UnparsedFlagAccessError.
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  elif prefetch > 0:
    ds = grain.experimental.ThreadPrefetchIterDataset(
        ds, prefetch_buffer_size=prefetch
    )
  return ds


def make_train_iterator(
    sources: Mapping[str, Any],
    weights: Mapping[str, float],
    vocab,
    seq_len: int,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    worker_count: int = 0,
    prefetch: int = 2,
    read_threads: int = 0,
) -> grain.DatasetIterator:
  """An infinite iterator of training batches of this host.

  Args:
    sources: name -> `sources.Source` (only weighted ones are read).
    weights: name -> token fraction (must sum to 1; zeros drop a source).
    vocab: the `tokenizer.Vocab`.
    seq_len: tokens per row.
    global_batch_size: rows per step over all hosts.
    seed: shuffle seed (per-source seeds derive from it and the name).
    process_index: this host (jax.process_index()).
    process_count: hosts (jax.process_count()).
    worker_count: grain worker processes (0 = in-process; workers re-import
      the main module, see docs/platform_notes.md, grain-workers).
    prefetch: batches prefetched by a thread when worker_count == 0.
    read_threads: per-source grain read threads (0 = inline).

  Returns:
    A grain DatasetIterator yielding {"tokens", "segment_ids", "positions"},
    numpy int32 [global_batch_size // process_count, seq_len], with
    get_state()/set_state().
  """
  return iter(
      make_train_dataset(
          sources,
          weights,
          vocab,
          seq_len,
          global_batch_size,
          seed,
          process_index,
          process_count,
          worker_count,
          prefetch,
          read_threads,
      )
  )


def heldout_sequences(
    source, vocab, seq_len: int, n_sequences: int, seed: int = 0
) -> dict[str, np.ndarray]:
  """Deterministic packed held-out rows of one source (for loss and bpb).

  Held-out documents are visited in a fixed seeded order (so a split sorted
  by topic or module is sampled evenly) and packed like training data; only
  as many documents as needed are tokenized. If the split runs out, fewer
  rows are returned (the last one padded) with a warning.

  Args:
    source: a `sources.Source`.
    vocab: the `tokenizer.Vocab`.
    seq_len: tokens per row.
    n_sequences: rows wanted.
    seed: order of the documents.

  Returns:
    {"tokens", "segment_ids", "positions"}: int32 [n, seq_len];
    "token_bytes": int32 [n, seq_len], UTF-8 bytes of each token (0 for EOS
    and padding); "num_bytes": int64 [n], bytes of the *predicted* tokens of
    each row (token t+1 where segment_ids[t] == segment_ids[t+1] != 0), the
    denominator of bits per byte for the loss of `models.loss`.
  """
  docs = source.docs("heldout")
  if not len(docs):  # pylint: disable=g-explicit-length-test
    raise ValueError(f"source {source.name!r} has no held-out documents")
  prepared = getattr(source, "prepared", None)
  if prepared is not None:  # ids straight from the shards, every host alike
    prepared.check_tokenizer(vocab.fingerprint)
    ds = grain.MapDataset.source(prepared.records("heldout"))
    ds = ds.shuffle(seed=seed).map(manifest_lib.IdsWithEos(vocab.eos_id))
  else:
    ds = grain.MapDataset.source(docs).shuffle(seed=seed).map(Tokenize(vocab))
  options = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
  it = iter(PackIterDataset(ds.to_iter_dataset(options), seq_len))
  rows = []
  for row in it:
    rows.append(row)
    if len(rows) == n_sequences:
      break
  if len(rows) < n_sequences:
    logging.warning(
        "source %s: held-out split gives only %d of %d rows",
        source.name,
        len(rows),
        n_sequences,
    )
  out = {k: np.stack([r[k] for r in rows]) for k in BATCH_KEYS}
  token_bytes = vocab.token_byte_lengths()[out["tokens"]]
  token_bytes = np.where(out["segment_ids"] > 0, token_bytes, 0)
  out["token_bytes"] = token_bytes.astype(np.int32)
  seg = out["segment_ids"]
  predicted = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] != 0)
  out["num_bytes"] = (token_bytes[:, 1:] * predicted).sum(1).astype(np.int64)
  return out
