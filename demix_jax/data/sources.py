"""Document sources: a named stream of texts with a train and a held-out split.

Kinds (`SourceSpec.kind`):
  offline:     an embedded corpus of `offline.py` (wiki, math, code), built
               once as a local tfds ArrayRecord dataset in the cache dir.
  tfds:        a prepared tfds dataset read with `as_data_source`
               (ArrayRecord; `data_dir` may be gs://). Held-out is
               `heldout_split` when given, else a hash split of `split`.
  text:        text files (globs); one document per file, line or
               blank-line paragraph (`unit`).
  jsonl:       JSON-lines files; the text is `field` (dots for nested).
  arrayrecord: local ArrayRecord files of UTF-8 text or JSON records.
  parquet:     Parquet files, column `field` (needs pyarrow).
  hf_disk:     a Hugging Face `datasets` save_to_disk directory (`data_dir`,
               `split` of a DatasetDict), column `feature`, read with pyarrow.
  prepared:    token shards of `python -m demix_jax.prepare` in `data_dir`:
               hosts stream their shards, counts come from the manifest.
Any kind may name `prepared` (prepare's output dir): once it holds a
manifest of the same spec, the source reads those shards instead.
Raw files are read in place, never whole: JSONL and text through a byte
index (`line_index.py`), Parquet by row group and `hf_disk` by record batch
(`column_index.py`); each host reads its share (`doc_views.host_shard`).

Local kinds take held-out documents from `heldout_paths`, else a hash split:
a document is held out iff the hash of its *content* falls under
`heldout_percent` (equal texts land alike; the splits never overlap).

`Source.docs(split)` is a random-access sequence of `str` (usable with
`grain.MapDataset.source`); `Source.token_count(vocab, split)` is cached.
`validate_sources` checks specs cheaply before training. Problems raise
`SourceError` (data/errors.py), naming the source and the key to fix.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import importlib.util
import json
import os
from typing import Any, Mapping, Sequence

from absl import logging
from etils import epath
import numpy as np

from demix_jax import storage
from demix_jax.data import column_index
from demix_jax.data import doc_views
from demix_jax.data import line_index
from demix_jax.data import offline
from demix_jax.data import readers
from demix_jax.data.errors import SourceError
from demix_jax.prepare import manifest as prepared_lib

KINDS: tuple[str, ...] = ("offline", "tfds", "text", "jsonl", "arrayrecord")
KINDS += ("parquet", "hf_disk", "prepared")
SPLITS = ("train", "heldout")
_LOCAL = ("text", "jsonl", "arrayrecord", "parquet")
# Above this many documents token counts are estimated from a sample.
EXACT_COUNT_MAX_DOCS = 200_000
_COUNT_SAMPLE = 20_000


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """Typed description of one source (built from `config.data.sources`)."""

  name: str
  kind: str
  corpus: str = ""  # offline
  dataset: str = ""  # tfds name, e.g. "c4/en:3.1.0"
  split: str = "train"  # tfds train split
  heldout_split: str = ""  # tfds held-out split ("" = hash split)
  feature: str = "text"  # tfds / jsonl / parquet / json arrayrecord field
  data_dir: str = ""  # tfds data_dir (local or gs://)
  paths: tuple[str, ...] = ()  # local globs
  heldout_paths: tuple[str, ...] = ()
  heldout_percent: float = 1.0  # hash split when no held-out given
  unit: str = "file"  # text: file | line | paragraph
  record_format: str = "text"  # arrayrecord: text | json
  max_docs: int = 0  # > 0: cap per split (tests, runlocal)
  prepared: str = ""  # prepare's output dir; read once it has a manifest


def spec_from_dict(
    name: str, d: Mapping[str, Any], offline_max_docs: int = 0
) -> SourceSpec:
  """Builds a SourceSpec from a config entry; unknown keys are errors."""
  d = dict(d)
  if "kind" not in d:
    raise SourceError(
        name, "kind", "no kind given", f"set kind to one of {KINDS}"
    )
  fields = {f.name for f in dataclasses.fields(SourceSpec)} - {"name"}
  for k in d:
    if k not in fields:
      raise SourceError(
          name,
          k,
          f"unknown source key {k!r}",
          f"use keys from {sorted(fields)}",
      )
  for k in ("paths", "heldout_paths"):
    if k in d:
      v = d[k]
      d[k] = (v,) if isinstance(v, str) else tuple(v)
  if d["kind"] == "offline" and "max_docs" not in d:
    d["max_docs"] = offline_max_docs
  return SourceSpec(name=name, **d)


def content_hash(text: str) -> str:
  return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def is_heldout(text: str, percent: float) -> bool:
  """The hash-split rule: held out iff the content hash falls under percent."""
  return int(content_hash(text)[:8], 16) % 10_000 < percent * 100


class Source:
  """A source opened for reading: `docs(split)` and cached token counts."""

  def __init__(self, spec: SourceSpec, cache_dir: str = ""):
    if spec.kind not in KINDS:
      raise SourceError(
          spec.name,
          "kind",
          f"unknown kind {spec.kind!r}",
          f"use one of {KINDS}",
      )
    self.spec = spec
    self.name = spec.name
    self.cache_dir = cache_dir
    self._docs: dict[str, Sequence[str]] = {}
    self._prepared: prepared_lib.Prepared | None = None

  @property
  def prepared(self) -> prepared_lib.Prepared | None:
    """The prepared shards this source reads (None: it reads raw data)."""
    s = self.spec
    if self._prepared is None:
      if s.kind == "prepared":
        self._prepared = prepared_lib.Prepared(s.data_dir, s.name)
      elif prepared_lib.exists(s.prepared):
        self._prepared = prepared_lib.Prepared(s.prepared, s.name, spec=s)
    return self._prepared

  # -- reading
  def docs(self, split: str) -> Sequence[str]:
    """Random-access documents (str) of "train" or "heldout"."""
    if split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split not in self._docs:
      self._open()
    return self._docs[split]

  def _open(self) -> None:
    s = self.spec
    if self.prepared is not None:
      p = self.prepared
      self._docs = {x: prepared_lib.PreparedTexts(p, x) for x in SPLITS}
      return
    if s.kind == "offline":
      if not self.cache_dir:
        raise ValueError("offline sources need a cache_dir")
      if s.corpus not in offline.CORPORA:
        raise SourceError(
            s.name,
            "corpus",
            f"unknown offline corpus {s.corpus!r}",
            f"use one of {offline.CORPORA}",
        )
      for split in SPLITS:
        self._docs[split] = doc_views.RecordTexts(
            doc_views.Reopenable(
                functools.partial(
                    readers.open_offline,
                    s.corpus,
                    self.cache_dir,
                    s.max_docs,
                    split,
                )
            ),
            readers.Utf8("text"),
        )
      return
    if s.kind == "tfds":
      train = self._tfds_split(s.split)
      if s.heldout_split:
        held = self._tfds_split(s.heldout_split)
        self._docs = {
            "train": doc_views.capped(train, s.max_docs),
            "heldout": doc_views.capped(held, s.max_docs),
        }
      else:
        self._docs = self._hash_split(train)
      return
    if s.kind == "hf_disk":
      files = readers.hf_arrow_files(s.data_dir, s.split, s.name)
      self._docs = self._hash_split(
          column_index.ArrowDocs(files, s.feature, s.name)
      )
      return
    name = s.name
    if not s.paths:
      raise SourceError(
          name, "paths", "no paths given", "list the files (globs allowed)"
      )
    train = self._read_local(readers.expand_globs(s.paths, s.name, "paths"))
    if not len(train):  # pylint: disable=g-explicit-length-test
      raise SourceError(
          name,
          "paths",
          "the files hold no documents",
          "point paths at non-empty files",
      )
    if s.heldout_paths:
      held = self._read_local(
          readers.expand_globs(s.heldout_paths, s.name, "heldout_paths")
      )
      self._docs = {
          "train": doc_views.capped(train, s.max_docs),
          "heldout": doc_views.capped(held, s.max_docs),
      }
    else:
      self._docs = self._hash_split(train)

  def _tfds_split(self, split: str) -> Sequence[str]:
    s = self.spec
    readers.import_tfds()  # a missing package is not a missing dataset
    try:
      ds = doc_views.Reopenable(
          functools.partial(readers.open_tfds, s.dataset, s.data_dir, split)
      )
    except Exception as e:  # tfds raises many types for a missing dataset
      raise SourceError(
          s.name,
          "dataset",
          f"cannot open tfds {s.dataset!r} split {split!r} in "
          f"{s.data_dir or 'the default data_dir'}: "
          f"{type(e).__name__}: {str(e).splitlines()[0][:200]}",
          "prepare it with `tfds build` (ArrayRecord) or fix data_dir",
      ) from e
    dec = readers.Utf8(s.feature)
    if len(ds):
      try:
        dec(ds[0])
      except KeyError as e:
        raise SourceError(
            s.name,
            "feature",
            f"tfds {s.dataset!r} has no feature {s.feature!r}",
            "set feature to its text feature",
        ) from e
    return doc_views.RecordTexts(ds, dec)

  def _read_local(self, files: list[str]) -> Sequence[str]:
    s = self.spec
    name = s.name
    for f in files:
      if epath.Path(f).stat().length == 0:
        raise SourceError(
            name,
            "paths",
            f"{f} is empty",
            "remove it from the glob or fill it",
        )
    if s.kind == "arrayrecord":
      records = readers.array_records(files)
      if s.record_format not in ("text", "json"):
        raise SourceError(
            name,
            "record_format",
            f"unknown {s.record_format!r}",
            "use text or json",
        )
      json_records = s.record_format == "json"
      return doc_views.RecordTexts(
          records, readers.Utf8(s.feature if json_records else "", json_records)
      )
    if s.kind == "text" and s.unit not in ("file", "line", "paragraph"):
      raise SourceError(
          name,
          "unit",
          f"unknown unit {s.unit!r}",
          "use file, line or paragraph",
      )
    # Read in place through a byte or block index: no text in memory.
    if s.kind == "parquet":
      return column_index.ParquetDocs(files, s.feature, name)
    if s.kind == "jsonl" or s.unit == "line":
      field = s.feature if s.kind == "jsonl" else ""
      return line_index.LineDocs(files, field, name)
    if s.unit == "file":
      return line_index.FileDocs(files, name)
    return line_index.ParagraphDocs(files, name)

  def _hash_split(self, docs: Sequence[str]) -> dict[str, Sequence[str]]:
    """Content-hash split into train / held-out (cached for record sources)."""
    pct = self.spec.heldout_percent
    if not 0 < pct < 100:
      raise SourceError(
          self.name,
          "heldout_percent",
          f"{pct} is not in (0, 100)",
          "use e.g. 1.0, or give held-out data explicitly",
      )
    train: Sequence[str]
    held: Sequence[str]
    if isinstance(docs, list):
      train = [d for d in docs if not is_heldout(d, pct)]
      held = [d for d in docs if is_heldout(d, pct)]
    else:
      # One pass over the records (slow for huge tfds: give heldout_split).
      n = len(docs)
      flags = np.fromiter((is_heldout(docs[i], pct) for i in range(n)), bool, n)
      train = doc_views.RecordTexts(
          docs, doc_views.identity, np.flatnonzero(~flags)
      )
      held = doc_views.RecordTexts(
          docs, doc_views.identity, np.flatnonzero(flags)
      )
    if not len(held):  # pylint: disable=g-explicit-length-test
      logging.warning(
          "source %s: the hash split held out no document", self.name
      )
    return {
        "train": doc_views.capped(train, self.spec.max_docs),
        "heldout": doc_views.capped(held, self.spec.max_docs),
    }

  # -- counting
  def fingerprint(self) -> str:
    """Identity of the source's data (spec + file sizes/mtimes)."""
    h = hashlib.sha256(
        json.dumps(dataclasses.asdict(self.spec), sort_keys=True).encode()
    )
    if self.spec.kind in _LOCAL:
      for g in self.spec.paths + self.spec.heldout_paths:
        for f in sorted(glob.glob(os.path.expanduser(g), recursive=True)):
          st = os.stat(f)
          h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    if self.spec.kind == "offline":
      h.update(offline.CORPUS_VERSION.encode())
    if self.prepared is not None:
      h.update(self.prepared.manifest["source_fingerprint"].encode())
    return h.hexdigest()

  def token_count(self, vocab, split: str = "train") -> int:
    """Tokens of a split as the trainer sees them (each document + EOS).

    Exact below EXACT_COUNT_MAX_DOCS documents, else estimated from a fixed
    sample. Cached in `<cache_dir>/token_counts.json` per source fingerprint,
    tokenizer fingerprint and split.
    """
    if self.prepared is not None:
      self.prepared.check_tokenizer(vocab.fingerprint)
      return self.prepared.tokens(split)  # exact, from the manifest
    key = (
        f"{self.name}:{self.fingerprint()[:16]}:{vocab.fingerprint[:16]}:"
        f"{split}"
    )
    path = (
        epath.Path(self.cache_dir) / "token_counts.json"
        if (self.cache_dir)
        else None
    )
    cache = {}
    if path is not None and path.exists():
      cache = json.loads(path.read_text())
      if key in cache:
        return int(cache[key])
    docs = self.docs(split)
    n = len(docs)
    if n <= EXACT_COUNT_MAX_DOCS:
      total = 0
      for start in range(0, n, 1024):
        batch = docs[start : start + 1024]
        total += sum(len(t) + 1 for t in vocab.encode_batch(list(batch)))
    else:
      idx = np.random.default_rng(0).choice(n, _COUNT_SAMPLE, replace=False)
      idx.sort()  # the same sample, read in file order (Parquet: by group)
      sample = [docs[int(i)] for i in idx]
      per_doc = sum(len(t) + 1 for t in vocab.encode_batch(sample)) / len(
          sample
      )
      total = int(round(per_doc * n))
      logging.info(
          "source %s/%s: %d tokens (estimated from %d docs)",
          self.name,
          split,
          total,
          _COUNT_SAMPLE,
      )
    if path is not None:
      # Re-read so concurrent writers for other keys are not clobbered.
      if path.exists():
        cache = json.loads(path.read_text())
      cache[key] = total
      storage.atomic_write_json(path, cache)
    return total


def open_sources(
    specs: Mapping[str, SourceSpec], cache_dir: str
) -> dict[str, Source]:
  """Opens every source (builds offline corpora on first use)."""
  return {name: Source(spec, cache_dir) for name, spec in specs.items()}


def validate_sources(specs: Mapping[str, SourceSpec]) -> None:
  """Cheap checks before any training; raises SourceError (source, key).

  Checks the kind, the offline corpus name and its packages, that local
  globs match non-empty files, that the first JSONL record has the field,
  and that a tfds dataset's directory exists. Nothing is built or read in
  full.

  Args:
    specs: source name -> SourceSpec.
  """
  for name, s in specs.items():
    if s.kind not in KINDS:
      raise SourceError(
          name, "kind", f"unknown kind {s.kind!r}", f"use one of {KINDS}"
      )
    if s.max_docs < 0:
      raise SourceError(
          name,
          "max_docs",
          f"max_docs={s.max_docs} is negative",
          "use 0 (all) or > 0",
      )
    if s.kind == "offline":
      if s.corpus not in offline.CORPORA:
        raise SourceError(
            name,
            "corpus",
            f"unknown offline corpus " f"{s.corpus!r}",
            f"use one of {offline.CORPORA}",
        )
      need = {"wiki": "gensim", "math": "mathematics_dataset"}.get(s.corpus)
      if need and importlib.util.find_spec(need) is None:
        raise SourceError(
            name,
            "corpus",
            f"corpus {s.corpus!r} needs the " f"{need} package",
            "pip install -r requirements.txt",
        )
    elif s.kind == "prepared":
      prepared_lib.read_manifest(s.data_dir, name)
    elif s.kind == "hf_disk":
      readers.hf_arrow_files(s.data_dir, s.split, name)
    elif s.kind == "tfds":
      if not s.dataset:
        raise SourceError(
            name,
            "dataset",
            "no tfds dataset given",
            "set the tfds dataset name, e.g. 'c4/en:3.1.0'",
        )
      if s.data_dir and not epath.Path(s.data_dir).exists():
        raise SourceError(
            name,
            "data_dir",
            f"{s.data_dir} does not exist",
            "point it at the tfds data directory",
        )
    elif not prepared_lib.exists(s.prepared):  # shards stand in for files
      if not s.paths:
        raise SourceError(
            name, "paths", "no paths given", "list the files (globs allowed)"
        )
      files = readers.expand_globs(s.paths, name, "paths")
      if s.heldout_paths:
        files += readers.expand_globs(s.heldout_paths, name, "heldout_paths")
      for f in files:
        if epath.Path(f).stat().length == 0:
          raise SourceError(
              name,
              "paths",
              f"{f} is empty",
              "remove it from the glob or fill it",
          )
      if s.kind == "jsonl":
        with epath.Path(files[0]).open() as fh:
          first = next((ln for ln in fh if ln.strip()), "")
        try:
          readers.get_field(json.loads(first), s.feature)
        except (KeyError, json.JSONDecodeError) as e:
          raise SourceError(
              name,
              "feature",
              f"the first record of {files[0]} has no field {s.feature!r}",
              "set feature to the JSON key of the text",
          ) from e
