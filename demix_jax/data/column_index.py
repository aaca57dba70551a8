"""Raw columnar sources read in place: Parquet row groups and Arrow batches.

A Parquet source is opened from the files' footers: each row group's row
count and its text column's statistics (min value and null count) come
from the metadata, so a row group whose statistics show no null and no
empty value is indexed without reading its data; only a row group that may
hold empty rows is read once to find the rows kept (empty and null values
are not documents, as before). Document i is then (file, row group, row):
reading it decodes that row group's text column only, and a few decoded
row groups are kept (least recently used first out), so memory is bounded
by the row-group size times `cache_blocks`, not by the corpus.

A Hugging Face `datasets` directory (Arrow IPC files, the streaming format
`save_to_disk` writes, or the random-access file format) is indexed the
same way by record batch, in one streaming pass that also finds the empty
rows (IPC files have no statistics); a batch is read back by seeking to
its message.

Reading in a shuffled order touches a different block for most documents;
then every read decodes a whole block. Prepared shards
(`python -m demix_jax.prepare`) are the fast path at scale.

Both sequences pickle as their index (grain worker processes reopen the
files), are safe to read from several threads, and name their block per
document (`doc_blocks`) so that hosts can read disjoint blocks
(`doc_views.host_shard`).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
import threading

from etils import epath
import numpy as np

from demix_jax import storage
from demix_jax.data import doc_views
from demix_jax.data import readers
from demix_jax.data.errors import SourceError

CACHE_BLOCKS = 4


def _text_type(pa, typ) -> bool:
  return pa.types.is_string(typ) or pa.types.is_large_string(typ)


def _check_text_type(pa, schema, field: str, path: str, source: str):
  readers.check_column(schema.names, field, path, source)
  typ = schema.field(field).type
  if not _text_type(pa, typ):
    raise SourceError(
        source,
        "feature",
        f"{path}: column {field!r} is {typ}, not text",
        "point feature at a string column",
    )


def _kept_rows(pa, column) -> np.ndarray:
  """Positions of the non-null, non-empty values of a string column."""
  import pyarrow.compute as pc  # pylint: disable=g-import-not-at-top

  keep = pc.and_kleene(
      pc.is_valid(column), pc.greater(pc.binary_length(column), 0)
  )
  keep = pc.fill_null(keep, False)
  if isinstance(keep, pa.ChunkedArray):
    keep = keep.combine_chunks()
  return np.flatnonzero(keep.to_numpy(zero_copy_only=False)).astype(np.int32)


class _BlockDocs(doc_views.Documents):
  """Documents in blocks of rows (row groups, record batches) of files.

  Subclasses fill `_files`, `_block_file`, `_block_loc` (where the block
  is in its file), `_counts` (documents per block) and `_kept` (block ->
  row positions, only for blocks with dropped rows), then call `_finish`;
  they implement `_read_block(file handle, file number, location)`.
  """

  _files: list[str]
  _field: str
  _source: str

  def _finish(self, block_file, block_loc, counts, kept, cache_blocks: int):
    self._block_file = np.asarray(block_file, np.int32)
    self._block_loc = np.asarray(block_loc, np.int64)
    self._starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    self._kept = kept
    self._cache_blocks = max(1, cache_blocks)
    self._init_handles()

  def _init_handles(self):
    self._handles: collections.OrderedDict = collections.OrderedDict()
    self._cache: collections.OrderedDict = collections.OrderedDict()
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return int(self._starts[-1])

  @property
  def num_blocks(self) -> int:
    return len(self._block_file)

  def doc_blocks(self) -> np.ndarray:
    """The block number of every document (int32, one per document)."""
    counts = np.diff(self._starts)
    return np.repeat(np.arange(self.num_blocks, dtype=np.int32), counts)

  def _handle(self, k: int):
    f = self._handles.get(k)
    if f is None:
      f = self._handles[k] = self._open(k)
      if len(self._handles) > 8:  # few open files, whatever the file count
        self._handles.popitem(last=False)[1].close()
    else:
      self._handles.move_to_end(k)
    return f

  def _open(self, k: int):
    path = self._files[k]
    if storage.is_local(path):
      import pyarrow as pa  # pylint: disable=g-import-not-at-top

      return pa.OSFile(path)
    return epath.Path(path).open("rb")

  def _column(self, b: int):
    """The decoded text column of block b (cached)."""
    col = self._cache.get(b)
    if col is None:
      k = int(self._block_file[b])
      col = self._read_block(self._handle(k), k, int(self._block_loc[b]))
      self._cache[b] = col
      if len(self._cache) > self._cache_blocks:
        self._cache.popitem(last=False)
    else:
      self._cache.move_to_end(b)
    return col

  def _read_block(self, f, k: int, loc: int):
    raise NotImplementedError

  def _item(self, i):
    b = int(np.searchsorted(self._starts, i, side="right")) - 1
    row = i - int(self._starts[b])
    kept = self._kept.get(b)
    if kept is not None:
      row = int(kept[row])
    with self._lock:  # shared handles and cache
      return self._column(b)[row].as_py()

  def __getstate__(self):
    state = dict(self.__dict__)
    del state["_handles"], state["_cache"], state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._init_handles()


def _no_empty_value(stats) -> bool:
  """Whether row-group statistics prove no null and no "" in the column."""
  if stats is None or not stats.has_min_max or not stats.has_null_count:
    return False
  return stats.null_count == 0 and len(stats.min) > 0


def _read_group(pf, group: int, field: str):
  # One thread: arrow's pool threads keep memory of their own per read and
  # gain nothing on one column of one row group.
  return pf.read_row_group(group, [field], use_threads=False).column(0)


class ParquetDocs(_BlockDocs):
  """The non-empty values of a text column of Parquet files, in place."""

  def __init__(
      self,
      files: Sequence[str],
      field: str,
      source: str,
      cache_blocks: int = CACHE_BLOCKS,
  ):
    """Indexes the files from their metadata (see the module docstring).

    Args:
      files: the Parquet files, in order.
      field: the text column.
      source: the source's name (for errors).
      cache_blocks: decoded row groups kept in memory.
    """
    pa = readers.import_pyarrow(source)
    self._files, self._field, self._source = list(files), field, source
    block_file: list[int] = []
    block_loc: list[int] = []
    counts: list[int] = []
    kept: dict[int, np.ndarray] = {}
    for k, path in enumerate(self._files):
      with self._open(k) as pf:
        _check_text_type(pa, pf.schema_arrow, field, path, source)
        md = pf.metadata
        paths = [md.schema.column(c).path for c in range(md.num_columns)]
        col = paths.index(field)
        for g in range(md.num_row_groups):
          n = md.row_group(g).num_rows
          rows = None
          if n and not _no_empty_value(md.row_group(g).column(col).statistics):
            rows = _kept_rows(pa, _read_group(pf, g, field))
            n = len(rows)
          if not n:
            continue
          if rows is not None and n < md.row_group(g).num_rows:
            kept[len(counts)] = rows
          block_file.append(k)
          block_loc.append(g)
          counts.append(n)
    self._finish(block_file, block_loc, counts, kept, cache_blocks)

  def _open(self, k: int):
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

    return pq.ParquetFile(super()._open(k))

  def _read_block(self, f, k: int, loc: int):
    return _read_group(f, loc, self._field)


class ArrowDocs(_BlockDocs):
  """The non-empty values of a text column of Arrow IPC files, in place."""

  def __init__(
      self,
      files: Sequence[str],
      field: str,
      source: str,
      cache_blocks: int = CACHE_BLOCKS,
  ):
    """Indexes the files in one streaming pass (see the module docstring).

    Args:
      files: the Arrow IPC files (stream or file format), in order.
      field: the text column.
      source: the source's name (for errors).
      cache_blocks: decoded record batches kept in memory.
    """
    pa = readers.import_pyarrow(source)
    self._files, self._field, self._source = list(files), field, source
    self._schemas, self._stream = [], []
    block_file: list[int] = []
    block_loc: list[int] = []
    counts: list[int] = []
    kept: dict[int, np.ndarray] = {}
    for k, path in enumerate(self._files):
      f = self._open(k)
      try:
        schema, stream, blocks = self._scan(pa, f, path)
        for loc, column in blocks:
          rows = _kept_rows(pa, column)
          if not len(rows):
            continue
          if len(rows) < len(column):
            kept[len(counts)] = rows
          block_file.append(k)
          block_loc.append(loc)
          counts.append(len(rows))
      finally:
        f.close()
      self._schemas.append(schema)
      self._stream.append(stream)
    self._finish(block_file, block_loc, counts, kept, cache_blocks)

  def _scan(self, pa, f, path: str):
    """(schema, is stream format, iterator of (location, text column))."""
    src = self._source
    try:
      reader = pa.ipc.open_file(f)
    except pa.ArrowInvalid:
      f.seek(0)
    else:  # random-access format: a block is a batch number
      _check_text_type(pa, reader.schema, self._field, path, src)
      i = reader.schema.get_field_index(self._field)
      batches = range(reader.num_record_batches)
      blocks = ((b, reader.get_batch(b).column(i)) for b in batches)
      return reader.schema, False, blocks
    try:
      schema = pa.ipc.read_schema(pa.ipc.read_message(f))
    except (pa.ArrowInvalid, EOFError) as e:
      raise SourceError(
          src,
          "data_dir",
          f"{path} is not an Arrow IPC file ({e})",
          "point data_dir at a `datasets` save_to_disk directory",
      ) from e
    _check_text_type(pa, schema, self._field, path, src)
    i = schema.get_field_index(self._field)

    def stream_blocks():  # streaming format: a block is a message's offset
      while True:
        pos = f.tell()
        try:
          msg = pa.ipc.read_message(f)
        except EOFError:
          return
        if msg.type == "dictionary batch":
          raise SourceError(
              src,
              "feature",
              f"{path} holds dictionary-encoded columns, which are not "
              "read in place",
              "prepare the source (python -m demix_jax.prepare)",
          )
        if msg.type == "record batch":
          yield pos, pa.ipc.read_record_batch(msg, schema).column(i)

    return schema, True, stream_blocks()

  def _open(self, k: int):
    f = super()._open(k)
    if storage.is_local(self._files[k]):
      return f
    import pyarrow as pa  # pylint: disable=g-import-not-at-top

    return pa.PythonFile(f, mode="r")

  def _read_block(self, f, k: int, loc: int):
    import pyarrow as pa  # pylint: disable=g-import-not-at-top

    schema = self._schemas[k]
    i = schema.get_field_index(self._field)
    if not self._stream[k]:  # (a footer read per block: few file formats)
      return pa.ipc.open_file(f).get_batch(loc).column(i)
    f.seek(loc)
    return pa.ipc.read_record_batch(pa.ipc.read_message(f), schema).column(i)
