"""Raw Parquet, Arrow (hf_disk) and paragraph-text sources read in place.

Each in-place reader is compared with the whole-file reading it replaces
(the same documents, in the same order), resumed from an iterator state
mid-file, and split across hosts.
"""

import json
import pickle
import threading

import numpy as np
import pytest

from demix_jax.data import column_index
from demix_jax.data import doc_views
from demix_jax.data import line_index
from demix_jax.data import pipeline
from demix_jax.data import readers
from demix_jax.data import sources
from demix_jax.data.errors import SourceError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

T = 32


class ByteVocab:
  """Bytes + 2 as ids, EOS 1: enough of `tokenizer.Vocab` for the loader."""

  eos_id = 1

  def encode(self, text):
    return [b + 2 for b in text.encode("utf-8")]


def _texts(n, seed=0, empty_every=0):
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    if empty_every and i % empty_every == 0:
      out.append("" if i % (2 * empty_every) else None)
    else:
      out.append(f"doc {seed}-{i} é " + "w" * int(rng.integers(0, 40)))
  return out


def _write_parquet(path, texts, row_group_size):
  table = pa.table({"id": list(range(len(texts))), "text": texts})
  pq.write_table(table, str(path), row_group_size=row_group_size)


def _whole_parquet(paths, field="text"):
  """The old reading: every file whole, falsy values dropped."""
  return [
      t for p in paths for t in pq.read_table(str(p)).column(field).to_pylist()
      if t
  ]  # fmt: skip


@pytest.fixture()
def parquet_files(tmp_path):
  a, b, c = (tmp_path / f"{x}.parquet" for x in "abc")
  _write_parquet(a, _texts(230, 0), 50)  # no empty value: metadata only
  _write_parquet(b, _texts(170, 1, empty_every=7), 40)  # empties and nulls
  _write_parquet(c, [None] * 30 + _texts(45, 2), 30)  # an all-null group
  return [a, b, c]


def test_parquet_docs_equal_the_whole_file_reading(parquet_files):
  paths = [str(p) for p in parquet_files]
  docs = column_index.ParquetDocs(paths, "text", "web", cache_blocks=2)
  want = _whole_parquet(paths)
  assert len(docs) == len(want)
  assert list(docs) == want  # order, content and count
  assert docs[-1] == want[-1] and docs[3:9] == want[3:9]
  rng = np.random.default_rng(0)
  for i in rng.permutation(len(want))[:60]:  # random access
    assert docs[int(i)] == want[i]
  with pytest.raises(IndexError):
    docs[len(want)]  # pylint: disable=pointless-statement
  # Blocks: 5 + 5 + 2 row groups hold documents (the all-null one none).
  assert docs.num_blocks == 12
  assert len(docs._cache) <= 2  # pylint: disable=protected-access
  back = pickle.loads(pickle.dumps(docs))
  assert list(back) == want


def test_parquet_index_reads_no_data_where_statistics_suffice(
    parquet_files, monkeypatch
):
  reads = []
  real = pq.ParquetFile.read_row_group

  def counting(self, i, *args, **kwargs):
    reads.append(i)
    return real(self, i, *args, **kwargs)

  monkeypatch.setattr(pq.ParquetFile, "read_row_group", counting)
  column_index.ParquetDocs([str(parquet_files[0])], "text", "web")
  assert not reads  # 5 row groups indexed from the footer alone
  column_index.ParquetDocs([str(parquet_files[1])], "text", "web")
  assert reads  # groups that may hold empty rows are read once


def test_parquet_reads_from_several_threads(parquet_files):
  paths = [str(p) for p in parquet_files]
  docs = column_index.ParquetDocs(paths, "text", "web", cache_blocks=1)
  want = _whole_parquet(paths)
  got = {}

  def read(t):
    order = np.random.default_rng(t).permutation(len(want))
    got[t] = [(int(i), docs[int(i)]) for i in order]

  threads = [threading.Thread(target=read, args=(t,)) for t in range(4)]
  for th in threads:
    th.start()
  for th in threads:
    th.join()
  for pairs in got.values():
    assert all(want[i] == text for i, text in pairs)


def test_parquet_bad_column_names_feature(tmp_path):
  path = tmp_path / "p.parquet"
  _write_parquet(path, _texts(10), 5)
  for field in ("body", "id"):  # missing, and not text
    with pytest.raises(SourceError) as e:
      column_index.ParquetDocs([str(path)], field, "web")
    assert e.value.source == "web" and e.value.key == "feature"


def _source(name, **d):
  return sources.Source(sources.spec_from_dict(name, d))


def test_parquet_source_splits_equal_the_old_in_memory_split(parquet_files):
  paths = [str(p) for p in parquet_files]
  src = _source(
      "p", kind="parquet", paths=paths, feature="text", heldout_percent=20.0
  )
  whole = _whole_parquet(paths)
  train, held = src.docs("train"), src.docs("heldout")
  assert isinstance(train, doc_views.RecordTexts)
  assert list(train) == [t for t in whole if not sources.is_heldout(t, 20.0)]
  assert list(held) == [t for t in whole if sources.is_heldout(t, 20.0)]
  assert len(held) > 0


def _paragraph_text():
  # Separators and multi-byte characters across the 1 MiB read chunks.
  chunk = 1 << 20
  parts = ["a\n\n\nb\n\nc c\n\n\n\n", " \n\n\t\n\n"]
  text = "".join(parts)
  for end in ("\n", "\n\n", "\n\n\n", "é", "\u3000\n\n"):
    pad = chunk - len(text.encode()) % chunk - len(end) + 1
    text += "x" * max(pad, 0) + end + "y z\n\n"
  return text + "last é\n"


def test_paragraph_docs_equal_the_whole_file_split(tmp_path):
  texts = [_paragraph_text(), "one\n\ntwo", "\n\n\n\nonly\n\n\n", "solo"]
  paths = []
  for i, t in enumerate(texts):
    p = tmp_path / f"t{i}.txt"
    p.write_text(t, encoding="utf-8")
    paths.append(str(p))
  want = [q for t in texts for q in t.split("\n\n") if q.strip()]
  docs = line_index.ParagraphDocs(paths, "notes")
  assert len(docs) == len(want)
  assert list(docs) == want
  assert docs[-1] == "solo" and docs[-2] == "only"
  got = [d for p in paths for d in readers.iter_text(p, "paragraph")]
  assert got == want  # prepare's streaming reader agrees
  parts = [d for _, d in readers.iter_paragraphs(paths[0])]
  assert parts == [q.encode() for q in texts[0].split("\n\n")]
  assert list(pickle.loads(pickle.dumps(docs))) == want


def test_paragraph_docs_bad_utf8_names_the_source(tmp_path):
  path = tmp_path / "bad.txt"
  path.write_bytes(b"fine\n\nbad \xff here\n\nok")
  with pytest.raises(SourceError) as e:
    line_index.ParagraphDocs([str(path)], "notes")
  assert e.value.source == "notes" and "byte 10" in str(e.value)


def test_paragraph_source_splits_equal_the_old_in_memory_split(tmp_path):
  text = "\n\n".join(t for t in _texts(300, 4) if t) + "\n"
  (tmp_path / "p.txt").write_text(text)
  src = _source(
      "notes", kind="text", paths=str(tmp_path / "p.txt"), unit="paragraph"
  )
  whole = [q for q in text.split("\n\n") if q.strip()]
  train = src.docs("train")
  assert isinstance(train, doc_views.RecordTexts)
  assert list(train) == [t for t in whole if not sources.is_heldout(t, 1.0)]
  assert list(src.docs("heldout")) == [
      t for t in whole if sources.is_heldout(t, 1.0)
  ]


def _save_hf(tmp_path, texts):
  datasets = pytest.importorskip("datasets")
  d = tmp_path / "hf"
  ds = datasets.Dataset.from_dict({"text": texts})
  datasets.DatasetDict({"train": ds}).save_to_disk(str(d), max_shard_size=2000)
  return d


def test_hf_disk_reads_batches_in_place(tmp_path):
  texts = _texts(400, 5, empty_every=9)
  d = _save_hf(tmp_path, texts)
  files = readers.hf_arrow_files(str(d), "train", "hf")
  assert len(files) > 1
  want = [t for f in files for t in readers.iter_arrow(f, "text", "hf")]
  assert want == [t for t in texts if t]
  docs = column_index.ArrowDocs(files, "text", "hf", cache_blocks=1)
  assert list(docs) == want
  assert docs[len(want) // 2] == want[len(want) // 2]
  assert list(pickle.loads(pickle.dumps(docs))) == want
  src = _source("hf", kind="hf_disk", data_dir=str(d), heldout_percent=10.0)
  assert list(src.docs("train")) == [
      t for t in want if not sources.is_heldout(t, 10.0)
  ]


def test_arrow_file_format_is_read_by_batch(tmp_path):
  texts = [t for t in _texts(90, 6, empty_every=4)]
  table = pa.table({"text": texts})
  path = str(tmp_path / "f.arrow")
  with pa.ipc.new_file(path, table.schema) as w:
    for batch in table.to_batches(max_chunksize=25):
      w.write_batch(batch)
  docs = column_index.ArrowDocs([path], "text", "hf")
  assert list(docs) == [t for t in texts if t] and docs.num_blocks == 4


def _loader(src, process_index=0, process_count=1, batch=4):
  return pipeline.make_train_iterator(
      {"s": src},
      {"s": 1.0},
      ByteVocab(),
      T,
      batch,
      seed=5,
      process_index=process_index,
      process_count=process_count,
      prefetch=0,
  )


def _paragraph_source(tmp_path):
  text = "\n\n".join(t for t in _texts(200, 7) if t)
  (tmp_path / "p.txt").write_text(text)
  return _source("n", kind="text", paths=str(tmp_path / "p.txt"),
                 unit="paragraph")  # fmt: skip


@pytest.mark.parametrize("kind", ["parquet", "paragraph"])
def test_loader_resumes_exactly_from_a_mid_file_state(
    kind, parquet_files, tmp_path
):
  if kind == "parquet":
    paths = [str(p) for p in parquet_files]
    src = _source("s", kind="parquet", paths=paths, feature="text")
  else:
    src = _paragraph_source(tmp_path)
  it = _loader(src)
  for _ in range(7):
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # as a checkpoint saves it
  want = [next(it)["tokens"] for _ in range(5)]
  again = _loader(src)
  again.set_state(state)
  for w in want:
    np.testing.assert_array_equal(next(again)["tokens"], w)


def test_hosts_read_disjoint_row_groups_and_together_all(parquet_files):
  paths = [str(p) for p in parquet_files]
  docs = column_index.ParquetDocs(paths, "text", "web")
  blocks = docs.doc_blocks()
  want = list(docs)
  for count in (2, 3):
    shards = [doc_views.host_shard(docs, h, count) for h in range(count)]
    host_blocks = [set(s.doc_blocks().tolist()) for s in shards]
    for h in range(count):
      for g in range(h + 1, count):
        assert not host_blocks[h] & host_blocks[g]  # no group on two hosts
    assert sorted(x for s in shards for x in s) == sorted(want)
    assert sum(len(s) for s in shards) == len(want)
    for s, b in zip(shards, host_blocks):  # whole row groups per host
      assert sum(int(np.sum(blocks == x)) for x in b) == len(s)
  # Fewer row groups than hosts: split by document instead.
  few = column_index.ParquetDocs([paths[2]], "text", "web")
  assert few.num_blocks == 2
  shards = [list(doc_views.host_shard(few, h, 3)) for h in range(3)]
  assert shards == [list(few)[h::3] for h in range(3)]


def test_hosts_of_a_parquet_source_stream_disjoint_rows(parquet_files):
  paths = [str(p) for p in parquet_files]
  src = _source("s", kind="parquet", paths=paths, feature="text")
  rows = []
  for h in range(2):
    it = _loader(src, h, 2, batch=8)
    rows.append({r.tobytes() for _ in range(3) for r in next(it)["tokens"]})
  assert len(rows[0]) == len(rows[1]) == 12
  assert not rows[0] & rows[1]


def test_other_sources_split_by_document_as_before(tmp_path):
  j = tmp_path / "a.jsonl"
  j.write_text("".join(json.dumps({"text": f"d{i}"}) + "\n" for i in range(9)))
  docs = line_index.LineDocs([str(j)], "text", "s")
  assert doc_views.host_shard(docs, 0, 1) is docs
  for h in range(2):
    assert list(doc_views.host_shard(docs, h, 2)) == list(docs)[h::2]


def test_capped_views_do_not_copy(tmp_path):
  j = tmp_path / "a.jsonl"
  j.write_text("".join(json.dumps({"text": f"d{i}"}) + "\n" for i in range(9)))
  docs = line_index.LineDocs([str(j)], "text", "s")
  head = doc_views.capped(docs, 4)
  assert isinstance(head, doc_views.RecordTexts)
  assert list(head) == ["d0", "d1", "d2", "d3"]
  assert doc_views.capped(["a", "b", "c"], 2) == ["a", "b"]


def test_many_files_keep_few_handles_open(tmp_path):
  paths = []
  for k in range(12):
    paths.append(str(tmp_path / f"{k}.parquet"))
    _write_parquet(paths[-1], [f"{k}-{i}" for i in range(5)], 5)
  docs = column_index.ParquetDocs(paths, "text", "web")
  want = [f"{k}-{i}" for k in range(12) for i in range(5)]
  assert [docs[i] for i in reversed(range(len(docs)))] == want[::-1]
  assert list(docs) == want
  assert len(docs._handles) <= 8  # pylint: disable=protected-access


def test_object_store_files_are_read_as_python_streams(
    tmp_path, parquet_files, monkeypatch
):
  """The non-local branch (gs:// and the like): file objects, no download."""
  from demix_jax import storage  # pylint: disable=g-import-not-at-top

  texts = _texts(120, 8, empty_every=5)
  d = _save_hf(tmp_path, texts)
  files = readers.hf_arrow_files(str(d), "train", "hf")
  want_arrow = [t for t in texts if t]
  paths = [str(p) for p in parquet_files]
  want_parquet = _whole_parquet(paths)
  monkeypatch.setattr(storage, "is_local", lambda path: False)
  assert [t for f in files for t in readers.iter_arrow(f, "text", "hf")] == (
      want_arrow
  )
  arrow = column_index.ArrowDocs(files, "text", "hf", cache_blocks=1)
  assert list(arrow) == want_arrow
  assert list(column_index.ParquetDocs(paths, "text", "web")) == want_parquet
