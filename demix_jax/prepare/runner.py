"""prepare as a library call: plan every source, run Beam, write manifests.

`prepare_sources(specs, vocab, options, beam_argv)` is what the CLI (and a
pipeline stage) calls. Order: the pre-pass checks every source first (so a
bad source exits before any shard of any source is written), sources whose
manifest already matches are skipped, the remaining units run as one Beam
pipeline, and each source's manifest is written once all its units are
committed.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping, Sequence

from etils import epath

from demix_jax import storage
from demix_jax.data import sources as sources_lib
from demix_jax.data.errors import SourceError
from demix_jax.prepare import beam_pipeline
from demix_jax.prepare import manifest as manifest_lib
from demix_jax.prepare import units as units_lib


def _current_manifest(directory: str, fingerprint: str, tok: str):
  path = epath.Path(directory) / manifest_lib.MANIFEST
  if not path.exists():
    return None
  try:
    m = storage.read_json(path)
  except storage.CorruptFileError:
    return None
  same = (
      m.get("format_version") == manifest_lib.FORMAT_VERSION
      and m.get("source_fingerprint") == fingerprint
      and m.get("tokenizer_fingerprint") == tok
  )
  return m if same else None


def build_manifest(
    spec: sources_lib.SourceSpec,
    units: list[dict[str, Any]],
    fingerprint: str,
    vocab,
    directory: str,
) -> dict[str, Any]:
  """The manifest from the units' commit records (all must exist)."""
  splits: dict[str, dict[str, Any]] = {
      s: {"documents": 0, "ids": 0, "tokens": 0, "shards": []}
      for s in manifest_lib.SPLITS
  }
  for i in range(len(units)):
    path = epath.Path(directory) / manifest_lib.unit_record_name(i)
    if not path.exists():
      raise RuntimeError(
          f"source {spec.name!r}: unit {i} has no commit record ({path})"
          " after the Beam pipeline finished; rerun prepare"
      )
    rec = storage.read_json(path)
    if rec["unit"] != units[i]:
      raise RuntimeError(f"{path} describes another unit; rerun prepare")
    for split, shard in rec["splits"].items():
      if not shard["documents"]:
        continue
      agg = splits[split]
      agg["shards"].append(dict(shard, unit=i))
      for k in ("documents", "ids", "tokens"):
        agg[k] += shard[k]
  return {
      "format_version": manifest_lib.FORMAT_VERSION,
      "source": spec.name,
      "kind": spec.kind,
      "dtype": manifest_lib.DTYPE,
      "record": manifest_lib.RECORD,
      "tokenizer_fingerprint": vocab.fingerprint,
      "tokenizer_path": getattr(vocab, "path", ""),
      "eos_id": int(vocab.eos_id),
      "source_fingerprint": fingerprint,
      "heldout_percent": spec.heldout_percent,
      "units": len(units),
      "spec": units_lib.spec_dict(spec),
      "splits": splits,
  }


def plan(
    specs: Mapping[str, sources_lib.SourceSpec],
    options: units_lib.PrepareOptions,
) -> dict[str, tuple[list[dict[str, Any]], str]]:
  """The pre-pass over every selected source: name -> (units, fingerprint)."""
  unknown = sorted(set(options.only) - set(specs))
  if unknown:
    raise SourceError(
        unknown[0],
        "",
        "is not a source of data.sources",
        f"use names from {sorted(specs)}",
    )
  names: Sequence[str] = options.only or tuple(specs)
  # Sources of kind "prepared" are shards already.
  names = [n for n in names if specs[n].kind != "prepared"]
  return {n: units_lib.plan_source(specs[n], options) for n in names}


def prepare_sources(
    specs: Mapping[str, sources_lib.SourceSpec],
    vocab,
    options: units_lib.PrepareOptions,
    beam_argv=(),
) -> dict[str, dict[str, Any]]:
  """Prepares the sources; returns name -> manifest.

  Args:
    specs: the sources (name -> SourceSpec).
    vocab: the tokenizer.
    options: out_dir and unit sizes.
    beam_argv: Beam pipeline options, e.g. ["--runner=DataflowRunner", ...]
      (empty: the in-process DirectRunner).

  Returns:
    Each prepared source's manifest.

  Raises:
    SourceError: a source cannot be prepared (raised by the pre-pass, before
      any shard is written; or while reading a unit, after the pre-pass).
  """
  plans = plan(specs, options)
  out, jobs = {}, []
  for name, (units, fp) in plans.items():
    directory = units_lib.source_dir(specs[name], options.out_dir)
    m = _current_manifest(directory, fp, vocab.fingerprint)
    if m is not None:
      print(f"[prepare] {name}: up to date, skipped", file=sys.stderr)
      out[name] = m
      continue
    beam_pipeline.clean_stale_temporaries(directory)
    beam_pipeline.write_plan(
        directory,
        {
            "units": units,
            "spec": units_lib.spec_dict(specs[name]),
            "cache": (
                options.offline_cache if specs[name].kind == "offline" else ""
            ),
        },
    )
    jobs.append((name, directory, len(units)))
  if jobs:
    print(
        f"[prepare] {sum(n for _, _, n in jobs)} units of {len(jobs)}"
        " source(s) to do",
        file=sys.stderr,
        flush=True,
    )
    beam_pipeline.run_beam(jobs, vocab, options.encode_batch, beam_argv)
  for name, (units, fp) in plans.items():
    if name in out:
      continue
    directory = units_lib.source_dir(specs[name], options.out_dir)
    m = build_manifest(specs[name], units, fp, vocab, directory)
    if not m["splits"]["heldout"]["documents"]:
      raise SourceError(
          name,
          "heldout_percent",
          "the held-out split is empty",
          "raise heldout_percent or give held-out data",
      )
    storage.atomic_write_json(epath.Path(directory) / manifest_lib.MANIFEST, m)
    tr = m["splits"]["train"]
    print(
        f"[prepare] {name}: {tr['documents']:,} train documents,"
        f" {tr['tokens']:,} tokens in {len(tr['shards'])} shards;"
        f" held out {m['splits']['heldout']['documents']:,} documents",
        file=sys.stderr,
        flush=True,
    )
    out[name] = m
  return out
