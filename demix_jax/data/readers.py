"""Readers behind `sources.Source`: files and record stores -> texts.

Streaming readers of local or gs:// files (text lines and paragraphs,
JSONL, Parquet, Arrow IPC), used by prepare and by the in-place indexes of
raw sources (`line_index`, `column_index`), globs over local paths and
object stores, and record decoders (`Utf8`) and openers for ArrayRecord
files, tfds datasets and the offline corpora. Every reader raises
`SourceError` naming the source and the `SourceSpec` key to fix."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
import fnmatch
import glob
import json
import os
from typing import Any

from etils import epath

from demix_jax import storage
from demix_jax.data import offline
from demix_jax.data.errors import SourceError

_GLOB_CHARS = "*?["


def split_glob(pattern: str) -> tuple[str, str]:
  """(directory to search, pattern relative to it) of a path glob.

  The directory is every "/"-separated part before the first part holding a
  glob character: `gs://b/web/*.jsonl` searches `gs://b/web` for `*.jsonl`,
  `gs://b/a/**/x*.txt` searches `gs://b/a` for `**/x*.txt`. A pattern
  without glob characters gives (pattern, "").

  Args:
    pattern: a local path or URI, possibly with glob characters.

  Returns:
    (root, relative pattern).
  """
  parts = pattern.split("/")
  for i, part in enumerate(parts):
    if any(c in part for c in _GLOB_CHARS):
      root = "/".join(parts[:i])
      if not root:
        root = "/" if pattern.startswith("/") else "."
      return root, "/".join(parts[i:])
  return pattern, ""


def _walk(base: epath.Path, parts: list[str]) -> Iterator[epath.Path]:
  """Paths under base matching the remaining pattern parts (glob rules)."""
  if not parts:
    yield base
    return
  part, rest = parts[0], parts[1:]
  if part == "**":  # zero or more directories
    yield from _walk(base, rest)
    for child in sorted(base.iterdir()):
      if not child.name.startswith(".") and child.is_dir():
        yield from _walk(child, parts)
  elif any(c in part for c in _GLOB_CHARS):
    for child in sorted(base.iterdir()):
      # Like glob.glob, wildcards do not match hidden names.
      hidden = child.name.startswith(".") and not part.startswith(".")
      if not hidden and fnmatch.fnmatchcase(child.name, part):
        yield from _walk(child, rest)
  elif (base / part).exists():
    yield from _walk(base / part, rest)


def epath_glob(pattern: str) -> list[str]:
  """Matches of a glob through etils.epath (gs:// and other stores).

  `*`, `?` and `[...]` match within one path part and `**` any number of
  directories, as `glob.glob(recursive=True)` does locally. The search
  starts at the directory of the pattern (see `split_glob`).
  """
  root, rel = split_glob(pattern)
  if not rel:
    return [pattern] if epath.Path(pattern).exists() else []
  base = epath.Path(root)
  if not base.is_dir():
    return []
  return sorted({os.fspath(p) for p in _walk(base, rel.split("/"))})


def expand_globs(globs: Sequence[str], source: str, key: str) -> list[str]:
  """Sorted files matching local or gs:// globs; errors if one matches none.

  Args:
    globs: paths or glob patterns (`**` is recursive).
    source: the source's name (for errors).
    key: the SourceSpec key the globs came from (paths / heldout_paths).

  Returns:
    The matching files, each glob's matches sorted, in glob order.
  """
  out = []
  for g in globs:
    if "://" in g:
      matches = epath_glob(g)
    else:
      matches = glob.glob(os.path.expanduser(g), recursive=True)
    if not matches:
      raise SourceError(
          source,
          key,
          f"no file matches {g!r}",
          "check the path (globs are allowed)",
      )
    out.extend(sorted(matches))
  return out


def get_field(record: Mapping[str, Any], field: str) -> Any:
  """record["a"]["b"] for field "a.b"; KeyError naming the missing part."""
  v = record
  for part in field.split("."):
    if not isinstance(v, Mapping) or part not in v:
      raise KeyError(part)
    v = v[part]
  return v


def iter_lines(
    path: str, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, bytes]]:
  """(byte offset, line without "\\n") of the lines starting in [start, end).

  A line belongs to the range its first byte falls in, so consecutive
  ranges of one file together yield every line exactly once (the split
  rule of Hadoop and Beam's text sources).

  Args:
    path: a local path or URI.
    start: first byte of the range.
    end: end of the range (None: the end of the file).

  Yields:
    (offset of the line's first byte, the line's bytes).
  """
  with epath.Path(path).open("rb") as f:
    pos = start
    if start > 0:
      # The line in progress at `start` belongs to the previous range.
      f.seek(start - 1)
      pos = start - 1 + len(f.readline())
    while end is None or pos < end:
      line = f.readline()
      if not line:
        return
      yield pos, line[:-1] if line.endswith(b"\n") else line
      pos += len(line)


def utf8_text(
    data: bytes, path: str, offset: int, source: str, key: str
) -> str:
  """Decoded text; bad bytes raise SourceError, or as is without a source."""
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    if not source:
      raise
    raise SourceError(
        source,
        key,
        f"{path} is not UTF-8 text (byte {offset + e.start})",
        "convert the file to UTF-8 or drop it from the glob",
    ) from e


def iter_text(
    path: str,
    unit: str,
    start: int = 0,
    end: int | None = None,
    source: str = "",
) -> Iterator[str]:
  """Documents of a text file: the file, each line or each paragraph.

  Lines stream within a byte range; a paragraph (blank-line separated) or
  whole-file document needs the file from its start (`start`/`end` must be
  0/None for those units).
  """
  if unit == "line":
    for off, line in iter_lines(path, start, end):
      text = utf8_text(line, path, off, source, "paths")
      if text.strip():
        yield text
    return
  if start or end is not None:
    raise ValueError(f"unit {unit!r} cannot be read by byte range")
  if unit == "file":
    text = utf8_text(epath.Path(path).read_bytes(), path, 0, source, "paths")
    if text.strip():
      yield text
    return
  for off, data in iter_paragraphs(path):
    text = utf8_text(data, path, off, source, "paths")
    if text.strip():
      yield text


def iter_paragraphs(path: str) -> Iterator[tuple[int, bytes]]:
  """(byte offset, bytes) of the parts of a file split at blank lines.

  The parts of `text.split("\\n\\n")` of the whole file (blank ones too),
  found in one streaming pass: "\\n\\n" is ASCII, so splitting the bytes
  splits the UTF-8 text alike. Only the current part is held.
  """
  buf = bytearray()
  base = 0  # file offset of buf[0]
  search = 0  # buf[:search] holds no separator
  with epath.Path(path).open("rb") as f:
    while True:
      chunk = f.read(1 << 20)
      buf += chunk
      pos = 0
      while (j := buf.find(b"\n\n", max(pos, search))) >= 0:
        yield base + pos, bytes(buf[pos:j])
        pos = j + 2
      if not chunk:
        yield base + pos, bytes(buf[pos:])
        return
      del buf[:pos]
      base += pos
      # A separator may straddle the old end and the next chunk.
      search = max(0, len(buf) - 1)


def read_text(path: str, unit: str) -> list[str]:
  """Documents of a text file: the file, each line or each paragraph."""
  return list(iter_text(path, unit))


def jsonl_text(
    line: bytes | str, field: str, path: str, where: str, source: str
) -> str:
  """The `field` string of one JSON line ("" for a blank line)."""
  if not line.strip():
    return ""
  try:
    v = get_field(json.loads(line), field)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise SourceError(
        source,
        "paths",
        f"{path}:{where} is not JSON ({e})",
        "fix the file or the glob",
    ) from e
  except KeyError as e:
    raise SourceError(
        source,
        "feature",
        f"{path}:{where} has no field {field!r}",
        "set feature to the JSON key that holds the text",
    ) from e
  if not isinstance(v, str):
    raise SourceError(
        source,
        "feature",
        f"{path}:{where}: {field!r} is a {type(v).__name__}, not text",
        "point feature at a string field",
    )
  return v


def iter_jsonl(
    path: str,
    field: str,
    source: str,
    start: int = 0,
    end: int | None = None,
) -> Iterator[str]:
  """The non-empty `field` strings of the JSON lines starting in a range."""
  for lineno, (off, line) in enumerate(iter_lines(path, start, end), 1):
    where = str(lineno) if start == 0 else f"byte {off}"
    v = jsonl_text(line, field, path, where, source)
    if v:
      yield v


def read_jsonl(path: str, field: str, source: str) -> list[str]:
  """The non-empty `field` strings of a JSON-lines file."""
  return list(iter_jsonl(path, field, source))


def import_pyarrow(source: str):
  try:
    # Optional dependency: only parquet and Arrow sources need pyarrow.
    import pyarrow  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise SourceError(
        source, "kind", "this kind needs pyarrow", "pip install pyarrow"
    ) from e
  return pyarrow


def check_column(names: list[str], field: str, path: str, source: str):
  if field not in names:
    raise SourceError(
        source,
        "feature",
        f"{path} has no column {field!r} (columns: {names})",
        "set feature to the text column",
    )


def iter_parquet(
    path: str,
    field: str,
    source: str,
    row_groups: Sequence[int] | None = None,
) -> Iterator[str]:
  """The non-empty values of column `field`, one record batch at a time."""
  import_pyarrow(source)
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  with epath.Path(path).open("rb") as f:
    pf = pq.ParquetFile(f)
    check_column(pf.schema_arrow.names, field, path, source)
    for batch in pf.iter_batches(
        batch_size=4096, row_groups=row_groups, columns=[field]
    ):
      yield from (t for t in batch.column(0).to_pylist() if t)


def read_parquet(path: str, field: str, source: str) -> list[str]:
  """The non-empty values of column `field` of a Parquet file."""
  return list(iter_parquet(path, field, source))


def iter_arrow(path: str, field: str, source: str) -> Iterator[str]:
  """The non-empty values of column `field` of an Arrow IPC file.

  Hugging Face `datasets` saves with the streaming IPC format; the random
  access format is read too. Local files are memory-mapped, remote ones
  read as a stream (not downloaded whole).
  """
  pa = import_pyarrow(source)
  if storage.is_local(path):
    data = pa.memory_map(path)
  else:
    data = pa.PythonFile(epath.Path(path).open("rb"), mode="r")
  try:
    reader = pa.ipc.open_stream(data)
  except pa.ArrowInvalid:
    data.seek(0)
    reader = pa.ipc.open_file(data)
    batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
  else:
    batches = iter(reader)
  check_column(reader.schema.names, field, path, source)
  for batch in batches:
    col = batch.column(reader.schema.get_field_index(field))
    yield from (t for t in col.to_pylist() if t)


def hf_arrow_files(data_dir: str, split: str, source: str) -> list[str]:
  """The Arrow files of a `datasets` `save_to_disk` directory (one split).

  A `DatasetDict` directory (dataset_dict.json) holds one sub-directory per
  split; a `Dataset` directory holds its files directly. `state.json` lists
  the files in order.
  """
  d = epath.Path(data_dir)
  if (d / "dataset_dict.json").exists():
    splits = json.loads((d / "dataset_dict.json").read_text())["splits"]
    if split not in splits:
      raise SourceError(
          source,
          "split",
          f"{data_dir} has no split {split!r} (splits: {splits})",
          "set split to one of them",
      )
    d = d / split
  state = d / "state.json"
  if not state.exists():
    raise SourceError(
        source,
        "data_dir",
        f"{d} has no state.json: not a `datasets` save_to_disk directory",
        "point data_dir at the directory given to save_to_disk",
    )
  files = [f["filename"] for f in json.loads(state.read_text())["_data_files"]]
  return [os.fspath(d / f) for f in files]


class Utf8:
  """Record decoder: raw UTF-8 bytes, or a (nested) field of a dict/JSON."""

  def __init__(self, field: str = "", json_records: bool = False):
    self.field = field
    self.json_records = json_records

  def __call__(self, record) -> str:
    if self.json_records:
      record = json.loads(record)
    if self.field:
      record = get_field(record, self.field)
    return record.decode("utf-8") if isinstance(record, bytes) else str(record)


def open_offline(corpus: str, cache_dir: str, max_docs: int, split: str):
  """A split of an offline corpus (built as a tfds dataset on first use)."""
  return offline.build(corpus, cache_dir, max_docs).as_data_source(split)


def import_tfds():
  """tensorflow_datasets, imported on first use of a tfds source.

  Importing it pulls TensorFlow (seconds), which config validation and
  `--help` must not pay; callers also import it before a broad `except`,
  so that a missing package is not reported as a missing dataset.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  return tfds


def open_tfds(dataset: str, data_dir: str, split: str):
  """A prepared tfds split as a random-access data source (no download)."""
  return import_tfds().data_source(
      dataset, split=split, data_dir=data_dir or None, download=False
  )


def array_records(files: list[str]):
  """grain's random-access reader over ArrayRecord files."""
  # grain takes ~1.5 s to import; config validation imports this module.
  import grain  # pylint: disable=g-import-not-at-top

  return grain.sources.ArrayRecordDataSource(files)
