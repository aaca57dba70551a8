"""prepare end to end on Beam's in-process runner: counts, order, resume."""

import json
import os

import numpy as np
import pytest

from demix_jax.data import sources
from demix_jax.prepare import manifest
from demix_jax.prepare import runner
from demix_jax.prepare import units


@pytest.fixture(scope="module")
def prepared(specs, vocab, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("prepared"))
  # Small units: every source is split into several shards.
  opts = units.PrepareOptions(out_dir=out, unit_bytes=8 << 10, unit_docs=50)
  return out, runner.prepare_sources(specs, vocab, opts)


def _all_ids(directory, split):
  p = manifest.Prepared(directory)
  recs = p.records(split)
  assert len(recs) == p.documents(split)
  return [manifest.decode_ids(recs[i]).tolist() for i in range(len(recs))]


@pytest.mark.parametrize("name", ["web", "code", "notes", "hf"])
def test_manifest_counts_equal_a_direct_count(prepared, specs, vocab, name):
  out, manifests = prepared
  m = manifests[name]
  raw = sources.Source(specs[name])
  for split in ("train", "heldout"):
    docs = raw.docs(split)
    assert m["splits"][split]["documents"] == len(docs) > 0
    assert m["splits"][split]["tokens"] == raw.token_count(vocab, split)
    shards = m["splits"][split]["shards"]
    assert sum(s["documents"] for s in shards) == len(docs)
    # Shards in unit order hold the raw documents in the raw order.
    want = vocab.encode_batch(list(docs))
    assert _all_ids(f"{out}/{name}", split) == want
  assert len(m["splits"]["train"]["shards"]) > 1
  assert m["tokenizer_fingerprint"] == vocab.fingerprint
  assert m["format_version"] == manifest.FORMAT_VERSION
  assert m["units"] == len(units.plan_source(specs[name], _opts(out))[0])


def _opts(out):
  return units.PrepareOptions(out_dir=out, unit_bytes=8 << 10, unit_docs=50)


def test_records_are_uint32_ids_without_eos(prepared, vocab):
  out, _ = prepared
  p = manifest.Prepared(f"{out}/web")
  rec = p.records("train")[0]
  ids = np.frombuffer(rec, "<u4")
  assert len(rec) == 4 * len(ids) and vocab.eos_id not in ids.tolist()
  assert manifest.IdsWithEos(vocab.eos_id)(rec).tolist() == (
      ids.tolist() + [vocab.eos_id]
  )


def test_rerun_skips_finished_sources_and_units(prepared, specs, vocab):
  out, manifests = prepared
  before = {
      f: os.stat(os.path.join(out, "web", f)).st_mtime_ns
      for f in os.listdir(os.path.join(out, "web"))
  }
  again = runner.prepare_sources({"web": specs["web"]}, vocab, _opts(out))
  assert again["web"] == manifests["web"]
  after = {
      f: os.stat(os.path.join(out, "web", f)).st_mtime_ns
      for f in os.listdir(os.path.join(out, "web"))
  }
  assert after == before  # nothing rewritten


def test_prepared_source_reads_counts_from_the_manifest(prepared, specs, vocab):
  out, manifests = prepared
  spec = sources.spec_from_dict(
      "web", {"kind": "prepared", "data_dir": f"{out}/web"}
  )
  sources.validate_sources({"web": spec})
  src = sources.Source(spec)
  assert src.token_count(vocab) == manifests["web"]["splits"]["train"]["tokens"]
  # Texts decode back to the raw documents (this tokenizer round-trips).
  raw = sources.Source(specs["web"]).docs("heldout")
  assert list(src.docs("heldout")) == list(raw)


def _check_against_raw(specs, got, vocab, cache=""):
  for name, spec in specs.items():
    raw = sources.Source(spec, cache)
    for split in ("train", "heldout"):
      m = got[name]["splits"][split]
      assert m["documents"] == len(raw.docs(split)) > 0
      assert m["tokens"] == raw.token_count(vocab, split)


def test_arrayrecord_source(tmp_path, vocab):
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  from tests.prepare.conftest import make_docs  # pylint: disable=g-import-not-at-top

  path = str(tmp_path / "docs.arrayrecord")
  w = array_record_module.ArrayRecordWriter(path, "group_size:1")
  for t in make_docs(180, 7) + [""]:
    w.write(json.dumps({"t": t}).encode())
  w.close()
  d = {"kind": "arrayrecord", "paths": [path], "record_format": "json"}
  d |= {"feature": "t", "heldout_percent": 10.0}
  specs = {"rec": sources.spec_from_dict("rec", d)}
  opts = units.PrepareOptions(out_dir=str(tmp_path / "out"), unit_docs=25)
  got = runner.prepare_sources(specs, vocab, opts)
  _check_against_raw(specs, got, vocab)
  assert len(got["rec"]["splits"]["train"]["shards"]) == 8  # 181 / 25
  # Record stores keep empty records as documents, as the raw path does.
  split = got["rec"]["splits"]
  assert split["train"]["documents"] + split["heldout"]["documents"] == 181


@pytest.mark.slow  # builds the offline code corpus (tfds)
def test_offline_source(tmp_path, vocab):
  cache = str(tmp_path / "cache")
  spec = sources.spec_from_dict(
      "code", {"kind": "offline", "corpus": "code"}, offline_max_docs=40
  )
  opts = units.PrepareOptions(
      out_dir=str(tmp_path / "out"), unit_docs=25, cache_dir=cache
  )
  got = runner.prepare_sources({"code": spec}, vocab, opts)
  _check_against_raw({"code": spec}, got, vocab, cache)


def test_object_store_commit_uploads_whole_shards(
    tmp_path, specs, vocab, monkeypatch
):
  """The gs:// branch (temporary file elsewhere, one upload) on local paths."""
  from demix_jax.prepare import beam_pipeline  # pylint: disable=g-import-not-at-top

  spec = specs["notes"]
  unit = units.plan_source(spec, _opts(str(tmp_path)))[0][0]
  job = dict(source="notes", index=0, n_units=1, unit=unit, cache="")
  job["spec"] = units.spec_dict(spec)
  local = beam_pipeline.process_unit(
      dict(job, dir=str(tmp_path / "local")), vocab, 64
  )
  monkeypatch.setattr(beam_pipeline.storage, "is_local", lambda p: False)
  remote = beam_pipeline.process_unit(
      dict(job, dir=str(tmp_path / "remote")), vocab, 64
  )
  assert not remote["skipped"] and remote["splits"] == local["splits"]
  for split in ("train", "heldout"):
    name = local["splits"][split]["path"]
    assert (tmp_path / "remote" / name).read_bytes() == (
        tmp_path / "local" / name
    ).read_bytes()
  assert not [f for f in os.listdir(tmp_path / "remote") if f[0] == "."]


def test_explicit_heldout_files(tmp_path, vocab):
  from tests.prepare.conftest import make_docs  # pylint: disable=g-import-not-at-top

  for name, n in (("train", 120), ("held", 30)):
    with open(tmp_path / f"{name}.jsonl", "w") as f:
      f.writelines(json.dumps({"text": t}) + "\n" for t in make_docs(n, n))
  d = {"kind": "jsonl", "paths": [str(tmp_path / "train.jsonl")]}
  d["heldout_paths"] = [str(tmp_path / "held.jsonl")]
  specs = {"web": sources.spec_from_dict("web", d)}
  opts = units.PrepareOptions(out_dir=str(tmp_path / "out"), unit_bytes=2048)
  got = runner.prepare_sources(specs, vocab, opts)
  _check_against_raw(specs, got, vocab)
  assert got["web"]["splits"]["train"]["documents"] == 120
  assert got["web"]["splits"]["heldout"]["documents"] == 30
