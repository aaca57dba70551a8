"""Tests of the SentencePiece Vocab: round trips, bytes, caching, errors."""

import pickle

import numpy as np
import pytest

from demix_jax.data import tokenizer

SAMPLES = [
    "def f(x):\n    return x  # two  spaces\n\n\tTab\n",
    "Question: Solve 58*b = 3*b - 34 for b.\nAnswer: -7",
    "  leading spaces, trailing   \n\n\n",
    "Unicode: naïve café — 数学 🙂",
]


def test_round_trip_and_byte_lengths(vocab, offline_sources):
  assert vocab.pad_id == 0 and vocab.eos_id == 1
  assert vocab.vocab_size == 512
  table = vocab.token_byte_lengths()
  texts = list(SAMPLES)
  for s in offline_sources.values():
    texts += [s.docs("train")[i] for i in range(5)]
  for text in texts:
    ids = vocab.encode(text)
    assert vocab.eos_id not in ids and vocab.pad_id not in ids
    assert vocab.decode(ids) == text
    assert int(table[ids].sum()) == len(text.encode("utf-8"))
  assert vocab.decode(vocab.encode("ab") + [1, 0, 0]) == "ab"


def test_training_is_seeded_and_cached(offline_sources, vocab, tmp_path):
  texts = {n: s.docs("train") for n, s in offline_sources.items()}
  a = tokenizer.train_vocab(
      texts, 512, str(tmp_path / "a.model"), seed=0, sample_chars=100_000
  )
  assert a.fingerprint == vocab.fingerprint  # same sample -> same model
  mtime = (tmp_path / "a.model").stat().st_mtime_ns
  again = tokenizer.train_vocab(
      texts, 512, str(tmp_path / "a.model"), seed=0, sample_chars=100_000
  )
  assert (tmp_path / "a.model").stat().st_mtime_ns == mtime  # cache hit
  assert again.fingerprint == a.fingerprint
  other = tokenizer.train_vocab(
      texts, 512, str(tmp_path / "a.model"), seed=1, sample_chars=100_000
  )
  assert other.fingerprint != a.fingerprint  # stale cache retrained


def test_pickle_and_load(vocab, tmp_path):
  clone = pickle.loads(pickle.dumps(vocab))
  assert clone.fingerprint == vocab.fingerprint
  assert clone.encode(SAMPLES[0]) == vocab.encode(SAMPLES[0])
  loaded = tokenizer.load_vocab(vocab.path)
  assert loaded.fingerprint == vocab.fingerprint
  with pytest.raises(FileNotFoundError, match="data.tokenizer.path"):
    tokenizer.load_vocab(str(tmp_path / "missing.model"))
  with pytest.raises(ValueError, match="vocab_size"):
    tokenizer.train_vocab({"a": ["x"]}, 100, str(tmp_path / "b.model"))


def test_fingerprint_check(vocab):
  tokenizer.check_fingerprint(vocab, vocab.fingerprint, "checkpoint base")
  with pytest.raises(
      tokenizer.TokenizerMismatchError,
      match="checkpoint base was made with tokenizer",
  ):
    tokenizer.check_fingerprint(vocab, "0" * 64, "checkpoint base")


def test_encode_batch_matches_encode(vocab):
  assert vocab.encode_batch(SAMPLES) == [vocab.encode(t) for t in SAMPLES]
  assert np.all(vocab.token_byte_lengths()[:3] == 0)  # pad, eos, unk
