"""The pre-pass of prepare: bad-input checks and work units per source.

Cheap by design: it lists files, reads each file's head (and footers of
Parquet files), and reads documents of a hash-split source only until the
first held-out one (for a 1% split, ~100 documents), so a missing, empty or
undecodable file, a missing field or an empty held-out split exits before
any shard is written. Problems raise `SourceError` naming the source and
the `SourceSpec` key.

A work unit is the input of one pair of output shards: a byte range of a
JSONL or line-per-document text file (line-aligned when read, see
`readers.iter_lines`), a whole text file for `file`/`paragraph` units, a
group of Parquet row groups, one Arrow file of a `datasets` directory, or
an index range of a record store (ArrayRecord files, tfds, the offline
corpora). Units are plain JSON-able dicts: they are Beam elements and are
recorded in each unit's commit record, so a rerun recognises finished work.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import hashlib
import json
import math
from typing import Any, Iterator

from etils import epath

from demix_jax.data import readers
from demix_jax.data import sources as sources_lib
from demix_jax.data.errors import SourceError

KINDS: tuple[str, ...] = ("jsonl", "text", "parquet", "hf_disk", "arrayrecord")
KINDS += ("tfds", "offline")
_HEAD_BYTES = 1 << 16
# The SourceSpec key that locates the data of each kind.
_DATA_KEY = {"tfds": "dataset", "hf_disk": "data_dir", "offline": "corpus"}


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
  """Settings of one prepare run (config section `prepare`, or flags).

  Attributes:
    out_dir: where each source's directory `<out_dir>/<name>` is written
      (local or gs://); a source whose spec names `prepared` is written
      there instead ("" is allowed when every source names one).
    unit_bytes: input bytes per work unit (and so per output shard pair).
    unit_docs: documents per work unit of record stores (tfds, ArrayRecord).
    encode_batch: documents per tokenizer call.
    cache_dir: where offline corpora are built ("" = <out_dir>/offline).
    only: names of the sources to prepare (() = all).
  """

  out_dir: str
  unit_bytes: int = 64 << 20
  unit_docs: int = 100_000
  encode_batch: int = 1024
  cache_dir: str = ""
  only: tuple[str, ...] = ()

  def __post_init__(self):
    for name in ("unit_bytes", "unit_docs", "encode_batch"):
      if getattr(self, name) <= 0:
        raise ValueError(
            f"prepare.{name}={getattr(self, name)} must be > 0. Fix: use a"
            " positive value"
        )

  @property
  def offline_cache(self) -> str:
    """Where offline corpora are built ("" when neither dir is set)."""
    if self.cache_dir or not self.out_dir:
      return self.cache_dir
    return f"{self.out_dir.rstrip('/')}/offline"


def source_dir(spec: sources_lib.SourceSpec, out_dir: str) -> str:
  """Where a source's shards go: its `prepared`, else <out_dir>/<name>."""
  if spec.prepared:
    return spec.prepared.rstrip("/")
  if not out_dir:
    raise SourceError(
        spec.name,
        "prepared",
        "no output directory: neither prepared nor --out_dir is set",
        "give --out_dir (or prepare.out_dir), or set the source's prepared",
    )
  return f"{out_dir.rstrip('/')}/{spec.name}"


def spec_dict(spec: sources_lib.SourceSpec) -> dict[str, Any]:
  return json.loads(json.dumps(dataclasses.asdict(spec)))


# ----------------------------------------------------------- reading units


@functools.lru_cache(maxsize=8)
def _open_store(kind: str, path: str, dataset: str, data_dir: str, **kw):
  """A record store, opened once per process (tfds builders are slow)."""
  if kind == "arrayrecord":
    return readers.array_records([path])
  if kind == "tfds":
    return readers.open_tfds(dataset, data_dir, path)
  return readers.open_offline(kw["corpus"], kw["cache"], kw["max_docs"], path)


def _record_store(spec_d: dict[str, Any], unit: dict[str, Any], cache: str):
  kind = spec_d["kind"]
  store = _open_store(
      kind,
      unit["path"],
      spec_d["dataset"],
      spec_d["data_dir"],
      corpus=spec_d["corpus"],
      cache=cache,
      max_docs=spec_d["max_docs"],
  )
  if kind == "arrayrecord":
    json_records = spec_d["record_format"] == "json"
    dec = readers.Utf8(spec_d["feature"] if json_records else "", json_records)
    return store, dec
  return store, readers.Utf8(spec_d["feature"] if kind == "tfds" else "text")


def iter_unit(
    spec_d: dict[str, Any], unit: dict[str, Any], cache: str = ""
) -> Iterator[str]:
  """The documents of one unit, streamed, as the raw source reads them."""
  kind, name, field = spec_d["kind"], spec_d["name"], spec_d["feature"]
  path = unit.get("path", "")
  if kind == "jsonl":
    yield from readers.iter_jsonl(path, field, name, unit["start"], unit["end"])
  elif kind == "text":
    if spec_d["unit"] == "line":
      yield from readers.iter_text(
          path, "line", unit["start"], unit["end"], name
      )
    else:
      yield from readers.iter_text(path, spec_d["unit"], source=name)
  elif kind == "parquet":
    yield from readers.iter_parquet(path, field, name, unit["row_groups"])
  elif kind == "hf_disk":
    yield from readers.iter_arrow(path, field, name)
  else:
    store, dec = _record_store(spec_d, unit, cache)
    for i in range(unit["start"], unit["end"]):
      yield dec(store[i])


# --------------------------------------------------------------- the checks


def _check_head(spec: sources_lib.SourceSpec, path: str, key: str) -> None:
  """An empty or undecodable file, or a JSONL file without the field."""
  p = epath.Path(path)
  size = p.stat().length
  if size == 0:
    raise SourceError(
        spec.name, key, f"{path} is empty", "remove it from the glob or fill it"
    )
  if spec.kind in ("jsonl", "text"):
    with p.open("rb") as f:
      head = f.read(_HEAD_BYTES)
    try:
      text = codecs.getincrementaldecoder("utf-8")().decode(head)
    except UnicodeDecodeError as e:
      raise SourceError(
          spec.name,
          key,
          f"{path} is not UTF-8 text (byte {e.start})",
          "convert the file to UTF-8 or drop it from the glob",
      ) from e
    if size <= _HEAD_BYTES and not text.strip():
      raise SourceError(
          spec.name,
          key,
          f"{path} holds only whitespace",
          "remove it from the glob or fill it",
      )
    if spec.kind == "jsonl":
      for _, line in readers.iter_lines(path):
        if line.strip():
          readers.jsonl_text(line, spec.feature, path, "1st record", spec.name)
          break
  elif spec.kind == "parquet":
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

    try:
      with p.open("rb") as f:
        names = pq.ParquetFile(f).schema_arrow.names
    except Exception as e:  # pyarrow raises several types for a bad file
      raise SourceError(
          spec.name,
          key,
          f"{path} is not a Parquet file ({type(e).__name__}: {e})",
          "fix the file or drop it from the glob",
      ) from e
    if spec.feature not in names:
      raise SourceError(
          spec.name,
          "feature",
          f"{path} has no column {spec.feature!r} (columns: {names})",
          "set feature to the text column",
      )


def _file_units(
    spec: sources_lib.SourceSpec, files: list[str], split: str, opts
) -> list[dict[str, Any]]:
  out = []
  for path in files:
    st = epath.Path(path).stat()
    size = [st.length, int(st.mtime)]  # a changed file is a new unit
    if spec.kind == "parquet":
      import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

      with epath.Path(path).open("rb") as f:
        meta = pq.ParquetFile(f).metadata
      group, group_bytes = [], 0
      for g in range(meta.num_row_groups):
        group.append(g)
        group_bytes += meta.row_group(g).total_byte_size
        if group_bytes >= opts.unit_bytes or g == meta.num_row_groups - 1:
          out.append(dict(path=path, size=size, row_groups=group, split=split))
          group, group_bytes = [], 0
    elif spec.kind == "jsonl" or (spec.kind == "text" and spec.unit == "line"):
      n = max(1, math.ceil(size[0] / opts.unit_bytes))
      for k in range(n):
        end = min(size[0], (k + 1) * opts.unit_bytes)
        out.append(
            dict(path=path, size=size, start=k * opts.unit_bytes, end=end,
                 split=split)
        )  # fmt: skip
    else:
      out.append(dict(path=path, size=size, split=split))
  return out


def _record_units(
    spec: sources_lib.SourceSpec, split_name: str, split: str, opts
) -> list[dict[str, Any]]:
  """Index ranges of a record store's split (a file for ArrayRecord)."""
  d = spec_dict(spec)
  n = len(_record_store(d, {"path": split_name}, opts.offline_cache)[0])
  step = opts.unit_docs
  return [
      dict(path=split_name, start=s, end=min(n, s + step), split=split)
      for s in range(0, n, step)
  ]


def _units(spec: sources_lib.SourceSpec, opts) -> list[dict[str, Any]]:
  s = spec
  if s.kind == "offline":
    return _record_units(s, "train", "train", opts) + _record_units(
        s, "heldout", "heldout", opts
    )
  if s.kind == "tfds":
    if not s.dataset:
      raise SourceError(s.name, "dataset", "no tfds dataset given", "set it")
    readers.import_tfds()
    try:
      units = _record_units(s, s.split, "hash", opts)
      if s.heldout_split:
        units = [dict(u, split="train") for u in units]
        units += _record_units(s, s.heldout_split, "heldout", opts)
    except Exception as e:  # tfds raises many types for a missing dataset
      raise SourceError(
          s.name,
          "dataset",
          f"cannot open tfds {s.dataset!r} in {s.data_dir or 'the default'}:"
          f" {type(e).__name__}: {str(e).splitlines()[0][:200]}",
          "prepare it with `tfds build` (ArrayRecord) or fix data_dir",
      ) from e
    return units
  if s.kind == "hf_disk":
    if not s.data_dir:
      raise SourceError(
          s.name, "data_dir", "no data_dir given", "point it at save_to_disk"
      )
    files = readers.hf_arrow_files(s.data_dir, s.split, s.name)
    return [dict(path=f, split="hash") for f in files]
  if not s.paths:
    raise SourceError(
        s.name, "paths", "no paths given", "list the files (globs allowed)"
    )
  files = readers.expand_globs(s.paths, s.name, "paths")
  for f in files:
    _check_head(s, f, "paths")
  if s.kind == "arrayrecord":
    if s.record_format not in ("text", "json"):
      raise SourceError(
          s.name, "record_format", f"unknown {s.record_format!r}", "use text"
          " or json"
      )  # fmt: skip
    units = []
    for f in files:
      units += _record_units(s, f, "hash", opts)
    return units
  if s.kind == "text" and s.unit not in ("file", "line", "paragraph"):
    raise SourceError(
        s.name,
        "unit",
        f"unknown unit {s.unit!r}",
        "use file, line or paragraph",
    )
  if not s.heldout_paths:
    return _file_units(s, files, "hash", opts)
  held = readers.expand_globs(s.heldout_paths, s.name, "heldout_paths")
  for f in held:
    _check_head(s, f, "heldout_paths")
  return _file_units(s, files, "train", opts) + _file_units(
      s, held, "heldout", opts
  )


def _first_doc(spec_d, units, opts, pred) -> bool:
  for unit in units:
    for text in iter_unit(spec_d, unit, opts.offline_cache):
      if pred(text):
        return True
  return False


def plan_source(spec: sources_lib.SourceSpec, opts: PrepareOptions):
  """Checks a source cheaply and splits it into work units.

  Args:
    spec: the source.
    opts: the run's options.

  Returns:
    (units, source fingerprint).

  Raises:
    SourceError: the source cannot be prepared as given (names the key).
  """
  if spec.kind not in KINDS:
    raise SourceError(
        spec.name,
        "kind",
        f"prepare cannot read kind {spec.kind!r}",
        f"use one of {KINDS}",
    )
  if spec.max_docs and spec.kind != "offline":
    raise SourceError(
        spec.name,
        "max_docs",
        f"max_docs={spec.max_docs}: prepare writes whole sources",
        "set max_docs to 0 for prepare (cap the run's tokens instead)",
    )
  source_dir(spec, opts.out_dir)  # an output directory is known
  if spec.kind == "offline" and not opts.offline_cache:
    raise SourceError(
        spec.name,
        "corpus",
        "offline corpora are built in a cache dir, and none is set",
        "give --out_dir or prepare.cache_dir",
    )
  units = _units(spec, opts)
  d = spec_dict(spec)
  pct = spec.heldout_percent
  hashed = [u for u in units if u["split"] == "hash"]
  if hashed and not 0 < pct < 100:
    raise SourceError(
        spec.name,
        "heldout_percent",
        f"{pct} is not in (0, 100)",
        "use e.g. 1.0, or give held-out data explicitly",
    )
  if not _first_doc(d, units, opts, lambda t: True):
    raise SourceError(
        spec.name,
        _DATA_KEY.get(spec.kind, "paths"),
        "the input holds no documents",
        "point the source at non-empty data",
    )
  heldout = functools.partial(sources_lib.is_heldout, percent=pct)
  found = _first_doc(
      d, [u for u in units if u["split"] == "heldout"], opts, lambda t: True
  ) or _first_doc(d, hashed, opts, heldout)
  if not found:
    key = "heldout_paths" if not hashed else "heldout_percent"
    raise SourceError(
        spec.name,
        key,
        f"the held-out split would be empty (heldout_percent={pct} holds"
        " out none of these documents)",
        "raise heldout_percent or give held-out data (heldout_paths /"
        " heldout_split)",
    )
  h = hashlib.sha256(json.dumps([d, units], sort_keys=True).encode())
  return units, h.hexdigest()
