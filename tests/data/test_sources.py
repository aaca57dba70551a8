"""Tests of sources: local kinds, tfds, hash splits, counts and bad input."""

import hashlib
import json

import pytest

from demix_jax.data import errors
from demix_jax.data import sources


def _spec(name, **kw):
  return sources.spec_from_dict(name, kw)


def _hashes(seq):
  return {hashlib.sha256(seq[i].encode()).hexdigest() for i in range(len(seq))}


@pytest.fixture()
def jsonl_file(tmp_path):
  p = tmp_path / "a.jsonl"
  rows = [
      {"meta": {"body": f"document number {i} " * 3}, "id": i}
      for i in range(400)
  ]
  p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  return p


def test_jsonl_nested_field_and_hash_split(jsonl_file, tmp_path):
  s = sources.Source(
      _spec(
          "j",
          kind="jsonl",
          paths=str(jsonl_file),
          feature="meta.body",
          heldout_percent=10.0,
      ),
      str(tmp_path),
  )
  train, held = s.docs("train"), s.docs("heldout")
  assert len(train) + len(held) == 400
  assert 15 <= len(held) <= 70  # ~10% of 400
  assert not _hashes(train) & _hashes(held)
  assert train[0].startswith("document number")


def test_text_units_and_explicit_heldout(tmp_path):
  (tmp_path / "t1.txt").write_text("para one\nline two\n\npara two\n")
  (tmp_path / "t2.txt").write_text("second file\n")
  (tmp_path / "h.txt").write_text("held out text\n")
  spec = _spec(
      "t",
      kind="text",
      paths=str(tmp_path / "t*.txt"),
      heldout_paths=[str(tmp_path / "h.txt")],
      unit="paragraph",
  )
  s = sources.Source(spec, str(tmp_path))
  assert list(s.docs("train")) == [
      "para one\nline two",
      "para two\n",
      "second file\n",
  ]
  assert list(s.docs("heldout")) == ["held out text\n"]
  spec = _spec(
      "t",
      kind="text",
      paths=str(tmp_path / "t*.txt"),
      heldout_paths=[str(tmp_path / "h.txt")],
      unit="file",
  )
  assert len(sources.Source(spec).docs("train")) == 2


def test_arrayrecord_and_parquet(tmp_path):
  from array_record.python import array_record_module as arm

  path = str(tmp_path / "d.array_record")
  w = arm.ArrayRecordWriter(path, "group_size:1")
  for i in range(50):
    w.write(json.dumps({"text": f"record {i}"}).encode())
  w.close()
  s = sources.Source(
      _spec(
          "r",
          kind="arrayrecord",
          paths=path,
          record_format="json",
          heldout_percent=20.0,
      )
  )
  docs = list(s.docs("train")) + list(s.docs("heldout"))
  assert sorted(docs) == sorted(f"record {i}" for i in range(50))
  pa = pytest.importorskip("pyarrow")
  import pyarrow.parquet as pq

  pq.write_table(
      pa.table({"content": [f"row {i}" for i in range(30)]}),
      str(tmp_path / "p.parquet"),
  )
  s = sources.Source(
      _spec(
          "p",
          kind="parquet",
          paths=str(tmp_path / "*.parquet"),
          feature="content",
          heldout_percent=20.0,
      )
  )
  assert len(s.docs("train")) + len(s.docs("heldout")) == 30


def test_tfds_kind_reads_prepared_dataset(offline_sources, cache_dir):
  # The offline corpora are ordinary tfds ArrayRecord datasets.
  ref = offline_sources["general"]
  ref.docs("train")  # builds it
  s = sources.Source(
      _spec(
          "w",
          kind="tfds",
          dataset="demix_offline/wiki-max120",
          data_dir=f"{cache_dir}/tfds",
          split="train",
          heldout_split="heldout",
      )
  )
  assert len(s.docs("train")) == len(ref.docs("train"))
  assert s.docs("train")[3] == ref.docs("train")[3]
  with pytest.raises(errors.SourceError, match=r"^source 'w' \(feature\)"):
    sources.Source(
        _spec(
            "w",
            kind="tfds",
            dataset="demix_offline/wiki-max120",
            data_dir=f"{cache_dir}/tfds",
            heldout_split="heldout",
            feature="body",
        )
    ).docs("train")
  with pytest.raises(errors.SourceError, match=r"^source 'x' \(dataset\)"):
    sources.Source(
        _spec(
            "x", kind="tfds", dataset="no_such_dataset_xyz", data_dir=cache_dir
        )
    ).docs("train")


def test_offline_splits_never_overlap(offline_sources):
  for name, s in offline_sources.items():
    train, held = s.docs("train"), s.docs("heldout")
    assert len(train) and len(held), name
    assert not _hashes(train) & _hashes(held), name


def test_token_count_cached(offline_sources, vocab, cache_dir):
  s = offline_sources["math"]
  n = s.token_count(vocab, "train")
  docs = s.docs("train")
  assert n == sum(len(vocab.encode(docs[i])) + 1 for i in range(len(docs)))
  with open(f"{cache_dir}/token_counts.json") as f:
    assert n in json.load(f).values()
  assert s.token_count(vocab, "train") == n


def _error(fn, *args):
  with pytest.raises(errors.SourceError) as err:
    fn(*args)
  return err.value


def test_bad_inputs_raise_clear_errors(tmp_path, jsonl_file):
  e = _error(sources.validate_sources, {"a": _spec("a", kind="csv")})
  assert (e.source, e.key) == ("a", "kind")
  assert str(e) == (
      f"source 'a' (kind): unknown kind 'csv'. Fix: use one of {sources.KINDS}"
  )
  e = _error(sources.spec_from_dict, "a", {"kind": "text", "colour": 1})
  assert (e.key, e.problem) == ("colour", "unknown source key 'colour'")
  e = _error(sources.spec_from_dict, "a", {"paths": "x"})
  assert (e.key, e.problem) == ("kind", "no kind given")
  e = _error(
      sources.validate_sources,
      {"a": _spec("a", kind="offline", corpus="novels")},
  )
  assert e.key == "corpus" and "'novels'" in e.problem
  e = _error(
      sources.validate_sources,
      {"a": _spec("a", kind="text", paths=str(tmp_path / "nope*.txt"))},
  )
  assert e.key == "paths" and e.problem.startswith("no file matches")
  (tmp_path / "empty.txt").write_text("")
  e = _error(
      sources.validate_sources,
      {"a": _spec("a", kind="text", paths=str(tmp_path / "empty.txt"))},
  )
  assert e.key == "paths" and e.problem == f"{tmp_path}/empty.txt is empty"
  e = _error(
      sources.validate_sources,
      {"a": _spec("a", kind="jsonl", paths=str(jsonl_file), feature="txt")},
  )
  assert e.key == "feature" and "has no field 'txt'" in e.problem
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"text": "ok"}\n{"other": "x"}\n')
  e = _error(
      sources.Source(_spec("a", kind="jsonl", paths=str(bad))).docs, "train"
  )
  assert e.key == "feature" and e.problem == f"{bad}:2 has no field 'text'"
  assert e.fix == "set feature to the JSON key that holds the text"
  e = _error(sources.validate_sources, {"a": _spec("a", kind="tfds")})
  assert (e.key, e.problem) == ("dataset", "no tfds dataset given")
  e = _error(
      sources.validate_sources, {"a": _spec("a", kind="text", max_docs=-1)}
  )
  assert e.key == "max_docs" and "-1" in e.problem
  # All good: no exception.
  sources.validate_sources(
      {
          "a": _spec(
              "a", kind="jsonl", paths=str(jsonl_file), feature="meta.body"
          )
      }
  )


def test_source_errors_are_library_errors(tmp_path):
  """Plain ValueErrors naming source and key; no config field paths."""
  e = _error(
      sources.validate_sources,
      {"web": _spec("web", kind="text", paths=str(tmp_path / "none*.txt"))},
  )
  assert isinstance(e, ValueError) and not hasattr(e, "field")
  assert (e.source, e.key, e.fix) == (
      "web",
      "paths",
      "check the path (globs are allowed)",
  )
  assert "data." not in str(e) and "config" not in str(e)
  assert str(e).startswith("source 'web' (paths): no file matches ")
