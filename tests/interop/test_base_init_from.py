"""base.init_from: the pipeline's base can be a Hugging Face Qwen3 checkpoint.

A run's base is exported as a Hugging Face directory, then a new workdir
takes it as its base (base.tokens = 0, tokenizer from the directory): the
imported base equals the exported weights bitwise, and a checkpoint whose
shape does not match the model config is refused before any training.
"""

import jax
import numpy as np
import pytest

import demix_jax as dx
from demix_jax.interop import hf
from demix_jax.training import checkpointing


@pytest.mark.slow
def test_pipeline_base_from_hf_directory(runlocal_run, tmp_path):
  # The session's runlocal base (read only).
  first = runlocal_run.workdir
  config = dx.load_config("demo:runlocal")
  params = checkpointing.load_params(first / "base" / "run")
  spec = dx.resolve(config)
  hf_dir = tmp_path / "hf"
  hf.export_params(
      params,
      spec.model,
      str(hf_dir),
      tokenizer=(first / "data" / "tokenizer.model").read_bytes(),
  )

  second = dx.load_config("demo:runlocal")
  second.base.init_from = str(hf_dir)
  second.base.tokens = 0
  second.data.tokenizer.path = str(hf_dir / "tokenizer.model")
  out = dx.run(second, str(tmp_path / "second"), stages=("base",))
  base = out["base"]
  assert base.steps == 0 and base.tokens == 0
  loaded = checkpointing.load_params(base.run_dir)
  same = jax.tree.map(
      lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), params, loaded
  )
  assert all(jax.tree.leaves(same))

  wrong = dx.load_config("demo:runlocal")
  wrong.base.init_from = str(hf_dir)
  wrong.base.tokens = 0
  wrong.data.tokenizer.path = str(hf_dir / "tokenizer.model")
  wrong.model.d_ff = 96
  with pytest.raises(dx.ConfigError, match="base.init_from"):
    dx.run(wrong, str(tmp_path / "wrong"), stages=("base",))
  assert not (tmp_path / "wrong" / "base" / "imported").exists()


def test_init_from_must_be_a_checkpoint(tmp_path):
  config = dx.load_config("demo:runlocal")
  config.base.init_from = str(tmp_path)
  with pytest.raises(dx.ConfigError, match="base.init_from"):
    dx.resolve(config)
