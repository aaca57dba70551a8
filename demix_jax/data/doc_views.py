"""Random-access views of documents, as grain indexes and pickles them.

`RecordTexts` decodes the records of a store (ArrayRecord files, tfds data
sources, the byte and block indexes of raw files) through optional
indices; `Reopenable` pickles a tfds data source as the recipe to reopen
it; `capped` and `host_shard` cut views without copying documents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def identity(x):
  return x


class Documents(Sequence[str]):
  """A random-access sequence of documents: slices and negative indices
  resolve here, and subclasses read one document with `_item(i)`, 0 <= i <
  len(self)."""

  def _item(self, i: int) -> str:
    raise NotImplementedError

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    if i < 0:
      i += len(self)
    if not 0 <= i < len(self):
      raise IndexError(i)
    return self._item(i)


class Reopenable(Sequence):
  """A tfds data source that pickles as the recipe to reopen it.

  tfds data sources hold their builder, which does not pickle; grain worker
  processes get the recipe and reopen the (already prepared) files.
  """

  def __init__(self, opener: Callable[[], Sequence]):
    self._opener = opener
    self._ds = opener()

  def __len__(self) -> int:
    return len(self._ds)

  def __getitem__(self, i):
    return self._ds[i]

  def __getstate__(self):
    return {"opener": self._opener}

  def __setstate__(self, state):
    self.__init__(state["opener"])


class RecordTexts(Documents):
  """Random-access texts over a record source, optionally through indices."""

  def __init__(self, records, decode, indices=None):
    self._records = records
    self._decode = decode
    self._indices = indices

  def __len__(self) -> int:
    return len(self._indices if self._indices is not None else self._records)

  def _item(self, i):
    if self._indices is not None:
      i = int(self._indices[i])
    return self._decode(self._records[i])

  def doc_blocks(self) -> np.ndarray | None:
    """The read block of each document when the records name them."""
    fn = getattr(self._records, "doc_blocks", None)
    blocks = fn() if fn is not None else None
    if blocks is None or self._indices is None:
      return blocks
    return blocks[np.asarray(self._indices, np.int64)]


def capped(seq: Sequence[str], max_docs: int) -> Sequence[str]:
  """The first max_docs documents (all for max_docs = 0), not copied."""
  if max_docs and len(seq) > max_docs:
    if isinstance(seq, list):
      return seq[:max_docs]
    return RecordTexts(seq, identity, range(max_docs))
  return seq


def host_shard(docs: Sequence[str], index: int, count: int) -> Sequence[str]:
  """This host's documents: disjoint across hosts, together all of them.

  Documents read a block at a time (`column_index`: Parquet row groups,
  Arrow batches) go to hosts by whole block (the k-th block used goes to
  host k % count), so no two hosts decode the same block. Other sequences,
  and those with fewer blocks than hosts, are split by document
  (documents index, index + count, ...).

  Args:
    docs: random-access documents.
    index: this host (0 <= index < count).
    count: hosts.

  Returns:
    A random-access view of this host's documents (docs itself for one).
  """
  if count == 1:
    return docs
  fn = getattr(docs, "doc_blocks", None)
  blocks = fn() if fn is not None else None
  if blocks is not None:
    uniq, rank = np.unique(blocks, return_inverse=True)
    if len(uniq) >= count:
      keep = np.flatnonzero(rank % count == index)
      return RecordTexts(docs, identity, keep)
  return RecordTexts(docs, identity, range(index, len(docs), count))
