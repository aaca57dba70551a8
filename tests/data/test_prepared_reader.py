"""Streaming prepared shards: disjoint per host, resumable, same as raw."""

import json
import random

import numpy as np
import pytest

from demix_jax.data import pipeline
from demix_jax.data import sources
from demix_jax.data import tokenizer
from demix_jax.data.errors import SourceError
from demix_jax.prepare import manifest
from demix_jax.prepare import runner
from demix_jax.prepare import units

SEQ = 32


def _docs(n, seed):
  rng = random.Random(seed)
  words = "the cat sat on a mat while 12 dogs ran + - ( ) x y".split()
  return [
      " ".join(rng.choice(words) for _ in range(rng.randint(2, 40)))
      for _ in range(n)
  ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("prep_reader")
  for name, seed in (("a", 0), ("b", 1)):
    with open(root / f"{name}.jsonl", "w") as f:
      for t in _docs(400, seed):
        f.write(json.dumps({"text": t}) + "\n")
  vocab = tokenizer.train_vocab(
      {"x": _docs(300, 5)}, 300, str(root / "t.model"), sample_chars=40_000
  )
  raw = {
      n: sources.spec_from_dict(
          n, {"kind": "jsonl", "paths": [str(root / f"{n}.jsonl")]}
      )
      for n in ("a", "b")
  }
  out = str(root / "prepared")
  opts = units.PrepareOptions(out_dir=out, unit_bytes=4 << 10)
  runner.prepare_sources(raw, vocab, opts)
  prepared = {
      n: sources.spec_from_dict(
          n, {"kind": "prepared", "data_dir": f"{out}/{n}"}
      )
      for n in ("a", "b")
  }
  return vocab, raw, prepared


def _batches(it, n):
  return [next(it) for _ in range(n)]


def test_hosts_read_disjoint_shards_covering_all(setup):
  _, _, prepared = setup
  p = manifest.Prepared(prepared["a"].data_dir)
  all_files = p.host_files("train")
  assert len(all_files) >= 6
  per_host = [p.host_files("train", i, 3) for i in range(3)]
  assert sorted(sum(per_host, [])) == sorted(all_files)
  for i in range(3):
    for j in range(i + 1, 3):
      assert not set(per_host[i]) & set(per_host[j])
  # Shard i of the manifest goes to host i % 3.
  assert per_host[1] == all_files[1::3]
  n = sum(len(p.records("train", i, 3)) for i in range(3))
  assert n == p.documents("train")
  with pytest.raises(SourceError, match="fewer than the"):
    p.host_files("train", 0, len(all_files) + 1)


def test_one_host_stream_equals_the_raw_source(setup):
  vocab, raw, prepared = setup
  w = {"a": 0.7, "b": 0.3}
  kw = dict(seq_len=SEQ, global_batch_size=4, seed=3, prefetch=0)
  src_raw = sources.open_sources(raw, "")
  src_prep = sources.open_sources(prepared, "")
  got = _batches(pipeline.make_train_iterator(src_prep, w, vocab, **kw), 12)
  want = _batches(pipeline.make_train_iterator(src_raw, w, vocab, **kw), 12)
  for g, x in zip(got, want):
    for k in pipeline.BATCH_KEYS:
      np.testing.assert_array_equal(g[k], x[k])
  h_prep = pipeline.heldout_sequences(src_prep["a"], vocab, SEQ, 3, seed=1)
  h_raw = pipeline.heldout_sequences(src_raw["a"], vocab, SEQ, 3, seed=1)
  for k in h_raw:
    np.testing.assert_array_equal(h_prep[k], h_raw[k])


def test_iterator_state_resumes_exactly(setup):
  vocab, _, prepared = setup
  srcs = sources.open_sources(prepared, "")
  kw = dict(
      seq_len=SEQ,
      global_batch_size=4,
      seed=0,
      process_index=1,
      process_count=2,
      prefetch=0,
  )
  w = {"a": 0.5, "b": 0.5}
  it = pipeline.make_train_iterator(srcs, w, vocab, **kw)
  _batches(it, 7)
  state = json.loads(json.dumps(it.get_state()))  # checkpointable as JSON
  after = _batches(it, 9)
  it2 = pipeline.make_train_iterator(srcs, w, vocab, **kw)
  it2.set_state(state)
  for g, x in zip(_batches(it2, 9), after):
    for k in pipeline.BATCH_KEYS:
      np.testing.assert_array_equal(g[k], x[k])


def test_hosts_see_different_documents(setup):
  vocab, _, prepared = setup
  srcs = sources.open_sources(prepared, "")
  rows = []
  for host in range(2):
    ds = pipeline.packed_prepared_dataset(
        srcs["a"].prepared, vocab, SEQ, 0, host, 2
    )
    rows.append({tuple(r["tokens"]) for r in _batches(iter(ds), 40)})
  assert not rows[0] & rows[1]


def test_a_different_tokenizer_is_refused(setup, tmp_path):
  _, _, prepared = setup
  other = tokenizer.train_vocab(
      {"x": _docs(300, 8)}, 301, str(tmp_path / "o.model"), sample_chars=9_000
  )
  src = sources.Source(prepared["a"])
  with pytest.raises(SourceError, match="prepared with tokenizer") as e:
    src.token_count(other)
  assert e.value.key == "data_dir"
  with pytest.raises(SourceError):
    pipeline.make_train_iterator(
        {"a": src}, {"a": 1.0}, other, SEQ, 2, 0, prefetch=0
    )


def test_missing_manifest_names_the_source(tmp_path):
  spec = sources.spec_from_dict(
      "web", {"kind": "prepared", "data_dir": str(tmp_path)}
  )
  with pytest.raises(SourceError, match="is not a prepared source") as e:
    sources.validate_sources({"web": spec})
  assert (e.value.source, e.value.key) == ("web", "data_dir")


def test_a_source_naming_its_prepared_dir_reads_it_once_prepared(
    setup, tmp_path
):
  vocab, raw, _ = setup
  copy = tmp_path / "a.jsonl"
  copy.write_bytes(open(raw["a"].paths[0], "rb").read())
  d = {"kind": "jsonl", "paths": [str(copy)], "prepared": str(tmp_path / "a")}
  spec = sources.spec_from_dict("a", d)
  before = sources.Source(spec)
  assert before.prepared is None  # not prepared yet: the raw files
  n_raw = before.token_count(vocab)
  runner.prepare_sources({"a": spec}, vocab, units.PrepareOptions(out_dir=""))
  assert manifest.exists(str(tmp_path / "a"))
  after = sources.Source(spec)
  assert after.prepared is not None
  assert after.token_count(vocab) == n_raw
  it = pipeline.make_train_iterator(
      {"a": after}, {"a": 1.0}, vocab, SEQ, 2, 0, prefetch=0
  )
  want = pipeline.make_train_iterator(
      {"a": before}, {"a": 1.0}, vocab, SEQ, 2, 0, prefetch=0
  )
  np.testing.assert_array_equal(next(it)["tokens"], next(want)["tokens"])
  # Once prepared, the raw files may go: the checks and the loader use the
  # shards.
  copy.unlink()
  sources.validate_sources({"a": spec})
  again = sources.Source(spec)
  it = pipeline.make_train_iterator(
      {"a": again}, {"a": 1.0}, vocab, SEQ, 2, 0, prefetch=0
  )
  assert next(it)["tokens"].shape == (2, SEQ)
  changed = sources.spec_from_dict("a", dict(d, heldout_percent=2.0))
  with pytest.raises(SourceError, match="another spec") as e:
    sources.Source(changed).docs("train")
  assert e.value.key == "prepared"


def test_tfds_source_prepares_like_the_raw_source(
    offline_sources, cache_dir, vocab, tmp_path
):
  # The offline corpora are ordinary tfds ArrayRecord datasets.
  offline_sources["general"].docs("train")  # builds it
  base = {"kind": "tfds", "dataset": "demix_offline/wiki-max120"}
  base["data_dir"] = f"{cache_dir}/tfds"
  specs = {
      "split": sources.spec_from_dict("split", dict(base, heldout_split="heldout")),
      "hashed": sources.spec_from_dict("hashed", dict(base, heldout_percent=10.0)),
  }  # fmt: skip
  opts = units.PrepareOptions(out_dir=str(tmp_path), unit_docs=30)
  got = runner.prepare_sources(specs, vocab, opts)
  for name, spec in specs.items():
    raw = sources.Source(spec)
    for split in ("train", "heldout"):
      m = got[name]["splits"][split]
      assert m["documents"] == len(raw.docs(split)) > 0
      assert m["tokens"] == raw.token_count(vocab, split)
  assert got["split"]["splits"]["train"]["documents"] == 120
