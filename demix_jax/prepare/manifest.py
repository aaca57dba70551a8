"""The prepared-corpus format and its streaming reader.

A prepared source is a directory holding ArrayRecord shards and a manifest:

  train-UUUUU-of-NNNNN.arrayrecord    training documents of work unit U
  heldout-UUUUU-of-NNNNN.arrayrecord  held-out documents of work unit U
  units/unit-UUUUU.json               commit record of unit U
  units/plan.json                     the units of this prepare
  manifest.json                       written last: the source is complete

Record format (FORMAT_VERSION 1): one ArrayRecord record is one document,
its token ids as little-endian uint32 (`DTYPE`), without BOS or EOS; the
readers append the tokenizer's EOS, as the raw path does. Unit U's shards
hold its documents in input order; concatenating the shards in unit order
gives the documents in the order the raw source lists them, so a prepared
source and the same source read raw feed the trainer the same stream on one
host.

manifest.json:

  format_version, source, kind, dtype, record ("one document's token ids,
  no EOS"), tokenizer_fingerprint, tokenizer_path, eos_id,
  source_fingerprint (sha256 of the spec and of every unit's description:
  file, byte range, size), heldout_percent, units, spec (the SourceSpec),
  splits: {"train"|"heldout": {"documents", "ids" (token ids in the
  records), "tokens" (ids + one EOS per document: what the trainer sees and
  what the prior, budgets and epoch caps count), "shards": [{"path"
  (relative), "unit", "documents", "ids", "tokens", "bytes"}]}}

Readers: `Prepared.records(split, process_index, process_count)` is a grain
random-access source over this host's shards only (shard i of a split goes
to host i % process_count), so hosts read disjoint files and no process
holds more than the ArrayRecord indices of its shards in memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

from etils import epath
import numpy as np

from demix_jax import storage
from demix_jax.data import doc_views
from demix_jax.data.errors import SourceError

FORMAT_VERSION = 1
DTYPE = "<u4"
MANIFEST = "manifest.json"
UNITS_DIR = "units"
SPLITS = ("train", "heldout")
RECORD = "one document's token ids, little-endian uint32, no EOS"


def shard_name(split: str, unit: int, n_units: int) -> str:
  return f"{split}-{unit:05d}-of-{n_units:05d}.arrayrecord"


def unit_record_name(unit: int) -> str:
  return f"{UNITS_DIR}/unit-{unit:05d}.json"


def encode_ids(ids: Sequence[int]) -> bytes:
  """One record: a document's ids as little-endian uint32 bytes."""
  return np.asarray(ids, dtype=DTYPE).tobytes()


def decode_ids(record: bytes) -> np.ndarray:
  """The ids of one record (uint32, read-only view of the bytes)."""
  return np.frombuffer(record, dtype=DTYPE)


class IdsWithEos:
  """Grain map: record bytes -> int32 ids ending with EOS (picklable)."""

  def __init__(self, eos_id: int):
    self.eos_id = int(eos_id)

  def __call__(self, record: bytes) -> np.ndarray:
    ids = decode_ids(record)
    out = np.empty(len(ids) + 1, np.int32)
    out[:-1] = ids
    out[-1] = self.eos_id
    return out


def read_manifest(directory: str, source: str = "") -> dict[str, Any]:
  """The manifest of a prepared source; SourceError if absent or foreign."""
  if not directory:
    raise SourceError(
        source,
        "data_dir",
        "no data_dir given",
        "set it to the source's prepared directory (<out_dir>/<source>)",
    )
  path = epath.Path(directory) / MANIFEST
  if not path.exists():
    raise SourceError(
        source,
        "data_dir",
        f"{path} does not exist: {directory} is not a prepared source (or"
        " its prepare did not finish)",
        "run `python -m demix_jax.prepare` for it, or fix data_dir",
    )
  try:
    m = storage.read_json(path)
  except storage.CorruptFileError as e:
    raise SourceError(
        source, "data_dir", str(e), "rerun prepare for this source"
    ) from e
  if m.get("format_version") != FORMAT_VERSION or m.get("dtype") != DTYPE:
    raise SourceError(
        source,
        "data_dir",
        f"{path} has format {m.get('format_version')!r}/{m.get('dtype')!r};"
        f" this version reads {FORMAT_VERSION}/{DTYPE}",
        "rerun prepare with this version of demix_jax",
    )
  return m


def exists(directory: str) -> bool:
  """Whether a finished prepare wrote its manifest in `directory`."""
  return bool(directory) and (epath.Path(directory) / MANIFEST).exists()


def comparable_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
  """A SourceSpec dict without the keys that do not change the shards."""
  d = json.loads(json.dumps(dict(spec)))
  for k in ("name", "prepared"):
    d.pop(k, None)
  if d.get("kind") != "offline":  # prepare refuses max_docs but offline's
    d.pop("max_docs", None)
  return d


class Prepared:
  """An opened prepared source: counts from the manifest, shard readers."""

  def __init__(self, directory: str, source: str = "", spec=None):
    """Opens the manifest in `directory`.

    Args:
      directory: the source's prepared directory.
      source: its name (for errors).
      spec: the SourceSpec it must have been prepared from (None: any;
        kind "prepared" names the shards directly).
    """
    self.directory = os.fspath(directory)
    self.source = source or ""
    self.manifest = read_manifest(self.directory, source)
    if spec is not None:
      want = comparable_spec(dataclasses.asdict(spec))
      if comparable_spec(self.manifest.get("spec", {})) != want:
        raise SourceError(
            self.source,
            "prepared",
            f"{self.directory} was prepared from another spec of this"
            f" source ({comparable_spec(self.manifest.get('spec', {}))})",
            "rerun `python -m demix_jax.prepare` for it, or clear prepared",
        )
    self.eos_id = int(self.manifest["eos_id"])
    self.tokenizer_fingerprint = self.manifest["tokenizer_fingerprint"]

  def shards(self, split: str) -> list[dict[str, Any]]:
    return list(self.manifest["splits"][split]["shards"])

  def documents(self, split: str) -> int:
    return int(self.manifest["splits"][split]["documents"])

  def tokens(self, split: str) -> int:
    """Tokens as the trainer sees them (ids + one EOS per document)."""
    return int(self.manifest["splits"][split]["tokens"])

  def host_files(
      self, split: str, process_index: int = 0, process_count: int = 1
  ) -> list[str]:
    """This host's shard files: shard i goes to host i % process_count."""
    shards = self.shards(split)
    if len(shards) < process_count:
      raise SourceError(
          self.source,
          "data_dir",
          f"the {split} split has {len(shards)} shards, fewer than the"
          f" {process_count} hosts (hosts read whole shards)",
          "rerun prepare with a smaller --unit_mb so there are at least as"
          " many shards as hosts",
      )
    base = epath.Path(self.directory)
    return [
        os.fspath(base / s["path"])
        for s in shards[process_index::process_count]
    ]

  def records(self, split: str, process_index: int = 0, process_count: int = 1):
    """grain's random-access ArrayRecord source over this host's shards."""
    # grain takes ~1.5 s to import; config checks import this module.
    import grain  # pylint: disable=g-import-not-at-top

    return grain.sources.ArrayRecordDataSource(
        self.host_files(split, process_index, process_count)
    )

  def check_tokenizer(self, fingerprint: str) -> None:
    """SourceError unless the shards were made with this tokenizer."""
    if fingerprint != self.tokenizer_fingerprint:
      raise SourceError(
          self.source,
          "data_dir",
          f"{self.directory} was prepared with tokenizer"
          f" {self.tokenizer_fingerprint[:12]}..."
          f" ({self.manifest.get('tokenizer_path', '')}), the run uses"
          f" {fingerprint[:12]}...",
          "set data.tokenizer.path to the tokenizer prepare used, or rerun"
          " prepare with the run's tokenizer",
      )


class PreparedTexts(doc_views.Documents):
  """Texts of a prepared split, decoded on access with its tokenizer.

  For code that needs text (tokenizer training, inspection); the trainer and
  the evaluators read the ids directly. The tokenizer named in the manifest
  is loaded on first access, not when the source is opened.
  """

  def __init__(self, prepared: Prepared, split: str):
    self._prepared = prepared
    self._split = split
    self._records = None
    self._vocab = None

  def __len__(self) -> int:
    return self._prepared.documents(self._split)

  def _item(self, i):
    if self._records is None:
      # Imported here: the tokenizer pulls SentencePiece (and more).
      from demix_jax.data import tokenizer  # pylint: disable=g-import-not-at-top

      self._records = self._prepared.records(self._split)
      self._vocab = tokenizer.load_vocab(
          self._prepared.manifest["tokenizer_path"]
      )
      self._prepared.check_tokenizer(self._vocab.fingerprint)
    return self._vocab.decode(decode_ids(self._records[i]).tolist())

  def __getstate__(self):
    return {"prepared": self._prepared, "split": self._split}

  def __setstate__(self, state):
    self.__init__(state["prepared"], state["split"])
