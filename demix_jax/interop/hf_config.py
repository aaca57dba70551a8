"""Hugging Face Qwen3 config.json and tokenizer files <-> demix_jax ModelConfig.

The checks here run before any weight is read: a checkpoint whose
architecture demix_jax cannot represent (attention biases, sliding windows,
RoPE scaling, other activations) or whose tokenizer does not fit the model
is refused with the reason. See demix_jax/interop/hf.py for the weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

from etils import epath

from demix_jax.interop import bpe_tokenizer
from demix_jax.models import transformer

Params = Any
ModelConfig = transformer.ModelConfig


class HFCheckpointError(ValueError):
  """A Hugging Face directory that does not fit (or is not) Qwen3."""


# --------------------------------------------------------------- config

HF_DTYPES = {
    "float32": "float32",
    "bfloat16": "bfloat16",
    "float16": "float16",
}


def hf_config(
    cfg: ModelConfig,
    *,
    dtype: str = "float32",
    max_position_embeddings: int = 32_768,
    eos_token_id: int | None = 1,
    pad_token_id: int | None = 0,
    bos_token_id: int | None = None,
) -> dict[str, Any]:
  """The `config.json` of a Qwen3ForCausalLM with the shapes of cfg.

  Args:
    cfg: the demix_jax model config.
    dtype: the dtype the weights are stored in.
    max_position_embeddings: recorded for downstream tools (demix_jax's RoPE
      has no length limit; default RoPE ignores it).
    eos_token_id, pad_token_id, bos_token_id: the tokenizer's ids (demix_jax
      trains pad 0, eos 1, no BOS).

  Returns:
    The config dict.
  """
  return {
      "architectures": ["Qwen3ForCausalLM"],
      "model_type": "qwen3",
      "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.d_model,
      "intermediate_size": cfg.d_ff,
      "num_hidden_layers": cfg.n_layers,
      "num_attention_heads": cfg.n_heads,
      "num_key_value_heads": cfg.n_kv_heads,
      "head_dim": cfg.head_dim,
      "hidden_act": "silu",
      "max_position_embeddings": int(max_position_embeddings),
      "rms_norm_eps": float(cfg.norm_eps),
      # Both spellings: `rope_theta` (transformers < 5, vLLM, released Qwen3
      # configs) and `rope_parameters` (transformers >= 5).
      "rope_theta": float(cfg.rope_theta),
      "rope_parameters": {
          "rope_type": "default",
          "rope_theta": float(cfg.rope_theta),
      },
      "rope_scaling": None,
      "tie_word_embeddings": bool(cfg.tie_embeddings),
      "attention_bias": False,
      "attention_dropout": 0.0,
      "use_sliding_window": False,
      "sliding_window": None,
      "max_window_layers": cfg.n_layers,
      "initializer_range": 0.02,
      "use_cache": True,
      "bos_token_id": bos_token_id,
      "eos_token_id": eos_token_id,
      "pad_token_id": pad_token_id,
      "dtype": HF_DTYPES[dtype],
  }


def read_json(path: epath.Path) -> dict[str, Any]:
  try:
    return json.loads(path.read_text())
  except FileNotFoundError as e:
    raise HFCheckpointError(f"{path} does not exist") from e


def _rope_theta(c: Mapping[str, Any]) -> float:
  rp = c.get("rope_parameters") or {}
  rs = c.get("rope_scaling") or {}
  for spec in (rp, rs):
    kind = spec.get("rope_type", spec.get("type", "default"))
    if kind != "default":
      raise HFCheckpointError(
          f"rope type {kind!r} (rope_parameters/rope_scaling) is not "
          "supported: demix_jax implements default RoPE only"
      )
  theta = rp.get("rope_theta", c.get("rope_theta"))
  if theta is None:
    raise HFCheckpointError("config.json gives no rope_theta")
  return float(theta)


def model_config_from_hf(
    hf_dir: str | os.PathLike, **overrides: Any
) -> ModelConfig:
  """The demix_jax ModelConfig of a Hugging Face Qwen3 directory.

  Args:
    hf_dir: directory holding config.json (local or gs://).
    **overrides: other ModelConfig fields (dtype, param_dtype, remat).

  Returns:
    The ModelConfig (param_dtype float32 unless overridden).

  Raises:
    HFCheckpointError: not a Qwen3 causal LM, or a feature demix_jax does not
      implement (attention biases, sliding windows, RoPE scaling, another
      activation).
  """
  c = read_json(epath.Path(hf_dir) / "config.json")
  problems = []
  if c.get("model_type") != "qwen3":
    problems.append(f"model_type={c.get('model_type')!r} (expected 'qwen3')")
  if c.get("hidden_act", "silu") != "silu":
    problems.append(f"hidden_act={c.get('hidden_act')!r} (expected 'silu')")
  if c.get("attention_bias"):
    problems.append("attention_bias=true")
  if c.get("use_sliding_window"):
    problems.append("use_sliding_window=true")
  if problems:
    raise HFCheckpointError(
        f"{hf_dir}/config.json is not a model demix_jax can load: "
        + "; ".join(problems)
    )
  n_heads = int(c["num_attention_heads"])
  fields: dict[str, Any] = dict(
      vocab_size=int(c["vocab_size"]),
      d_model=int(c["hidden_size"]),
      n_layers=int(c["num_hidden_layers"]),
      n_heads=n_heads,
      n_kv_heads=int(c.get("num_key_value_heads") or n_heads),
      head_dim=int(c.get("head_dim") or int(c["hidden_size"]) // n_heads),
      d_ff=int(c["intermediate_size"]),
      rope_theta=_rope_theta(c),
      tie_embeddings=bool(c.get("tie_word_embeddings", False)),
      norm_eps=float(c.get("rms_norm_eps", 1e-6)),
  )
  fields.update(overrides)
  return ModelConfig(**fields)


def check_config(hf_dir: str | os.PathLike, model_cfg: ModelConfig) -> None:
  """Raises HFCheckpointError naming every shape field that differs."""
  found = model_config_from_hf(hf_dir)
  names = (
      "vocab_size",
      "d_model",
      "n_layers",
      "n_heads",
      "n_kv_heads",
      "head_dim",
      "d_ff",
      "rope_theta",
      "tie_embeddings",
      "norm_eps",
  )
  diff = [
      f"model.{n}={getattr(model_cfg, n)!r} but the checkpoint has "
      f"{getattr(found, n)!r}"
      for n in names
      if getattr(model_cfg, n) != getattr(found, n)
  ]
  if diff:
    raise HFCheckpointError(
        f"{hf_dir} does not match the model config: "
        + "; ".join(diff)
        + ". Fix: use models.ModelConfig fields from "
        "demix_jax.interop.hf_config.model_config_from_hf(hf_dir)"
    )


# ----------------------------------------------------------- vocabulary


def tokenizer_info(hf_dir: str | os.PathLike) -> dict[str, Any]:
  """What the directory's tokenizer files say (read as JSON / protobuf).

  Returns:
    {"kind": "sentencepiece" | "bpe" | None, "size": number of ids
    (vocabulary plus added tokens) or None, "eos_id", "pad_id", "path",
    "fingerprint" (sha256 of the file)}. A SentencePiece `tokenizer.model`
    is preferred when present (demix_jax's exports hold both files and its
    checkpoints record the `.model`), as `data.tokenizer.load_vocab` does
    for a directory; else `tokenizer.json` (a Qwen3 release), with eos and
    pad by the rule of demix_jax/data/bpe.py.
  """
  d = epath.Path(hf_dir)
  info: dict[str, Any] = {
      "kind": None,
      "size": None,
      "eos_id": None,
      "pad_id": None,
      "path": None,
      "fingerprint": None,
  }
  if (d / "tokenizer.model").exists():
    proto = (d / "tokenizer.model").read_bytes()
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top

    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(proto)
    info.update(
        kind="sentencepiece",
        size=sp.GetPieceSize(),
        eos_id=sp.eos_id(),
        pad_id=sp.pad_id(),
        path=os.fspath(d / "tokenizer.model"),
        fingerprint=hashlib.sha256(proto).hexdigest(),
    )
  elif (d / "tokenizer.json").exists():
    path = os.fspath(d / "tokenizer.json")
    data = (d / "tokenizer.json").read_bytes()
    try:
      found = bpe_tokenizer.describe(data, path)
    except ValueError as e:
      raise HFCheckpointError(f"{hf_dir}: {e}") from e
    info.update(
        kind="bpe",
        size=found["size"],
        eos_id=found["eos_id"],
        pad_id=found["pad_id"],
        path=path,
        fingerprint=hashlib.sha256(data).hexdigest(),
    )
  return info


def check_vocab(
    hf_dir: str | os.PathLike,
    model_cfg: ModelConfig,
    vocab: Any | None = None,
) -> dict[str, Any]:
  """Checks the checkpoint's tokenizer against the model config (and vocab).

  Args:
    hf_dir: the Hugging Face directory.
    model_cfg: the model config training will use.
    vocab: optional `demix_jax.data.tokenizer.Vocab` the data pipeline will
      use; it must be the checkpoint's own tokenizer file (its
      `tokenizer.model` for a SentencePiece vocab, its `tokenizer.json` for
      a byte-level BPE).

  Returns:
    `tokenizer_info(hf_dir)`.

  Raises:
    HFCheckpointError: no tokenizer, more token ids than embedding rows, or
      a different tokenizer than `vocab`.
  """
  info = tokenizer_info(hf_dir)
  if info["kind"] is None:
    raise HFCheckpointError(
        f"{hf_dir} has no tokenizer (tokenizer.model or tokenizer.json); the "
        "vocabulary must come from the checkpoint"
    )
  if info["size"] > model_cfg.vocab_size:
    raise HFCheckpointError(
        f"{hf_dir}: the tokenizer has {info['size']} ids but "
        f"model.vocab_size={model_cfg.vocab_size}. Fix: use the checkpoint's "
        "config (model_config_from_hf)"
    )
  if vocab is not None:
    name = (
        "tokenizer.model" if vocab.kind == "sentencepiece" else "tokenizer.json"
    )
    own = epath.Path(hf_dir) / name
    fp = hashlib.sha256(own.read_bytes()).hexdigest() if own.exists() else None
    if fp != vocab.fingerprint:
      what = (
          f"{own} (fingerprint {fp[:12]}...) is not"
          if fp
          else f"{hf_dir} has no {name} ({vocab.kind}), so it cannot be"
      )
      raise HFCheckpointError(
          f"{what} the data pipeline's tokenizer ({vocab.fingerprint[:12]}..., "
          f"{vocab.path}). Fix: set data.tokenizer.path={info['path']}"
      )
  return info
