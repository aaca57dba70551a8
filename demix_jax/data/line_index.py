"""Raw text sources read in place: random access through a byte index.

A JSONL or line-per-document text source is opened by one streaming pass
that records where each document starts (file number and byte offset:
12 bytes a document, also while the index is built); reading document i seeks there and reads one line.
A paragraph-per-document text source is indexed the same way, by one
streaming pass over the blank-line boundaries (file number, offset and
length: 20 bytes a document); reading one seeks and reads its bytes.
A file-per-document text source keeps only its file list. No document text
is held in memory, so a raw source costs its index, not its size. (Prepared
shards, `python -m demix_jax.prepare`, are still the faster path at scale:
they are tokenized once and read without seeks per document.)

Both sequences pickle as their index (grain worker processes reopen the
files) and are safe to read from several threads.
"""

from __future__ import annotations

import array
from collections.abc import Sequence
import threading
from typing import Any

from etils import epath
import numpy as np

from demix_jax.data import doc_views
from demix_jax.data import readers


class _SeekDocs(doc_views.Documents):
  """Documents at byte offsets of files, read by seek (one handle a file)."""

  _files: list[str]
  _offsets: np.ndarray

  def _init_handles(self):
    self._handles: dict[int, Any] = {}
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self._offsets)

  def _doc(self, i: int) -> str:
    raise NotImplementedError

  def _read(self, k: int, off: int, length: int = -1) -> bytes:
    """length bytes at off of file k (-1: to the end of the line)."""
    with self._lock:  # one handle per file: seek + read must not interleave
      f = self._handles.get(k)
      if f is None:
        f = self._handles[k] = epath.Path(self._files[k]).open("rb")
      f.seek(off)
      return f.readline() if length < 0 else f.read(length)

  def _item(self, i):
    return self._doc(i)

  def __getstate__(self):
    state = dict(self.__dict__)
    del state["_handles"], state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._init_handles()


class LineDocs(_SeekDocs):
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
    file_ids, offsets = array.array("i"), array.array("q")  # packed, growing
    for k, path in enumerate(self._files):
      for lineno, (off, line) in enumerate(readers.iter_lines(path), 1):
        if self._text(line, path, str(lineno)):
          file_ids.append(k)
          offsets.append(off)
    self._file_ids = np.frombuffer(file_ids, np.int32)
    self._offsets = np.frombuffer(offsets, np.int64)
    self._init_handles()

  def _text(self, line: bytes, path: str, where: str) -> str:
    # Bytes that are not UTF-8 raise UnicodeDecodeError as they are: the
    # pipeline's edge names the file and byte (guards.readable).
    text = line.decode("utf-8")
    if self._field:
      return readers.jsonl_text(text, self._field, path, where, self._source)
    return text if text.strip() else ""

  def _doc(self, i: int) -> str:
    k, off = int(self._file_ids[i]), int(self._offsets[i])
    line = self._read(k, off)
    line = line[:-1] if line.endswith(b"\n") else line
    return self._text(line, self._files[k], f"byte {off}")


class ParagraphDocs(_SeekDocs):
  """Documents that are the non-blank blank-line-separated parts of files.

  The same documents, in the same order, as `str.split("\\n\\n")` of each
  whole file without the blank parts (`readers.iter_paragraphs`).
  """

  def __init__(self, files: Sequence[str], source: str):
    """Indexes the files (one streaming pass; bad UTF-8 is a SourceError).

    Args:
      files: the text files, in order.
      source: the source's name (for errors).
    """
    self._files = list(files)
    self._source = source
    file_ids, offsets = array.array("i"), array.array("q")
    lengths = array.array("q")
    for k, path in enumerate(self._files):
      for off, data in readers.iter_paragraphs(path):
        if readers.utf8_text(data, path, off, source, "paths").strip():
          file_ids.append(k)
          offsets.append(off)
          lengths.append(len(data))
    self._file_ids = np.frombuffer(file_ids, np.int32)
    self._offsets = np.frombuffer(offsets, np.int64)
    self._lengths = np.frombuffer(lengths, np.int64)
    self._init_handles()

  def _doc(self, i: int) -> str:
    k, off = int(self._file_ids[i]), int(self._offsets[i])
    data = self._read(k, off, int(self._lengths[i]))
    return readers.utf8_text(data, self._files[k], off, self._source, "paths")


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
