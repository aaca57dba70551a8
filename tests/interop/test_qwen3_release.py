"""A directory in the released Qwen3 layout, written by transformers itself.

The fixture builds what a Qwen3 release on the Hub holds, offline and tiny:
a byte-level BPE trained by `tokenizers` (NFC, a word-splitting regex and
the byte-level pre-tokenizer, special tokens after the vocabulary as Qwen3
numbers them) saved through `transformers` (tokenizer.json and
tokenizer_config.json naming <|endoftext|> as eos and pad), and a
Qwen3ForCausalLM saved with `save_pretrained(max_shard_size="20KB")`
(sharded model-0000X-of-0000Y.safetensors with their index). demix_jax
imports it: weights give transformers' logits, the tokenizer gives
AutoTokenizer's ids, and the pipeline's base starts from it.
"""

import inspect
import json
import textwrap
import unicodedata

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import demix_jax as dx
from demix_jax import models
from demix_jax.data import tokenizer as tokenizer_lib
from demix_jax.interop import hf
from demix_jax.interop import hf_config
from demix_jax.interop import safetensors_np
from demix_jax.training import checkpointing

ATOL = 1e-4  # the parity tolerance of test_hf.py
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Qwen2/Qwen3's pre-tokenizer pattern (contractions, letters with one
# leading non-letter, single digits, punctuation runs, newlines, spaces).
SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TEXTS = [
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n\n\tx = f(10)\r\n",
    "Unicode: naïve café — 数学 🙂 ü€😀日本語 and e\u0301 (decomposed)",
    "  leading spaces, trailing   \n\n\n",
    "Question: Solve 58*b = 3*b - 34 for b.\nAnswer: -7",
    "text with a literal <|endoftext|> inside",
    "",
]


def _train_tokenizer():
  from tokenizers import Regex
  from tokenizers import Tokenizer
  from tokenizers import decoders
  from tokenizers import models as tok_models
  from tokenizers import normalizers
  from tokenizers import pre_tokenizers
  from tokenizers import trainers

  tok = Tokenizer(tok_models.BPE())
  tok.normalizer = normalizers.NFC()
  tok.pre_tokenizer = pre_tokenizers.Sequence(
      [
          pre_tokenizers.Split(Regex(SPLIT), behavior="isolated"),
          pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
      ]
  )
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=380,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False,
  )
  corpus = [inspect.getsource(m)[:3000] for m in (json.decoder, textwrap)]
  corpus += ["naïve café — 数学 🙂 日本語 " * 20]
  tok.train_from_iterator(corpus, trainer)
  tok.add_special_tokens(list(SPECIALS))  # ids after the vocabulary
  return tok


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  d = tmp_path_factory.mktemp("qwen3_release")
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=_train_tokenizer(),
      eos_token="<|endoftext|>",
      pad_token="<|endoftext|>",
  )
  fast.save_pretrained(str(d))
  eos = fast.convert_tokens_to_ids("<|endoftext|>")
  config = transformers.Qwen3Config(
      vocab_size=400,  # more rows than ids, as Qwen3 has
      hidden_size=48,
      intermediate_size=80,
      num_hidden_layers=2,
      num_attention_heads=4,
      num_key_value_heads=2,
      head_dim=16,
      max_position_embeddings=256,
      rms_norm_eps=1e-5,
      rope_theta=5_000.0,
      tie_word_embeddings=True,
      eos_token_id=eos,
      pad_token_id=eos,
  )
  torch.manual_seed(0)
  model = transformers.Qwen3ForCausalLM(config).eval()
  with torch.no_grad():  # weights at a scale where every one shows
    for name, p in model.named_parameters():
      p.normal_(0.0, 0.2)
      if "norm" in name:
        p.add_(1.0)
  model.save_pretrained(str(d), max_shard_size="20KB")
  return {"dir": d, "model": model, "torch": torch, "hf_tok": fast}


def test_the_fixture_is_the_released_layout(release):
  d = release["dir"]
  names = {p.name for p in d.iterdir()}
  assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= names
  assert safetensors_np.INDEX_NAME in names
  assert "tokenizer.model" not in names
  shards = sorted(n for n in names if n.endswith(".safetensors"))
  assert len(shards) > 2 and all("-of-" in n for n in shards)


def test_tokenizer_ids_equal_autotokenizer(release, sp_vocab):
  transformers = pytest.importorskip("transformers")
  d = release["dir"]
  auto = transformers.AutoTokenizer.from_pretrained(str(d))
  vocab = tokenizer_lib.load_vocab(str(d))
  assert vocab.kind == "bpe" and vocab.path == str(d / "tokenizer.json")
  assert vocab.vocab_size == len(auto) == 383
  assert vocab.eos_id == auto.eos_token_id == 380
  assert vocab.pad_id == auto.pad_token_id == 380
  table = vocab.token_byte_lengths()
  for text in TEXTS:
    ids = vocab.encode(text)
    assert ids == auto.encode(text, add_special_tokens=False), text
    assert vocab.decode(ids) == auto.decode(ids, skip_special_tokens=True)
    if "<|" not in text:
      nfc = unicodedata.normalize("NFC", text)
      assert int(table[ids].sum()) == len(nfc.encode())
  assert vocab.encode_batch(TEXTS) == [vocab.encode(t) for t in TEXTS]
  info = hf_config.check_vocab(d, hf_config.model_config_from_hf(d), vocab)
  assert info["kind"] == "bpe" and info["size"] == 383
  assert (info["eos_id"], info["pad_id"]) == (380, 380)
  assert info["fingerprint"] == vocab.fingerprint
  with pytest.raises(hf_config.HFCheckpointError, match="no tokenizer.model"):
    hf_config.check_vocab(d, hf_config.model_config_from_hf(d), sp_vocab)


def test_import_gives_transformers_logits(release):
  d, model, torch = release["dir"], release["model"], release["torch"]
  cfg = hf_config.model_config_from_hf(d)
  assert (cfg.vocab_size, cfg.n_layers, cfg.tie_embeddings) == (400, 2, True)
  vocab = tokenizer_lib.load_vocab(str(d))
  params = hf.load_params(d, cfg, vocab=vocab)
  rows = [vocab.encode(t)[:24] for t in TEXTS[:4]]
  n = min(map(len, rows))
  tokens = np.asarray([r[:n] for r in rows], np.int32)
  pos = np.broadcast_to(np.arange(n, dtype=np.int32), tokens.shape)
  ours = np.asarray(
      models.forward(
          cfg,
          params,
          jnp.asarray(tokens),
          jnp.asarray(pos),
          jnp.ones_like(jnp.asarray(tokens)),
      )
  )
  with torch.no_grad():
    theirs = model(input_ids=torch.tensor(tokens.astype(np.int64))).logits
  assert np.abs(ours).max() > 1.0  # logits large enough to be telling
  np.testing.assert_allclose(ours, theirs.numpy(), atol=ATOL, rtol=0)


def test_export_of_the_import_keeps_the_tokenizer(release, tmp_path):
  transformers = pytest.importorskip("transformers")
  d = release["dir"]
  cfg = hf_config.model_config_from_hf(d)
  meta = hf.import_as_run(d, tmp_path / "run")
  vocab = tokenizer_lib.load_vocab(str(d))
  assert meta["tokenizer_fingerprint"] == vocab.fingerprint
  params = checkpointing.load_params(tmp_path / "run")
  files = hf.export_params(params, cfg, tmp_path / "out", tokenizer=vocab)
  assert "tokenizer.json" in files and "tokenizer.model" not in files
  out = tmp_path / "out"
  assert (out / "tokenizer.json").read_bytes() == vocab.tokenizer_json
  c = json.loads((out / "config.json").read_text())
  assert (c["eos_token_id"], c["pad_token_id"], c["bos_token_id"]) == (
      380,
      380,
      None,
  )
  auto = transformers.AutoTokenizer.from_pretrained(str(out))
  assert (auto.eos_token_id, auto.pad_token_id) == (380, 380)
  for text in TEXTS:
    assert auto.encode(text, add_special_tokens=False) == vocab.encode(text)
  # A trained demix_jax BPE (no tokenizer_config.json beside) exports too.
  texts = {"a": [t * 30 for t in TEXTS]}
  own = tokenizer_lib.train_vocab(
      texts, 320, str(tmp_path / "tok" / "t.json"), kind="bpe"
  )
  small = models.ModelConfig(**{**cfg.to_dict(), "vocab_size": 320})
  shapes = jax.eval_shape(lambda: models.init_params(small, jax.random.key(0)))
  p2 = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes)
  hf.export_params(p2, small, tmp_path / "own", tokenizer=own.path)
  auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "own"))
  assert (auto.eos_token_id, auto.pad_token_id, auto.bos_token_id) == (
      0,
      0,
      None,
  )
  for text in TEXTS[:4]:
    assert auto.encode(text, add_special_tokens=False) == own.encode(text)


@pytest.mark.slow
def test_pipeline_base_from_a_released_qwen3_directory(release, tmp_path):
  """base.init_from = the release, data.tokenizer.path = the same directory
  (its tokenizer.json): the imported base is the release's weights."""
  d = release["dir"]
  cfg = hf_config.model_config_from_hf(d)
  config = dx.load_config("demo:runlocal")
  for k in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads"):
    setattr(config.model, k, getattr(cfg, k))
  for k in ("head_dim", "d_ff", "rope_theta", "tie_embeddings", "norm_eps"):
    setattr(config.model, k, getattr(cfg, k))
  config.base.init_from = str(d)
  config.base.tokens = 0
  config.data.tokenizer.path = str(d)
  out = dx.run(config, str(tmp_path / "wd"), stages=("base",))
  base = out["base"]
  assert base.steps == 0 and base.tokens == 0
  meta = checkpointing.read_metadata(base.run_dir)
  assert (
      meta["tokenizer_fingerprint"]
      == tokenizer_lib.load_vocab(str(d)).fingerprint
  )
  want = hf.load_params(d, cfg)
  got = checkpointing.load_params(base.run_dir)
  same = jax.tree.map(
      lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), want, got
  )
  assert all(jax.tree.leaves(same))
  # A data tokenizer that is not the release's is refused before import.
  wrong = dx.load_config("demo:runlocal")
  for k in cfg.to_dict():
    if hasattr(wrong.model, k) and k not in ("dtype", "param_dtype", "remat"):
      setattr(wrong.model, k, getattr(cfg, k))
  wrong.base.init_from = str(d)
  wrong.base.tokens = 0
  other = tokenizer_lib.train_vocab(
      {"a": [t * 30 for t in TEXTS]}, 320, str(tmp_path / "o.json"), kind="bpe"
  )
  wrong.data.tokenizer.path = other.path
  with pytest.raises(dx.ConfigError, match="base.init_from"):
    dx.run(wrong, str(tmp_path / "wrong"), stages=("base",))
  assert not (tmp_path / "wrong" / "base" / "imported").exists()
