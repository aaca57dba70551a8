"""Tiny corpora of every prepare input kind, and a small tokenizer.

The corpora are written by the fixtures (JSONL in two files, Parquet with
several row groups, line-per-document text, a `datasets` save_to_disk
directory); the tokenizer is a 320-piece SentencePiece model trained on
them. Everything is built once per session.
"""

import json
import random

import pytest

from demix_jax.data import sources
from demix_jax.data import tokenizer

WORDS = (
    "alpha beta gamma delta lambda theta omega sigma kappa rho 12 345 "
    "def return x = y + 1 ( ) : é ü"
).split()


def make_docs(n: int, seed: int) -> list[str]:
  rng = random.Random(seed)
  return [
      " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 60)))
      for _ in range(n)
  ]


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("corpora")
  docs = make_docs(900, 0)
  (root / "web").mkdir()
  for f in range(2):
    with open(root / "web" / f"part-{f}.jsonl", "w") as fh:
      for i, t in enumerate(docs[f * 300 : (f + 1) * 300]):
        fh.write(json.dumps({"meta": {"id": i}, "body": {"text": t}}) + "\n")
        if i % 50 == 0:
          fh.write("\n")  # blank lines are skipped
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  table = pa.table({"content": docs[600:800] + [""], "n": list(range(201))})
  pq.write_table(table, root / "code.parquet", row_group_size=40)
  (root / "notes.txt").write_text(
      "\n".join(make_docs(250, 1)) + "\n\n\n", encoding="utf-8"
  )
  import datasets  # pylint: disable=g-import-not-at-top  # test-only: writes the layout

  ds = datasets.Dataset.from_dict({"text": make_docs(300, 2)})
  datasets.DatasetDict({"train": ds}).save_to_disk(
      str(root / "hf"), max_shard_size="20KB"
  )
  return root


@pytest.fixture(scope="session")
def vocab(corpus_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("tok") / "t.model"
  return tokenizer.train_vocab(
      {"all": make_docs(600, 9)}, 320, str(out), sample_chars=60_000
  )


def source_dicts(root) -> dict[str, dict]:
  return {
      "web": {
          "kind": "jsonl",
          "paths": [f"{root}/web/*.jsonl"],
          "feature": "body.text",
          "heldout_percent": 5.0,
      },
      "code": {
          "kind": "parquet",
          "paths": [f"{root}/code.parquet"],
          "feature": "content",
          "heldout_percent": 5.0,
      },
      "notes": {
          "kind": "text",
          "paths": [f"{root}/notes.txt"],
          "unit": "line",
          "heldout_percent": 5.0,
      },
      "hf": {
          "kind": "hf_disk",
          "data_dir": f"{root}/hf",
          "split": "train",
          "heldout_percent": 5.0,
      },
  }


@pytest.fixture(scope="session")
def specs(corpus_dir):
  return {
      n: sources.spec_from_dict(n, d)
      for n, d in source_dicts(corpus_dir).items()
  }
