"""Tests of the tokenizers (SentencePiece and byte-level BPE): round trips,
byte lengths, caching, special ids, file dispatch, sampling, errors."""

import hashlib
import json
import pickle

import numpy as np
import pytest

from demix_jax.data import bpe
from demix_jax.data import text_sample
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


# ------------------------------------------------------- byte-level BPE

BPE_TEXTS = SAMPLES + [
    "x = 12345 + 0.5e-3\n\n\tdef f():\n    return 'ü€😀日本語'\n",
    "\r\n windows line\r\nend",
    "",
]


@pytest.fixture(scope="module")
def bpe_vocab(offline_sources, tmp_path_factory):
  texts = {n: s.docs("train") for n, s in offline_sources.items()}
  path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
  return tokenizer.train_vocab(
      texts, 600, str(path), sample_chars=50_000, kind="bpe"
  )


def test_bpe_round_trip_byte_lengths_and_specials(bpe_vocab, offline_sources):
  assert isinstance(bpe_vocab, bpe.BpeVocab)
  assert isinstance(bpe_vocab, tokenizer.Vocab)
  assert bpe_vocab.kind == "bpe" and bpe_vocab.vocab_size == 600
  # <|endoftext|> is id 0, eos and pad (no tokenizer_config.json beside).
  assert bpe_vocab.eos_id == 0 and bpe_vocab.pad_id == 0
  table = bpe_vocab.token_byte_lengths()
  assert table[0] == 0 and table.shape == (600,)
  texts = list(BPE_TEXTS)
  for s in offline_sources.values():
    texts += [s.docs("heldout")[i] for i in range(3)]
  for text in texts:
    ids = bpe_vocab.encode(text)
    assert bpe_vocab.eos_id not in ids
    assert bpe_vocab.decode(ids) == text
    assert int(table[ids].sum()) == len(text.encode("utf-8")), text[:30]
  assert bpe_vocab.encode_batch(texts) == [bpe_vocab.encode(t) for t in texts]
  assert bpe_vocab.decode(bpe_vocab.encode("ab") + [0, 0]) == "ab"
  # Merges were learnt: code and prose take fewer ids than bytes.
  text = offline_sources["code"].docs("heldout")[0]
  assert len(bpe_vocab.encode(text)) < 0.7 * len(text.encode())


def test_bpe_byte_alphabet_is_a_bijection():
  alpha = bpe.byte_alphabet()
  assert sorted(alpha.values()) == list(range(256))
  assert alpha["A"] == 65 and alpha["\u0120"] == 32  # space -> U+0120
  from tokenizers import pre_tokenizers

  assert set(alpha) == set(pre_tokenizers.ByteLevel.alphabet())


def test_bpe_pickles_loads_and_trains_deterministically(bpe_vocab, tmp_path):
  clone = pickle.loads(pickle.dumps(bpe_vocab))
  assert clone.fingerprint == bpe_vocab.fingerprint
  assert clone.encode(BPE_TEXTS[4]) == bpe_vocab.encode(BPE_TEXTS[4])
  loaded = tokenizer.load_vocab(bpe_vocab.path)
  assert loaded.fingerprint == bpe_vocab.fingerprint
  assert (
      loaded.fingerprint
      == hashlib.sha256(open(bpe_vocab.path, "rb").read()).hexdigest()
  )
  texts = {"a": [t * 20 for t in SAMPLES]}
  a = tokenizer.train_vocab(texts, 320, str(tmp_path / "a.json"), kind="bpe")
  b = tokenizer.train_vocab(texts, 320, str(tmp_path / "b.json"), kind="bpe")
  assert a.fingerprint == b.fingerprint
  c = tokenizer.train_vocab(
      texts, 320, str(tmp_path / "a.json"), seed=1, kind="bpe"
  )
  assert c.fingerprint == a.fingerprint  # the whole corpus fits the sample


def test_load_vocab_dispatches_on_the_file(vocab, bpe_vocab, tmp_path):
  both = tmp_path / "both"
  both.mkdir()
  (both / "tokenizer.model").write_bytes(vocab.model_proto)
  (both / "tokenizer.json").write_bytes(bpe_vocab.tokenizer_json)
  assert tokenizer.load_vocab(str(both)).kind == "sentencepiece"
  (both / "tokenizer.model").unlink()
  assert tokenizer.load_vocab(str(both)).kind == "bpe"
  with pytest.raises(
      ValueError, match="data.tokenizer.path.*a bpe tokenizer.*is needed"
  ):
    tokenizer.load_vocab(str(both), kind="sentencepiece")
  (both / "tokenizer.json").unlink()
  with pytest.raises(ValueError, match="data.tokenizer.path.*holds neither"):
    tokenizer.load_vocab(str(both))
  with pytest.raises(ValueError, match="data.tokenizer.path.*neither"):
    tokenizer.load_vocab(__file__)
  bad = tmp_path / "bad.json"
  bad.write_text('{"not": "a tokenizer"}')
  with pytest.raises(ValueError, match="data.tokenizer.path.*not a tokenizers"):
    tokenizer.load_vocab(str(bad))
  # A tokenizer.json that is not byte-level (SentencePiece-style, what
  # demix_jax exports beside a .model) is refused by name.
  from demix_jax.interop import sp_tokenizer

  sp_json = tmp_path / "sp.json"
  sp_json.write_text(json.dumps(sp_tokenizer.tokenizer_json(vocab.model_proto)))
  with pytest.raises(ValueError, match="not a byte-level BPE"):
    tokenizer.load_vocab(str(sp_json))


def test_bpe_special_ids_from_tokenizer_config(bpe_vocab, tmp_path):
  spec = json.loads(bpe_vocab.tokenizer_json)
  spec["added_tokens"].append(
      {
          "id": 600,
          "content": "<|im_end|>",
          "single_word": False,
          "lstrip": False,
          "rstrip": False,
          "normalized": False,
          "special": True,
      }
  )
  d = tmp_path / "tok"
  d.mkdir()
  (d / "tokenizer.json").write_text(json.dumps(spec))
  v = tokenizer.load_vocab(str(d))
  assert (v.vocab_size, v.eos_id, v.pad_id) == (601, 0, 0)
  (d / "tokenizer_config.json").write_text(
      json.dumps({"eos_token": "<|im_end|>", "pad_token": None})
  )
  v = tokenizer.load_vocab(str(d))
  assert (v.eos_id, v.pad_id) == (600, 600)
  assert v.token_byte_lengths()[600] == 0
  (d / "tokenizer_config.json").write_text(
      json.dumps(
          {"eos_token": {"content": "<|im_end|>"}, "pad_token": "<|endoftext|>"}
      )
  )
  v = tokenizer.load_vocab(str(d))
  assert (v.eos_id, v.pad_id) == (600, 0)
  assert pickle.loads(pickle.dumps(v)).eos_id == 600
  (d / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|x|>"}))
  with pytest.raises(ValueError, match="eos_token '<\\|x\\|>' is not a token"):
    tokenizer.load_vocab(str(d))
  (d / "tokenizer_config.json").unlink()
  spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] != 0]
  spec["added_tokens"][0]["id"] = 600
  spec["model"]["vocab"]["<|im_end|>"] = 600
  (d / "tokenizer.json").write_text(json.dumps(spec))
  with pytest.raises(ValueError, match="no end-of-text token"):
    tokenizer.load_vocab(str(d))


# ------------------------------------------------------------- sampling


def test_stream_sample_is_bounded_seeded_and_order_free():
  docs = [f"document {i} " * (i % 7 + 1) for i in range(5000)]
  a = text_sample.sample_texts(iter(docs), 4000, seed=0)
  assert sum(map(len, a)) == 4000
  assert len(set(a[:-1]) - set(docs)) == 0  # whole documents, last one cut
  assert a == text_sample.sample_texts(list(reversed(docs)), 4000, seed=0)
  b = text_sample.sample_texts(iter(docs), 4000, seed=1)
  assert set(a) != set(b)
  # Spread over the stream, not its head.
  idx = sorted(int(t.split()[1]) for t in a[:-1])
  assert idx[0] < 1000 and idx[-1] > 4000
  # The whole stream when it is smaller than the budget.
  small = text_sample.sample_texts(iter(docs[:10]), 10**6, seed=0)
  assert sorted(small) == sorted(docs[:10])


def test_stream_sample_never_holds_the_stream():
  """A generator of 20,000 documents; the sampler's heap never holds more
  than the sample (checked through the documents still referenced)."""
  import gc
  import weakref

  class Doc(str):
    pass

  alive = weakref.WeakSet()

  def docs():
    for i in range(20_000):
      d = Doc(f"text number {i} " * 3)
      alive.add(d)
      yield d
      if i % 5000 == 4999:
        gc.collect()
        assert len(alive) < 200  # the sample (~120 docs) plus a few

  out = text_sample.sample_texts(docs(), 5_000, seed=0)
  assert sum(map(len, out)) == 5_000


def test_shuffle_sampler_needs_a_sequence():
  assert text_sample.sample_texts(["ab", "cd"], 3, 0, "shuffle") in (
      ["ab", "c"],
      ["cd", "a"],
  )
  with pytest.raises(ValueError, match="sampler='shuffle'.*stream"):
    text_sample.sample_texts(iter(["ab"]), 3, 0, "shuffle")
  with pytest.raises(ValueError, match="data.tokenizer.sampler"):
    text_sample.sample_texts(["ab"], 3, 0, "random")
  with pytest.raises(ValueError, match="data.tokenizer.kind"):
    tokenizer.train_vocab({"a": ["ab"]}, 400, "/nonexistent/x", kind="wp")


def test_bpe_feeds_the_grain_loaders(offline_sources, bpe_vocab):
  """Training rows (in worker processes, which receive the vocab pickled)
  and held-out rows with bytes for bits per byte, from a byte-level BPE."""
  from demix_jax.data import pipeline

  w = {"general": 0.5, "math": 0.3, "code": 0.2}
  it = pipeline.make_train_iterator(
      offline_sources, w, bpe_vocab, 64, 4, 0, worker_count=2
  )
  tokens = np.concatenate([next(it)["tokens"] for _ in range(5)])
  assert tokens.shape == (20, 64)
  assert tokens.max() < bpe_vocab.vocab_size
  assert (tokens == bpe_vocab.eos_id).any()  # document ends (math's are short)
  src = offline_sources["code"]
  rows = pipeline.heldout_sequences(src, bpe_vocab, 64, 3)
  first = src.docs("heldout")
  toks = rows["tokens"][0]
  seg = rows["segment_ids"][0]
  n = int((seg == 1).sum()) - 1  # the first document, without its EOS
  text = bpe_vocab.decode(toks[:n])
  assert any(d.startswith(text) for d in first)
  assert int(rows["token_bytes"][0][:n].sum()) == len(text.encode())


def test_workspace_takes_either_kind_and_names_the_field(bpe_vocab, tmp_path):
  import demix_jax as dx
  from demix_jax import workspace

  config = dx.load_config("demo:runlocal")
  config.model.vocab_size = 640  # the BPE has 600 ids
  config.data.tokenizer.path = bpe_vocab.path
  ws = workspace.Workspace(dx.resolve(config), str(tmp_path / "a"))
  assert (
      ws.data.vocab.kind == "bpe"
      and ws.data.vocab.fingerprint == bpe_vocab.fingerprint
  )
  (tmp_path / "empty").mkdir()
  config.data.tokenizer.path = str(tmp_path / "empty")
  ws = workspace.Workspace(dx.resolve(config), str(tmp_path / "b"))
  with pytest.raises(
      dx.ConfigError, match="data.tokenizer.path.*holds neither"
  ):
    _ = ws.data.vocab
  config.data.tokenizer.kind = "wordpiece"
  with pytest.raises(dx.ConfigError, match="data.tokenizer.kind"):
    dx.resolve(config)


def test_workspace_trains_a_bpe_when_asked(tmp_path):
  import demix_jax as dx
  from demix_jax import workspace

  config = dx.load_config("demo:runlocal")
  config.data.offline_max_docs = 60
  config.data.tokenizer.kind = "bpe"
  config.data.tokenizer.sampler = "stream"
  ws = workspace.Workspace(dx.resolve(config), str(tmp_path))
  vocab = ws.data.vocab
  assert vocab.kind == "bpe" and vocab.vocab_size == 512
  assert vocab.path == str(tmp_path / "data" / "tokenizer.json")
  assert not (tmp_path / "data" / "tokenizer.model").exists()
  meta = json.loads((tmp_path / "data" / "tokenizer.json.json").read_text())
  assert (meta["kind"], meta["sampler"]) == ("bpe", "stream")
  again = workspace.Workspace(dx.resolve(config), str(tmp_path)).data.vocab
  assert again.fingerprint == vocab.fingerprint
