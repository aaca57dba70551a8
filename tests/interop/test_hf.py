"""Hugging Face Qwen3 export/import: round trips, checks, and logit parity
with `transformers` (torch CPU, fp32) on unpacked and packed inputs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from demix_jax import models
from demix_jax.interop import hf
from demix_jax.interop import hf_config
from demix_jax.interop import safetensors_np
from tests.interop import helpers

ATOL = 1e-4


def _leaves(tree):
  return {
      jax.tree_util.keystr(p): np.asarray(x)
      for p, x in jax.tree_util.tree_leaves_with_path(tree)
  }


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_import_of_export_is_bitwise_identity(tmp_path, sp_vocab, tie, dtype):
  cfg = helpers.tiny_cfg(tie, param_dtype=dtype)
  params = jax.tree.map(
      lambda x: x.astype(cfg.weight_dtype), helpers.random_params(cfg, 1)
  )
  hf.export_params(params, cfg, tmp_path, tokenizer=sp_vocab.model_proto)
  cfg_back = hf_config.model_config_from_hf(tmp_path, param_dtype=dtype)
  assert cfg_back == cfg
  back = hf.load_params(tmp_path, cfg)
  a, b = _leaves(params), _leaves(back)
  assert sorted(a) == sorted(b)
  for k in a:
    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
    assert a[k].tobytes() == b[k].tobytes(), k


def test_exported_names_and_shapes_are_qwen3(tmp_path):
  cfg = helpers.tiny_cfg(tie=False)
  hf.export_params(helpers.random_params(cfg), cfg, tmp_path)
  state = safetensors_np.read_dir(tmp_path)
  d, hd = cfg.d_model, cfg.head_dim
  want = {
      "model.embed_tokens.weight": (cfg.vocab_size, d),
      "model.norm.weight": (d,),
      "lm_head.weight": (cfg.vocab_size, d),
  }
  for i in range(cfg.n_layers):
    p = f"model.layers.{i}."
    want.update(
        {
            p + "input_layernorm.weight": (d,),
            p + "post_attention_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (cfg.n_heads * hd, d),
            p + "self_attn.k_proj.weight": (cfg.n_kv_heads * hd, d),
            p + "self_attn.v_proj.weight": (cfg.n_kv_heads * hd, d),
            p + "self_attn.o_proj.weight": (d, cfg.n_heads * hd),
            p + "self_attn.q_norm.weight": (hd,),
            p + "self_attn.k_norm.weight": (hd,),
            p + "mlp.gate_proj.weight": (cfg.d_ff, d),
            p + "mlp.up_proj.weight": (cfg.d_ff, d),
            p + "mlp.down_proj.weight": (d, cfg.d_ff),
        }
    )
  assert {k: v.shape for k, v in state.items()} == want
  c = json.loads((tmp_path / "config.json").read_text())
  assert c["architectures"] == ["Qwen3ForCausalLM"]
  assert c["rope_theta"] == 5000.0 and c["rms_norm_eps"] == 1e-5
  assert c["tie_word_embeddings"] is False


def test_sharded_export_reads_back(tmp_path):
  cfg = helpers.tiny_cfg()
  params = helpers.random_params(cfg)
  files = hf.export_params(params, cfg, tmp_path, max_shard_bytes=40_000)
  assert safetensors_np.INDEX_NAME in files
  assert sum(f.endswith(".safetensors") for f in files) > 1
  back = hf.load_params(tmp_path, cfg, require_tokenizer=False)
  for k, v in _leaves(params).items():
    np.testing.assert_array_equal(v, _leaves(back)[k])


def test_config_mismatch_is_an_error_before_weights_are_read(tmp_path):
  cfg = helpers.tiny_cfg()
  hf.export_params(helpers.random_params(cfg), cfg, tmp_path)
  (tmp_path / "model.safetensors").unlink()  # never reached
  wrong = helpers.tiny_cfg(n_layers=3, rope_theta=1e6)
  with pytest.raises(
      hf_config.HFCheckpointError, match="n_layers=3.*rope_theta"
  ):
    hf.load_params(tmp_path, wrong, require_tokenizer=False)


def test_vocab_from_the_tokenizer_checked_before_training(tmp_path, sp_vocab):
  cfg = helpers.tiny_cfg()
  hf.export_params(
      helpers.random_params(cfg), cfg, tmp_path, tokenizer=sp_vocab.model_proto
  )
  info = hf_config.check_vocab(tmp_path, cfg, sp_vocab)
  assert info["kind"] == "sentencepiece" and info["size"] == 384
  assert info["eos_id"] == 1 and info["pad_id"] == 0
  # A model with fewer embedding rows than the tokenizer has ids.
  small = helpers.tiny_cfg(vocab_size=350)
  c = json.loads((tmp_path / "config.json").read_text())
  c["vocab_size"] = 350
  (tmp_path / "config.json").write_text(json.dumps(c))
  with pytest.raises(
      hf_config.HFCheckpointError, match="384 ids.*vocab_size=350"
  ):
    hf.load_params(tmp_path, small)
  # No tokenizer at all.
  for f in ("tokenizer.model", "tokenizer.json"):
    (tmp_path / f).unlink()
  with pytest.raises(hf_config.HFCheckpointError, match="no tokenizer"):
    hf.load_params(tmp_path, small)


def test_data_pipeline_tokenizer_must_be_the_checkpoints(tmp_path, sp_vocab):
  from demix_jax.data import tokenizer as tokenizer_lib

  other = tokenizer_lib.train_vocab(
      {"t": ["completely different text " * 50, "zz yy xx " * 80]},
      300,
      str(tmp_path / "other.model"),
  )
  cfg = helpers.tiny_cfg()
  out = tmp_path / "hf"
  hf.export_params(
      helpers.random_params(cfg), cfg, out, tokenizer=sp_vocab.model_proto
  )
  with pytest.raises(hf_config.HFCheckpointError, match="data.tokenizer.path="):
    hf.load_params(out, cfg, vocab=other)


def test_released_config_spellings_and_unsupported_features(tmp_path):
  # A released Qwen3 config.json (Qwen3-1.7B's fields; older spelling:
  # top-level rope_theta, no rope_parameters).
  c = {
      "architectures": ["Qwen3ForCausalLM"],
      "model_type": "qwen3",
      "vocab_size": 151936,
      "hidden_size": 2048,
      "intermediate_size": 6144,
      "num_hidden_layers": 28,
      "num_attention_heads": 16,
      "num_key_value_heads": 8,
      "head_dim": 128,
      "hidden_act": "silu",
      "rms_norm_eps": 1e-06,
      "rope_theta": 1000000,
      "rope_scaling": None,
      "tie_word_embeddings": True,
      "attention_bias": False,
      "use_sliding_window": False,
  }
  (tmp_path / "config.json").write_text(json.dumps(c))
  cfg = hf_config.model_config_from_hf(tmp_path, dtype="bfloat16", remat=True)
  want = models.get_preset("qwen3_1p7b")
  assert cfg == want
  for key, val, msg in [
      ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}, "yarn"),
      ("attention_bias", True, "attention_bias"),
      ("model_type", "llama", "model_type"),
  ]:
    (tmp_path / "config.json").write_text(json.dumps({**c, key: val}))
    with pytest.raises(hf_config.HFCheckpointError, match=msg):
      hf_config.model_config_from_hf(tmp_path)


def test_load_params_places_onto_a_target_sharding(tmp_path):
  cfg = helpers.tiny_cfg()
  params = helpers.random_params(cfg)
  hf.export_params(params, cfg, tmp_path)
  dev = jax.sharding.SingleDeviceSharding(jax.devices()[1])
  target = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=dev),
      params,
  )
  back = hf.load_params(tmp_path, cfg, target=target, require_tokenizer=False)
  leaf = jax.tree.leaves(back)[0]
  assert isinstance(leaf, jax.Array) and leaf.sharding == dev


# ------------------------------------------------- parity with transformers


def _packed_batch(vocab_size):
  """Two rows: three documents + padding; one document cut at the row end
  (the next row's continuation restarts at position 0)."""
  rng = np.random.default_rng(7)
  t = 24
  seg = np.zeros((2, t), np.int32)
  pos = np.zeros((2, t), np.int32)
  start = 0
  for s, n in [(1, 7), (2, 1), (3, 11)]:
    seg[0, start : start + n] = s
    pos[0, start : start + n] = np.arange(n)
    start += n
  seg[1, :] = 1
  pos[1, :] = np.arange(t)
  tokens = rng.integers(3, vocab_size, (2, t)).astype(np.int32)
  tokens[seg == 0] = 0
  return tokens, pos, seg


def _demix_logits(cfg, params, tokens, pos, seg):
  return np.asarray(
      models.forward(
          cfg, params, jnp.asarray(tokens), jnp.asarray(pos), jnp.asarray(seg)
      )
  )


def _hf_model(path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  m = transformers.AutoModelForCausalLM.from_pretrained(
      str(path), dtype=torch.float32, attn_implementation="eager"
  )
  return m.eval(), torch


def _hf_per_segment(model, torch, tokens, pos, seg):
  """HF logits computed one document at a time (its own positions)."""
  out = np.full(tokens.shape + (model.config.vocab_size,), np.nan, np.float32)
  with torch.no_grad():
    for b in range(tokens.shape[0]):
      for s in sorted(set(seg[b].tolist()) - {0}):
        idx = np.flatnonzero(seg[b] == s)
        lg = model(
            input_ids=torch.tensor(tokens[b, idx][None].astype(np.int64)),
            position_ids=torch.tensor(pos[b, idx][None].astype(np.int64)),
        ).logits
        out[b, idx] = lg[0].numpy()
  return out


def _hf_packed_4d_mask(model, torch, tokens, pos, seg):
  """HF logits of the packed rows in one call: position ids plus a 4-D
  additive mask equal to demix_jax's (causal within a segment)."""
  allowed = np.asarray(models.attention_mask(jnp.asarray(seg)))[:, None]
  mask = np.where(allowed, 0.0, np.finfo(np.float32).min).astype(np.float32)
  with torch.no_grad():
    return model(
        input_ids=torch.tensor(tokens.astype(np.int64)),
        position_ids=torch.tensor(pos.astype(np.int64)),
        attention_mask=torch.tensor(mask),
    ).logits.numpy()


@pytest.mark.parametrize("tie", [True, False])
def test_logits_match_transformers_unpacked(tmp_path, tie):
  cfg = helpers.tiny_cfg(tie)
  params = helpers.random_params(cfg, seed=3)
  hf.export_params(params, cfg, tmp_path)
  model, torch = _hf_model(tmp_path)
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, cfg.vocab_size, (2, 20)).astype(np.int32)
  pos = np.broadcast_to(np.arange(20, dtype=np.int32), tokens.shape)
  ours = _demix_logits(cfg, params, tokens, pos, np.ones_like(tokens))
  with torch.no_grad():
    theirs = model(input_ids=torch.tensor(tokens.astype(np.int64))).logits
  theirs = theirs.numpy()
  assert np.abs(ours).max() > 1.0  # logits large enough to be telling
  np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("tie", [True, False])
def test_logits_match_transformers_packed(tmp_path, tie):
  cfg = helpers.tiny_cfg(tie)
  params = helpers.random_params(cfg, seed=4)
  hf.export_params(params, cfg, tmp_path)
  model, torch = _hf_model(tmp_path)
  tokens, pos, seg = _packed_batch(cfg.vocab_size)
  ours = _demix_logits(cfg, params, tokens, pos, seg)
  real = seg != 0
  per_seg = _hf_per_segment(model, torch, tokens, pos, seg)
  np.testing.assert_allclose(ours[real], per_seg[real], atol=ATOL, rtol=0)
  packed = _hf_packed_4d_mask(model, torch, tokens, pos, seg)
  np.testing.assert_allclose(ours[real], packed[real], atol=ATOL, rtol=0)


def test_parity_check_detects_an_interleaved_rope_layout(tmp_path):
  """The parity tests can fail: exporting q/k rows in the interleaved
  (GPT-J / Meta) RoPE layout instead of rotate-half moves the logits far
  beyond the tolerance."""
  cfg = helpers.tiny_cfg()
  params = helpers.random_params(cfg, seed=5)
  hf.export_params(params, cfg, tmp_path)
  state = safetensors_np.read_dir(tmp_path)
  hd = cfg.head_dim
  perm = np.stack([np.arange(hd // 2), np.arange(hd // 2) + hd // 2], 1)
  perm = perm.reshape(-1)
  for k in list(state):
    if k.endswith(("q_proj.weight", "k_proj.weight")):
      w = state[k].reshape(-1, hd, cfg.d_model)
      state[k] = np.ascontiguousarray(w[:, perm].reshape(-1, cfg.d_model))
    if k.endswith(("q_norm.weight", "k_norm.weight")):
      state[k] = np.ascontiguousarray(state[k][perm])
  safetensors_np.write_dir(tmp_path, state)
  model, torch = _hf_model(tmp_path)
  tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, (1, 16))
  pos = np.arange(16)[None]
  ours = _demix_logits(cfg, params, tokens, pos, np.ones_like(tokens))
  with torch.no_grad():
    theirs = model(input_ids=torch.tensor(tokens)).logits.numpy()
  assert np.abs(ours - theirs).max() > 100 * ATOL


def test_exported_tokenizer_loads_and_encodes_like_sentencepiece(
    tmp_path, sp_vocab
):
  transformers = pytest.importorskip("transformers")
  tokenizers = pytest.importorskip("tokenizers")
  cfg = helpers.tiny_cfg()
  hf.export_params(
      helpers.random_params(cfg), cfg, tmp_path, tokenizer=sp_vocab.model_proto
  )
  tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  raw = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
  assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, None)
  texts = [
      t[i : i + 2000]
      for t in helpers.TOKENIZER_TEXTS
      for i in range(0, 8000, 2000)
  ]
  texts += [
      "",
      " ",
      "  two leading, two trailing  ",
      "x = 12345 + 0.5e-3\n\n\tdef f():\n    return 'ü€😀日本語'\n",
      "Zürich — “quoted” \u00a0nbsp and a literal \u2581 underline",
      "\n\n\n",
  ]
  for text in texts:
    want = sp_vocab.encode(text)
    assert tok.encode(text, add_special_tokens=False) == want, text[:40]
    assert raw.encode(text, add_special_tokens=False).ids == want, text[:40]
    assert tok.decode(want, skip_special_tokens=True) == sp_vocab.decode(want)


def test_import_as_run_then_export_is_the_same_checkpoint(tmp_path, sp_vocab):
  from demix_jax import export
  from demix_jax.training import checkpointing

  cfg = helpers.tiny_cfg(tie=False)
  params = helpers.random_params(cfg, seed=6)
  hf.export_params(params, cfg, tmp_path / "a", tokenizer=sp_vocab.model_proto)
  meta = hf.import_as_run(tmp_path / "a", tmp_path / "run")
  assert meta["tokenizer_fingerprint"] == sp_vocab.fingerprint
  got = checkpointing.load_params(tmp_path / "run")
  for k, v in _leaves(params).items():
    assert v.tobytes() == _leaves(got)[k].tobytes(), k
  assert checkpointing.read_metadata(tmp_path / "run")["model"] == cfg.to_dict()
  export.export(
      str(tmp_path / "b"),
      run_dir=str(tmp_path / "run"),
      tokenizer=str(tmp_path / "a" / "tokenizer.model"),
  )
  a = safetensors_np.read_dir(tmp_path / "a")
  b = safetensors_np.read_dir(tmp_path / "b")
  assert list(a) == list(b)
  assert all(a[k].tobytes() == b[k].tobytes() for k in a)
  for f in ("config.json", "tokenizer.json", "tokenizer.model"):
    assert (tmp_path / "a" / f).read_bytes() == (
        tmp_path / "b" / f
    ).read_bytes()


def test_runtime_path_needs_no_torch(tmp_path):
  """Export and import run with torch, transformers, safetensors and
  tokenizers made unimportable."""
  import subprocess
  import sys

  code = f"""
import sys
class Block:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in ("torch", "transformers", "safetensors",
                              "tokenizers", "mergekit"):
      raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
import jax
from demix_jax import export
from demix_jax.interop import hf
from tests.interop import helpers
cfg = helpers.tiny_cfg()
p = helpers.random_params(cfg)
hf.export_params(p, cfg, {str(tmp_path)!r})
hf.load_params({str(tmp_path)!r}, cfg, require_tokenizer=False)
print("ok")
"""
  root = str(pytest.importorskip("pathlib").Path(__file__).parents[2])
  r = subprocess.run(
      [sys.executable, "-c", code],
      cwd=root,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
