"""The Apache Beam pipeline of prepare: one element per work unit.

  Create(sources) -> FlatMap(units) -> Reshuffle -> ParDo(PrepareUnit)

Each element is one unit of one source (`units.plan_source`); the units
themselves are read by the workers from the source's plan file (so the
pipeline graph stays small however many units there are). `PrepareUnit`
streams the unit's documents, tokenizes them in batches, splits them by the
content-hash rule of the raw path (`sources.is_heldout`) unless the unit
comes from explicit held-out data, and writes the unit's train and held-out
shards. The same code runs on the in-process DirectRunner (the default, the
demo and the tests) and on Dataflow, Flink or Spark: Beam's own pipeline
options (`--runner=DataflowRunner --project=...`) pass through the CLI.

Commit protocol (a killed prepare leaves no partial shard visible; a rerun
finishes the rest):
  1. each shard is written under a hidden temporary name beside its final
     name (locally) or in a local temporary directory (object stores), then
     renamed (locally) or uploaded as one object (atomic on GCS);
  2. the unit's commit record `units/unit-U.json` is written after its
     shards: a unit is done iff its record exists and matches the unit's
     description, the tokenizer and the format;
  3. the driver writes `manifest.json` after every unit is committed.
A rerun skips committed units without reading their input, rewrites the
others (deterministically: same documents, same bytes), then the manifest.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
import time
from typing import Any, Iterable, Iterator

from etils import epath

from demix_jax import storage
from demix_jax.data import sources as sources_lib
from demix_jax.data.errors import SourceError
from demix_jax.prepare import manifest as manifest_lib
from demix_jax.prepare import units as units_lib

# Test hook: a process stops (sleeps) after committing this many units, so a
# test can kill prepare mid-run at a known point.
STALL_ENV = "DEMIX_PREPARE_STALL_AFTER_UNITS"
_committed_here = 0


class _ShardWriter:
  """One shard: records to a temporary file, then committed atomically."""

  def __init__(self, final: str):
    # Imported here: array_record loads a C++ extension.
    from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

    self.final = final
    self.local = storage.is_local(final)
    name = os.path.basename(final)
    tag = f"{os.getpid()}.{secrets.token_hex(4)}.tmp"
    if self.local:
      os.makedirs(os.path.dirname(final), exist_ok=True)
      # Hidden: no glob for the shard names matches a temporary file.
      self.tmp = os.path.join(os.path.dirname(final), f".{name}.{tag}")
    else:
      self.tmp = os.path.join(tempfile.gettempdir(), f"demix-{name}.{tag}")
    # group_size 1: every record is its own chunk, for random access.
    self._w = array_record_module.ArrayRecordWriter(self.tmp, "group_size:1")
    self.documents = 0
    self.ids = 0

  def write(self, ids) -> None:
    self._w.write(manifest_lib.encode_ids(ids))
    self.documents += 1
    self.ids += len(ids)

  def commit(self) -> int:
    """Closes and publishes the shard; returns its size in bytes."""
    self._w.close()
    size = os.path.getsize(self.tmp)
    try:
      if self.local:
        os.replace(self.tmp, self.final)
      else:
        # One object, visible only once its upload completes.
        epath.Path(self.final).parent.mkdir(parents=True, exist_ok=True)
        with open(self.tmp, "rb") as src:
          with epath.Path(self.final).open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
    finally:
      if os.path.exists(self.tmp):
        os.unlink(self.tmp)
    return size

  def abort(self) -> None:
    self._w.close()
    if os.path.exists(self.tmp):
      os.unlink(self.tmp)


def _committed(job: dict[str, Any], fingerprint: str) -> dict | None:
  """The unit's commit record if it is done and matches; else None."""
  path = epath.Path(job["dir"]) / manifest_lib.unit_record_name(job["index"])
  if not path.exists():
    return None
  try:
    rec = storage.read_json(path)
  except storage.CorruptFileError:
    return None
  want = (job["unit"], fingerprint, manifest_lib.FORMAT_VERSION)
  if (rec.get("unit"), rec.get("tokenizer_fingerprint")) != want[:2]:
    return None
  if rec.get("format_version") != want[2]:
    return None
  for split in manifest_lib.SPLITS:
    shard = rec["splits"][split]
    if shard["documents"]:
      p = epath.Path(job["dir"]) / shard["path"]
      if not p.exists() or p.stat().length != shard["bytes"]:
        return None
  return rec


def _decoded(texts: Iterable[str], job: dict[str, Any]) -> Iterator[str]:
  """The texts; bytes that are not UTF-8 become a SourceError (bad input)."""
  try:
    yield from texts
  except UnicodeDecodeError as e:
    raise SourceError(
        job["source"],
        "paths",
        f"{job['unit'].get('path', '')} is not UTF-8 text ({e.reason})",
        "convert the file to UTF-8 or drop it from the glob",
    ) from e


def _batches(texts: Iterable[str], n: int):
  batch = []
  for t in texts:
    batch.append(t)
    if len(batch) == n:
      yield batch
      batch = []
  if batch:
    yield batch


def process_unit(job: dict[str, Any], vocab, encode_batch: int) -> dict:
  """Tokenizes and writes one unit (or returns its commit record if done).

  Args:
    job: {"source", "index", "n_units", "dir", "unit", "spec", "cache"}.
    vocab: the tokenizer (`encode_batch`, `eos_id`, `fingerprint`).
    encode_batch: documents per tokenizer call.

  Returns:
    The unit's commit record (with "skipped": whether it was already done).
  """
  global _committed_here
  done = _committed(job, vocab.fingerprint)
  if done is not None:
    return dict(done, skipped=True)
  t0 = time.monotonic()
  spec, unit = job["spec"], job["unit"]
  pct = spec["heldout_percent"]
  writers = {}
  try:
    texts = _decoded(units_lib.iter_unit(spec, unit, job["cache"]), job)
    for batch in _batches(texts, encode_batch):
      for text, ids in zip(batch, vocab.encode_batch(batch)):
        split = unit["split"]
        if split == "hash":
          split = "heldout" if sources_lib.is_heldout(text, pct) else "train"
        if split not in writers:
          name = manifest_lib.shard_name(split, job["index"], job["n_units"])
          writers[split] = _ShardWriter(f"{job['dir']}/{name}")
        writers[split].write(ids)
    splits: dict[str, dict[str, Any]] = {}
    for split in manifest_lib.SPLITS:
      w = writers.pop(split, None)
      name = manifest_lib.shard_name(split, job["index"], job["n_units"])
      if w is None:
        splits[split] = dict(path=name, documents=0, ids=0, tokens=0, bytes=0)
        continue
      size = w.commit()
      splits[split] = dict(
          path=name,
          documents=w.documents,
          ids=w.ids,
          tokens=w.ids + w.documents,
          bytes=size,
      )
  finally:
    for w in writers.values():
      w.abort()
  rec = {
      "format_version": manifest_lib.FORMAT_VERSION,
      "source": job["source"],
      "index": job["index"],
      "unit": unit,
      "tokenizer_fingerprint": vocab.fingerprint,
      "splits": splits,
  }
  storage.atomic_write_json(
      epath.Path(job["dir"]) / manifest_lib.unit_record_name(job["index"]),
      rec,
  )
  tokens = sum(s["tokens"] for s in splits.values())
  dt = max(time.monotonic() - t0, 1e-9)
  print(
      f"[prepare] {job['source']}: unit {job['index'] + 1}/{job['n_units']}"
      f" committed, {tokens:,} tokens in {dt:.1f}s ({tokens / dt:,.0f}"
      " tokens/s)",
      file=sys.stderr,
      flush=True,
  )
  _committed_here += 1
  stall = os.environ.get(STALL_ENV)
  if stall and _committed_here >= int(stall):
    time.sleep(3600)
  return dict(rec, skipped=False)


PLAN = f"{manifest_lib.UNITS_DIR}/plan.json"


def write_plan(directory: str, plan: dict[str, Any]) -> None:
  """A source's jobs as one file: the pipeline graph carries only counts."""
  storage.atomic_write_json(epath.Path(directory) / PLAN, plan)


def unit_jobs(source: str, directory: str, n_units: int):
  """(source, directory, i) for every unit of a source."""
  return [(source, directory, i) for i in range(n_units)]


def make_dofn(vocab, encode_batch: int):
  """The Beam DoFn over (source, directory, unit index) (Beam is heavy)."""
  import apache_beam as beam  # pylint: disable=g-import-not-at-top

  class PrepareUnit(beam.DoFn):
    """Writes one unit; yields (source, tokens) for Beam's counters."""

    def __init__(self):
      super().__init__()
      self._vocab = vocab  # pickled to the workers with the DoFn
      self._tokens = beam.metrics.Metrics.counter("prepare", "tokens")
      self._skipped = beam.metrics.Metrics.counter("prepare", "units_skipped")
      self._plans = {}

    def process(self, element):
      source, directory, i = element
      if directory not in self._plans:  # read once per worker and source
        self._plans[directory] = storage.read_json(epath.Path(directory) / PLAN)
      plan = self._plans[directory]
      job = dict(
          source=source,
          index=i,
          n_units=len(plan["units"]),
          dir=directory,
          unit=plan["units"][i],
          spec=plan["spec"],
          cache=plan["cache"],
      )
      rec = process_unit(job, self._vocab, encode_batch)
      if rec["skipped"]:
        self._skipped.inc()
      tokens = sum(s["tokens"] for s in rec["splits"].values())
      self._tokens.inc(tokens)
      yield source, tokens

  return PrepareUnit()


def run_beam(sources, vocab, encode_batch: int, argv) -> None:
  """Runs every unit on Beam with pipeline options from `argv` (may be []).

  Args:
    sources: (source, directory, number of units) per source; each
      directory holds the source's plan (`write_plan`).
    vocab: the tokenizer (pickled to the workers).
    encode_batch: documents per tokenizer call.
    argv: Beam pipeline options. Without `--runner` the units run on Beam's
      in-process FnApiRunner (one worker; `--direct_num_workers=N
      --direct_running_mode=multi_processing` spreads them over N
      processes).
  """
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top

  argv = list(argv)
  options = pipeline_options.PipelineOptions(argv)
  runner = None
  if not any(a == "--runner" or a.startswith("--runner=") for a in argv):
    # The in-process runner itself: Beam's DirectRunner would first try to
    # download its Prism runner, and nothing here may reach the network.
    from apache_beam.runners.portability.fn_api_runner import fn_runner  # pylint: disable=g-import-not-at-top

    runner = fn_runner.FnApiRunner()
  with beam.Pipeline(runner=runner, options=options) as p:
    _ = (
        p
        | "Sources" >> beam.Create(list(sources))
        | "Units" >> beam.FlatMap(lambda s: unit_jobs(*s))
        | "Spread" >> beam.Reshuffle()
        | "Prepare" >> beam.ParDo(make_dofn(vocab, encode_batch))
    )


def clean_stale_temporaries(directory: str) -> None:
  """Removes temporary shards a killed local prepare left behind."""
  if storage.is_local(directory) and os.path.isdir(directory):
    for name in os.listdir(directory):
      if name.startswith(".") and name.endswith(".tmp"):
        os.unlink(os.path.join(directory, name))
