"""Readers behind `sources.Source`: files and record stores -> texts.

Local kinds are read whole into lists of documents (text, JSONL, Parquet);
record stores (ArrayRecord files, tfds datasets, the offline corpora) stay
on disk behind `RecordTexts`, a random-access sequence of `str` that grain
can index and pickle. Every reader raises `SourceError` naming the source
and the `SourceSpec` key to fix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import glob
import json
import os
from typing import Any

from etils import epath

from demix_jax.data import offline
from demix_jax.data.errors import SourceError


def expand_globs(globs: Sequence[str], source: str, key: str) -> list[str]:
  """Sorted files matching local or gs:// globs; errors if one matches none.

  Args:
    globs: paths or glob patterns (`**` recursive locally).
    source: the source's name (for errors).
    key: the SourceSpec key the globs came from (paths / heldout_paths).

  Returns:
    The matching files, each glob's matches sorted, in glob order.
  """
  out = []
  for g in globs:
    if "://" in g:
      matches = (
          [
              os.fspath(p)
              for p in epath.Path(g.split("*")[0]).parent.glob(
                  os.path.basename(g)
              )
          ]
          if "*" in g
          else ([g] if epath.Path(g).exists() else [])
      )
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


def read_text(path: str, unit: str) -> list[str]:
  """Documents of a text file: the file, each line or each paragraph."""
  text = epath.Path(path).read_text()
  if unit == "file":
    return [text] if text.strip() else []
  if unit == "line":
    return [ln for ln in text.split("\n") if ln.strip()]
  return [p for p in text.split("\n\n") if p.strip()]


def read_jsonl(path: str, field: str, source: str) -> list[str]:
  """The non-empty `field` strings of a JSON-lines file."""
  out = []
  with epath.Path(path).open() as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        v = get_field(json.loads(line), field)
      except json.JSONDecodeError as e:
        raise SourceError(
            source,
            "paths",
            f"{path}:{lineno} is not JSON ({e})",
            "fix the file or the glob",
        ) from e
      except KeyError as e:
        raise SourceError(
            source,
            "feature",
            f"{path}:{lineno} has no field {field!r}",
            "set feature to the JSON key that holds the text",
        ) from e
      if not isinstance(v, str):
        raise SourceError(
            source,
            "feature",
            f"{path}:{lineno}: {field!r} is a {type(v).__name__}, not text",
            "point feature at a string field",
        )
      if v:
        out.append(v)
  return out


def read_parquet(path: str, field: str, source: str) -> list[str]:
  """The non-empty values of column `field` of a Parquet file."""
  try:
    # Optional dependency: only parquet sources need pyarrow.
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise SourceError(
        source, "kind", "parquet needs pyarrow", "pip install pyarrow"
    ) from e
  with epath.Path(path).open("rb") as f:
    table = pq.read_table(f)
  if field not in table.column_names:
    raise SourceError(
        source,
        "feature",
        f"{path} has no column {field!r} (columns: {table.column_names})",
        "set feature to the text column",
    )
  return [t for t in table.column(field).to_pylist() if t]


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


def identity(x):
  return x


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


class RecordTexts(Sequence[str]):
  """Random-access texts over a record source, optionally through indices."""

  def __init__(self, records, decode, indices=None):
    self._records = records
    self._decode = decode
    self._indices = indices

  def __len__(self) -> int:
    return len(self._indices if self._indices is not None else self._records)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    if i < 0:
      i += len(self)
    if not 0 <= i < len(self):
      raise IndexError(i)
    if self._indices is not None:
      i = int(self._indices[i])
    return self._decode(self._records[i])


def capped(seq: Sequence[str], max_docs: int) -> Sequence[str]:
  """The first max_docs documents (all for max_docs = 0)."""
  if max_docs and len(seq) > max_docs:
    if isinstance(seq, RecordTexts):
      return RecordTexts(seq, identity, range(max_docs))
    return seq[:max_docs]
  return seq
