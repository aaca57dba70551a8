"""Raw local sources read in place: random access through a byte index.

A JSONL or line-per-document text source is opened by one streaming pass
that records where each document starts (file number and byte offset:
12 bytes a document); reading document i seeks there and reads one line.
A file-per-document text source keeps only its file list. No document text
is held in memory, so a raw source costs its index, not its size. (Prepared
shards, `python -m demix_jax.prepare`, are still the faster path at scale:
they are tokenized once and read without seeks per document.)

Both sequences pickle as their index (grain worker processes reopen the
files) and are safe to read from several threads.
"""

from __future__ import annotations

from collections.abc import Sequence
import threading

from etils import epath
import numpy as np

from demix_jax.data import readers


class LineDocs(Sequence[str]):
  """Documents that are lines of files: JSONL records or text lines."""

  def __init__(self, files: Sequence[str], field: str, source: str):
    """Indexes the files (one streaming pass).

    Args:
      files: the files, in order.
      field: the JSON field of the text ("" for plain text lines).
      source: the source's name (for errors).
    """
    self._files = list(files)
    self._field = field
    self._source = source
    file_ids, offsets = [], []
    for k, path in enumerate(self._files):
      for lineno, (off, line) in enumerate(readers.iter_lines(path), 1):
        if self._text(line, path, str(lineno)):
          file_ids.append(k)
          offsets.append(off)
    self._file_ids = np.asarray(file_ids, np.int32)
    self._offsets = np.asarray(offsets, np.int64)
    self._init_handles()

  def _init_handles(self):
    self._handles = {}
    self._lock = threading.Lock()

  def _text(self, line: bytes, path: str, where: str) -> str:
    # Bytes that are not UTF-8 raise UnicodeDecodeError as they are: the
    # pipeline's edge names the file and byte (guards.readable).
    text = line.decode("utf-8")
    if self._field:
      return readers.jsonl_text(text, self._field, path, where, self._source)
    return text if text.strip() else ""

  def __len__(self) -> int:
    return len(self._offsets)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    if i < 0:
      i += len(self)
    if not 0 <= i < len(self):
      raise IndexError(i)
    k, off = int(self._file_ids[i]), int(self._offsets[i])
    with self._lock:  # one handle per file: seek + read must not interleave
      f = self._handles.get(k)
      if f is None:
        f = self._handles[k] = epath.Path(self._files[k]).open("rb")
      f.seek(off)
      line = f.readline()
    line = line[:-1] if line.endswith(b"\n") else line
    return self._text(line, self._files[k], f"byte {off}")

  def __getstate__(self):
    state = dict(self.__dict__)
    del state["_handles"], state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._init_handles()


class FileDocs(Sequence[str]):
  """Documents that are whole text files (the non-blank ones)."""

  def __init__(self, files: Sequence[str], source: str):
    self._source = source
    self._files = [
        f for f in files if any(True for _ in readers.iter_text(f, "file"))
    ]

  def __len__(self) -> int:
    return len(self._files)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    return next(readers.iter_text(self._files[i], "file", source=self._source))
