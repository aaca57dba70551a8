"""Named model shapes and the analytic parameter count.

Tiny presets fit a 2-core CPU (about 1M, 5M and 20M parameters with a
2048-token vocabulary; `micro` is the unit tests' model); the Qwen3 presets copy the public Hugging Face
configs of Qwen/Qwen3-1.7B and Qwen/Qwen3-8B (hidden_size, intermediate_size,
num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim,
vocab_size, rope_theta, tie_word_embeddings, rms_norm_eps).
"""

from __future__ import annotations

import dataclasses

from demix_jax.models.transformer import ModelConfig

# The fields that size a model apart from its vocabulary: what a config
# copies from a preset to change the model and keep the tokenizer.
SIZE_FIELDS = (
    "d_model",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "head_dim",
    "d_ff",
)

PRESETS: dict[str, ModelConfig] = {
    # The unit tests' model (tests/kit.tiny_model): 20K parameters, a
    # 64-token vocabulary, one KV head shared by two query heads.
    "micro": ModelConfig(
        vocab_size=64,
        d_model=32,
        n_layers=2,
        n_heads=2,
        n_kv_heads=1,
        head_dim=16,
        d_ff=64,
    ),
    # The demo's and validate_small's model since the base sweep
    # (docs/recipe_study.md): 229,824 parameters, small enough that a base of
    # 30 tokens per parameter trains in minutes on 2 CPU cores.
    "tiny_230k": ModelConfig(
        vocab_size=2048,
        d_model=64,
        n_layers=2,
        n_heads=2,
        n_kv_heads=1,
        head_dim=32,
        d_ff=192,
    ),
    # The three-candidate pipeline's model (configs/demo.pipeline_defaults,
    # which table3_small, local_jsonl and qwen3_1p7b build on): 1.05M.
    "tiny_1m": ModelConfig(
        vocab_size=2048,
        d_model=128,
        n_layers=4,
        n_heads=4,
        n_kv_heads=2,
        head_dim=32,
        d_ff=384,
    ),
    # 5.24M parameters.
    "tiny_5m": ModelConfig(
        vocab_size=2048,
        d_model=256,
        n_layers=6,
        n_heads=8,
        n_kv_heads=4,
        head_dim=32,
        d_ff=768,
    ),
    # 19.9M parameters.
    "tiny_20m": ModelConfig(
        vocab_size=2048,
        d_model=512,
        n_layers=6,
        n_heads=8,
        n_kv_heads=4,
        head_dim=64,
        d_ff=1536,
    ),
    # Qwen/Qwen3-1.7B: 1.72B parameters (tied embeddings).
    "qwen3_1p7b": ModelConfig(
        vocab_size=151_936,
        d_model=2048,
        n_layers=28,
        n_heads=16,
        n_kv_heads=8,
        head_dim=128,
        d_ff=6144,
        rope_theta=1_000_000.0,
        tie_embeddings=True,
        norm_eps=1e-6,
        dtype="bfloat16",
        param_dtype="float32",
        remat=True,
    ),
    # Qwen/Qwen3-8B: 8.19B parameters (untied LM head).
    "qwen3_8b": ModelConfig(
        vocab_size=151_936,
        d_model=4096,
        n_layers=36,
        n_heads=32,
        n_kv_heads=8,
        head_dim=128,
        d_ff=12288,
        rope_theta=1_000_000.0,
        tie_embeddings=False,
        norm_eps=1e-6,
        dtype="bfloat16",
        param_dtype="float32",
        remat=True,
    ),
}


def get_preset(name: str, **overrides) -> ModelConfig:
  """Returns a preset, optionally with fields replaced.

  Args:
    name: a key of PRESETS.
    **overrides: ModelConfig fields to replace (e.g. dtype="float32").

  Returns:
    The ModelConfig.
  """
  if name not in PRESETS:
    raise ValueError(
        f"unknown model preset {name!r}; use one of " f"{sorted(PRESETS)}"
    )
  return dataclasses.replace(PRESETS[name], **overrides)


def num_params(cfg: ModelConfig) -> int:
  """Parameter count from the shapes alone (no allocation).

  Per layer: two RMSNorm scales (2d), Q and O projections (2 d H Dh), K and
  V projections (2 d KV Dh), QK-norm scales (2 Dh) and the SwiGLU MLP
  (3 d F). Plus the embedding (V d), the final norm (d) and, if untied, the
  LM head (d V).

  Args:
    cfg: the model config.

  Returns:
    The number of parameters.
  """
  d, hd = cfg.d_model, cfg.head_dim
  per_layer = (
      2 * d
      + 2 * d * cfg.n_heads * hd
      + 2 * d * cfg.n_kv_heads * hd
      + 2 * hd
      + 3 * d * cfg.d_ff
  )
  outer = cfg.vocab_size * d + d
  if not cfg.tie_embeddings:
    outer += d * cfg.vocab_size
  return outer + cfg.n_layers * per_layer
