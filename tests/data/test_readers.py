"""Readers: glob expansion (local and through epath) and streaming reads."""

import json

import pytest

from demix_jax.data import doc_views
from demix_jax.data import readers
from demix_jax.data.errors import SourceError


@pytest.mark.parametrize(
    "pattern,want",
    [
        ("gs://b/web/*.jsonl", ("gs://b/web", "*.jsonl")),
        ("gs://b/a/**/x*.txt", ("gs://b/a", "**/x*.txt")),
        ("gs://b/web/part-?.jsonl", ("gs://b/web", "part-?.jsonl")),
        ("gs://b/x.jsonl", ("gs://b/x.jsonl", "")),
        ("/data/[ab]/*.txt", ("/data", "[ab]/*.txt")),
        ("*.txt", (".", "*.txt")),
    ],
)
def test_split_glob_searches_the_directory_of_the_pattern(pattern, want):
  assert readers.split_glob(pattern) == want


@pytest.fixture
def tree(tmp_path):
  """b/web/{1,2}.jsonl, b/web/sub/3.jsonl, b/other.jsonl, b/web/x.txt."""
  root = tmp_path / "b"
  (root / "web" / "sub").mkdir(parents=True)
  for rel in ("web/1.jsonl", "web/2.jsonl", "web/sub/3.jsonl", "other.jsonl"):
    (root / rel).write_text('{"text": "x"}\n')
  (root / "web" / "x.txt").write_text("x")
  return root


def test_epath_glob_matches_only_under_the_pattern_directory(tree):
  # The bug: the old code searched the bucket root (b) for "*.jsonl" and
  # returned other.jsonl; the directory of the pattern is b/web.
  got = sorted(readers.epath_glob(f"{tree}/web/*.jsonl"))
  assert got == [f"{tree}/web/1.jsonl", f"{tree}/web/2.jsonl"]
  nested = sorted(readers.epath_glob(f"{tree}/web/**/*.jsonl"))
  assert f"{tree}/web/sub/3.jsonl" in nested
  assert f"{tree}/other.jsonl" not in nested
  assert sorted(readers.epath_glob(f"{tree}/*/sub/*.jsonl")) == [
      f"{tree}/web/sub/3.jsonl"
  ]
  assert readers.epath_glob(f"{tree}/web/1.jsonl") == [f"{tree}/web/1.jsonl"]
  assert readers.epath_glob(f"{tree}/nope/*.jsonl") == []


def test_epath_and_local_glob_agree(tree):
  for pat in ("web/*.jsonl", "web/**/*.jsonl", "*/sub/*.jsonl"):
    local = readers.expand_globs([f"{tree}/{pat}"], "s", "paths")
    assert sorted(readers.epath_glob(f"{tree}/{pat}")) == local


def test_expand_globs_names_source_and_key(tree):
  with pytest.raises(SourceError) as e:
    readers.expand_globs([f"{tree}/web/*.parquet"], "web", "heldout_paths")
  assert e.value.source == "web" and e.value.key == "heldout_paths"


def test_line_ranges_cover_every_line_once(tmp_path):
  lines = [f"line {i} " + "y" * (i % 7) for i in range(50)]
  path = tmp_path / "a.txt"
  path.write_text("\n".join(lines) + "\n")
  size = path.stat().st_size
  for step in (1, 5, 13, size):
    got = []
    for start in range(0, size, step):
      got += list(readers.iter_text(str(path), "line", start, start + step))
    assert got == lines, step


def test_streaming_readers_match_whole_file_splits(tmp_path):
  text = "a\n\n\nb\n\nc c\n\n\n\n" + "d" * 3000 + "\n\né\n"
  path = tmp_path / "p.txt"
  path.write_text(text)
  want = [p for p in text.split("\n\n") if p.strip()]
  assert readers.read_text(str(path), "paragraph") == want
  assert readers.read_text(str(path), "file") == [text]
  recs = [{"t": {"x": f"doc {i}"}} for i in range(5)] + [{"t": {"x": ""}}]
  j = tmp_path / "a.jsonl"
  j.write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
  assert readers.read_jsonl(str(j), "t.x", "s") == [
      f"doc {i}" for i in range(5)
  ]


def test_undecodable_text_names_the_source(tmp_path):
  path = tmp_path / "bad.txt"
  path.write_bytes(b"ok\n\xff\xfe bad\n")
  with pytest.raises(SourceError) as e:
    list(readers.iter_text(str(path), "line", source="web"))
  assert e.value.source == "web" and "UTF-8" in str(e.value)


def test_raw_jsonl_and_text_sources_are_read_in_place(tmp_path):
  import pickle  # pylint: disable=g-import-not-at-top

  from demix_jax.data import line_index  # pylint: disable=g-import-not-at-top
  from demix_jax.data import sources  # pylint: disable=g-import-not-at-top

  j = tmp_path / "a.jsonl"
  texts = [f"document {i} " + "z" * (i % 5) for i in range(300)]
  j.write_text("".join(json.dumps({"text": t}) + "\n\n" for t in texts))
  t = tmp_path / "b.txt"
  t.write_text("\n".join(texts) + "\n")
  for d in (
      {"kind": "jsonl", "paths": [str(j)]},
      {"kind": "text", "paths": [str(t)], "unit": "line"},
  ):
    src = sources.Source(sources.spec_from_dict("s", d))
    train, held = src.docs("train"), src.docs("heldout")
    assert sorted(list(train) + list(held)) == sorted(texts)
    assert len(held) > 0
    # The documents are an index over the file, not a list of texts.
    assert isinstance(train, doc_views.RecordTexts)
    back = pickle.loads(pickle.dumps(train))
    assert list(back) == list(train)
  docs = line_index.LineDocs([str(j)], "text", "s")
  assert list(docs) == texts and docs[-1] == texts[-1]
  files = line_index.FileDocs([str(t), str(j)], "s")
  assert len(files) == 2 and files[0] == t.read_text()
