"""base.init_from is checked before any work: each bad directory is named.

A Hugging Face directory whose config.json is not JSON, lacks a key, does
not match the model or has no weights, and a run directory with no
checkpoint or another model's checkpoint, are refused with a ConfigError
naming `base.init_from` and the fix; good ones pass. Through the pipeline
the refusal comes from the pre-flight, before the workdir exists.
"""

import json

import jax
import numpy as np
import pytest

import demix_jax as dx
from demix_jax import models
from demix_jax import pipeline
from demix_jax.config_lib import ConfigError
from demix_jax.interop import hf_config
from demix_jax.training import checkpointing
from demix_jax.training import init_from

CFG = models.ModelConfig(
    vocab_size=64,
    d_model=32,
    n_layers=2,
    n_heads=2,
    n_kv_heads=1,
    head_dim=16,
    d_ff=64,
)


def _hf_dir(tmp_path, cfg=CFG, weights=True):
  d = tmp_path / "hf"
  d.mkdir()
  (d / "config.json").write_text(json.dumps(hf_config.hf_config(cfg)))
  if weights:
    (d / "model.safetensors").write_bytes(b"")  # contents read on import
  return d


def _refused(path, cfg=CFG):
  with pytest.raises(ConfigError) as e:
    init_from.check(str(path), cfg)
  msg = str(e.value)
  assert msg.startswith("config.base.init_from: "), msg
  assert "Fix: " in msg
  return msg


def test_nothing_to_check_and_good_directories(tmp_path):
  assert init_from.check("", CFG) == ""
  assert init_from.check(str(_hf_dir(tmp_path)), CFG) == "huggingface"
  run = tmp_path / "run"
  params = models.init_params(CFG, jax.random.key(0))
  ckpt = checkpointing.Checkpointer(
      run, checkpointing.CheckpointConfig(every_steps=1, async_save=False)
  )
  ckpt.save(1, params, {"count": np.zeros((), np.int32)}, {}, {"step": 1})
  ckpt.close()
  assert init_from.check(str(run), CFG) == "run"
  # Another model's checkpoint: the differing leaves are named.
  other = models.ModelConfig(**{**CFG.to_dict(), "d_ff": 96})
  msg = _refused(run, other)
  assert "does not match the model config" in msg
  assert "model shape (2, 32, 96)" in msg


@pytest.mark.parametrize(
    "text,words",
    [
        (
            '{"model_type": "qwen3", "vocab_size": 64,',
            "is not valid JSON (line 1",
        ),
        ("[1, 2]", "holds a list, not an object"),
        ('{"model_type": "qwen3"}', "has no 'num_attention_heads'"),
        (
            '{"model_type": "llama", "num_attention_heads": 2}',
            "model_type='llama'",
        ),
    ],
    ids=["truncated", "not-object", "missing-keys", "other-model"],
)
def test_bad_config_json_is_named(tmp_path, text, words):
  d = _hf_dir(tmp_path)
  (d / "config.json").write_text(text)
  msg = _refused(d)
  assert words in msg, msg
  if "JSON" in words or "object" in words or "has no" in words:
    assert str(d / "config.json") in msg


def test_hf_directory_must_match_and_have_weights(tmp_path):
  other = models.ModelConfig(**{**CFG.to_dict(), "n_layers": 3})
  msg = _refused(_hf_dir(tmp_path, other))
  assert "model.n_layers=2 but the checkpoint has 3" in msg
  d = tmp_path / "w"
  d.mkdir()
  d = _hf_dir(d, weights=False)
  assert "no weights (model.safetensors" in _refused(d)
  (d / "model.safetensors.index.json").write_text(
      json.dumps({"weight_map": {"a": "model-00001.safetensors"}})
  )
  assert "lists 1 file(s) that are not in" in _refused(d)
  (d / "model-00001.safetensors").write_bytes(b"")
  assert init_from.check(str(d), CFG) == "huggingface"


def test_run_directory_without_a_checkpoint(tmp_path):
  (tmp_path / "run" / "checkpoints").mkdir(parents=True)
  assert "holds no checkpoint" in _refused(tmp_path / "run")
  assert "is neither a Hugging Face" in _refused(tmp_path / "nothing")


def test_pipeline_preflight_refuses_before_creating_anything(tmp_path):
  (tmp_path / "run" / "checkpoints").mkdir(parents=True)
  config = dx.load_config("demo:runlocal")
  config.base.init_from = str(tmp_path / "run")
  spec = dx.resolve(config)
  workdir = tmp_path / "wd"
  with pytest.raises(ConfigError, match="base.init_from.*no checkpoint"):
    pipeline.preflight(spec, str(workdir))
  assert not workdir.exists()
  # Once the base stage is done (or not run), init_from is not read again.
  later = dx.resolve(config, stages=("search",))
  pipeline.preflight(later, str(workdir))
