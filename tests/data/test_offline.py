"""Tests of the offline corpora: determinism and split hygiene."""

import hashlib
import os
import subprocess
import sys

import pytest

from demix_jax.data import crawl
from demix_jax.data import offline

_SNIPPET = (
    "import hashlib; from demix_jax.data import offline; "
    "h = hashlib.sha256(); "
    "[h.update(t.encode()) for _, t in offline.iter_documents('math', "
    "'{split}', 40)]; print(h.hexdigest())"
)


def _math_hash(split, hashseed):
  env = dict(os.environ, PYTHONHASHSEED=str(hashseed))
  root = os.path.dirname(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  )
  out = subprocess.run(
      [sys.executable, "-c", _SNIPPET.format(split=split)],
      env=env,
      cwd=root,
      capture_output=True,
      text=True,
      check=True,
  )
  return out.stdout.strip().splitlines()[-1]


def test_math_is_deterministic_across_hash_seeds():
  # Without the shim's sorting, set iteration order (PYTHONHASHSEED and
  # object ids) changes the generated problems.
  assert _math_hash("train", 1) == _math_hash("train", 2)


def test_math_format_and_split_modules():
  train = list(offline.iter_documents("math", "train", 5))
  assert all(t.startswith("Question: ") and "\nAnswer: " in t for _, t in train)
  assert len(train) == 5


def test_code_split_is_test_package():
  train = offline.code_files("train")
  held = offline.code_files("heldout")
  assert len(train) > 300 and len(held) > 300
  assert not set(train) & set(held)
  assert all(p.split(os.sep)[0] == "test" for p in held)
  assert not any(p.split(os.sep)[0] in ("test", "site-packages") for p in train)


def test_split_passages_keeps_all_text():
  text = "a" * 10 + "\n\n" + "b" * 2500 + "\n\n" + "c" * 900 + "\n\n" + "d"
  parts = offline.split_passages(text, max_chars=3000)
  assert "\n\n".join(parts) == text
  assert len(parts) == 2


def test_builder_is_cached(cache_dir):
  b1 = offline.build("code", cache_dir, max_docs=30)
  b2 = offline.build("code", cache_dir, max_docs=30)
  assert b1.data_dir == b2.data_dir
  d1 = b1.as_data_source("train")
  assert len(d1) == 30
  texts = [d1[i]["text"] for i in range(len(d1))]
  assert (
      hashlib.sha256(b"".join(texts)).hexdigest()
      == hashlib.sha256(
          b"".join(b2.as_data_source("train")[i]["text"] for i in range(30))
      ).hexdigest()
  )


_PASSAGES = [
    (
        f"Title{i}/0",
        f"The article number {i} describes something. It has several "
        "sentences about history and science. Another sentence follows "
        "here. Finally the passage ends with a conclusion.",
    )
    for i in range(3)
]


def test_crawl_is_copies_of_near_duplicate_wiki_pages(monkeypatch):
  monkeypatch.setattr(offline, "wiki_documents", lambda split: iter(_PASSAGES))
  train = list(offline.iter_documents("crawl", "train"))
  held = list(offline.iter_documents("crawl", "heldout"))
  assert len(train) == crawl.COPIES["typo"] * len(_PASSAGES)
  assert len(held) == len(_PASSAGES)
  # Copy-major: the first pages cover every passage once.
  assert [k for k, _ in train[:3]] == [f"Title{i}/0/0" for i in range(3)]
  assert train == list(offline.iter_documents("crawl", "train"))
  pages = [t for k, t in train if k.startswith("Title0/")]
  assert len(set(pages)) == crawl.COPIES["typo"]  # near, not exact, copies
  words = set(crawl.WORD.findall(_PASSAGES[0][1]))
  for page in pages:
    lines = page.split("\n")
    assert lines[0] in crawl.HEADERS
    assert lines[1] in crawl.BANNERS
    assert lines[-1] in crawl.FOOTERS
    assert lines[-2].startswith("Tags: ")
    body = crawl.WORD.findall(lines[2])
    # Every word is the passage's, or one with two letters swapped.
    for w in body:
      assert w in words or any(
          sorted(w) == sorted(x) and len(w) == len(x) for x in words
      ), w


def test_crawl_page_is_deterministic_and_misspells_some_words():
  text = " ".join(["Something"] * 400) + "."
  a = crawl.page("k", text, 0)
  assert a == crawl.page("k", text, 0)
  assert a != crawl.page("k", text, 1)
  body = crawl.WORD.findall(a.split("\n")[2])
  swapped = sum(w != "Something" for w in body) / len(body)
  assert 0.02 < swapped < 0.2  # crawl.TYPO_PERCENT["typo"] = 8
  spam = crawl.page("k", text, 0, "spam")
  body = crawl.WORD.findall(spam.split("\n")[2])
  swapped = sum(w != "Something" for w in body) / len(body)
  assert 0.15 < swapped < 0.35  # crawl.TYPO_PERCENT["spam"] = 25
  with pytest.raises(ValueError, match="crawl style"):
    crawl.page("k", text, 0, "junk")


def test_spam_pages_shuffle_the_words_of_each_sentence():
  words = [
      f"Word{chr(97 + i)}{chr(97 + j)}" for i in range(20) for j in range(5)
  ]
  text = " ".join(words) + "."
  for c in range(4):
    typo = crawl.page("k", text, c).split("\n")[2].replace(".", "").split()
    spam = crawl.page("k", text, c, "spam").split("\n")[2]
    got = spam.replace(".", "").split()
    # The same words up to the typos (two letters swapped), another order;
    # the typo style keeps the order.
    assert sorted(map(sorted, got)) == sorted(map(sorted, words))
    assert sum(a == b for a, b in zip(got, words)) < len(words) // 4
    assert sum(a == b for a, b in zip(typo, words)) > len(words) // 2


def test_crawl_spam_corpus_is_the_spam_style_of_the_same_pages(monkeypatch):
  monkeypatch.setattr(offline, "wiki_documents", lambda split: iter(_PASSAGES))
  typo = list(offline.iter_documents("crawl", "train"))
  spam = list(offline.iter_documents("crawl_spam", "train"))
  assert [k for k, _ in spam] == [k for k, _ in typo]
  for (key, t), (_, s) in zip(typo, spam):
    name, _, copy = key.rpartition("/")
    passage = dict(_PASSAGES)[name]
    assert t == crawl.page(name, passage, int(copy))
    assert s == crawl.page(name, passage, int(copy), "spam")


def test_junk_tiers_are_boilerplate_and_tag_pages_of_the_same_passages(
    monkeypatch,
):
  monkeypatch.setattr(offline, "wiki_documents", lambda split: iter(_PASSAGES))
  words = {w.lower() for _, p in _PASSAGES for w in crawl.WORD.findall(p)}
  boiler = list(offline.iter_documents("crawl_boiler", "train"))
  tags = list(offline.iter_documents("crawl_tags", "train"))
  assert len(boiler) == crawl.COPIES["boiler"] * len(_PASSAGES)
  assert len(tags) == crawl.COPIES["tags"] * len(_PASSAGES)
  assert len(list(offline.iter_documents("crawl_tags", "heldout"))) == 3
  sentences = {
      s for _, p in _PASSAGES for s in p.replace(". ", ".|").split("|")
  }
  for _, page in boiler:
    lines = page.split("\n")
    assert lines[0] in crawl.HEADERS and lines[1] in crawl.HEADERS
    assert lines[2] in crawl.BANNERS and lines[4] in crawl.BANNERS
    assert lines[-1] in crawl.FOOTERS and lines[-2] in crawl.FOOTERS
    # One sentence of the passage (no typos: its words have < 8 letters
    # swapped only by chance, so compare letters), nothing else of it.
    body = lines[3]
    assert any(sorted(body) == sorted(s) for s in sentences), body
  for _, page in tags:
    lines = page.split("\n")
    assert lines[0] in crawl.HEADERS and lines[-1] in crawl.FOOTERS
    assert len(lines) == crawl.TAG_LINES + 2
    for line in lines[1:-1]:
      drawn = line.removeprefix("Tags: ").split(", ")
      assert len(drawn) == crawl.TAGS_PER_LINE
      assert set(drawn) <= words
  with pytest.raises(ValueError, match="crawl style"):
    list(crawl.documents(iter(_PASSAGES), True, "junk"))
