"""Hugging Face Qwen3 checkpoints in and out (numpy and JAX only, no torch).

Out: `export_params(params, model_cfg, out_dir, tokenizer=...)` writes a
`Qwen3ForCausalLM` directory (config.json, generation_config.json,
model.safetensors or shards, and the tokenizer files); `transformers` loads
it with `AutoModelForCausalLM.from_pretrained(out_dir)`.

In: `model_config_from_hf(hf_dir) -> ModelConfig` and `load_params(hf_dir,
model_cfg) -> params` read a Qwen3 directory (local or `gs://`), e.g. a
released Qwen3 checkpoint, into demix_jax's params layout; `check_vocab`
compares the checkpoint's tokenizer with the model config before training.

The two models compute the same function, so the mapping is a relabelling
plus reshapes and transposes, with no numeric conversion:

* RMSNorm: both multiply the normalised activations by the weight itself
  (`x / rms(x) * w`, weights initialised to 1; not the `1 + w` form), in
  float32, with the same epsilon (`rms_norm_eps` = `norm_eps`).
* RoPE: both use the rotate-half layout (the head dimension split into two
  halves, frequency i pairing coordinates i and i + head_dim / 2, inverse
  frequency theta^(-2i / head_dim)), applied after the per-head QK RMSNorm,
  so the q/k projections need no permutation (unlike Meta-Llama's
  interleaved layout).
* Attention: scale head_dim^-0.5, grouped-query heads in the same order
  (query head j uses key/value head j // (n_heads / n_kv_heads)).
* Linear layers: Flax stores `x @ W` kernels `[in, ...out]`, torch
  `nn.Linear` stores `[out, in]`: kernels are flattened and transposed.

| demix_jax (layer i of the scanned `layers`) | Hugging Face |
|---|---|
| `embed` [V, d] | `model.embed_tokens.weight` [V, d] |
| `layers/attn_norm/scale` [d] | `model.layers.{i}.input_layernorm.weight` |
| `layers/attn/q_proj` [d, H, hd] | `...self_attn.q_proj.weight` [H*hd, d] |
| `layers/attn/k_proj`, `v_proj` [d, KV, hd] | `...k_proj.weight`, `v_proj.weight` [KV*hd, d] |
| `layers/attn/o_proj` [H, hd, d] | `...self_attn.o_proj.weight` [d, H*hd] |
| `layers/attn/q_norm/scale`, `k_norm/scale` [hd] | `...self_attn.q_norm.weight`, `k_norm.weight` |
| `layers/mlp_norm/scale` [d] | `...post_attention_layernorm.weight` |
| `layers/mlp/gate_proj`, `up_proj` [d, F] | `...mlp.gate_proj.weight`, `up_proj.weight` [F, d] |
| `layers/mlp/down_proj` [F, d] | `...mlp.down_proj.weight` [d, F] |
| `final_norm/scale` [d] | `model.norm.weight` |
| `lm_head` [d, V] (untied only) | `lm_head.weight` [V, d] |

Tied embeddings write no `lm_head.weight` (as `save_pretrained` does) and
set `tie_word_embeddings`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from etils import epath
import jax
import numpy as np

from demix_jax.interop import safetensors_np
from demix_jax.interop import sp_tokenizer
from demix_jax.models import transformer

Params = Any
ModelConfig = transformer.ModelConfig


class HFCheckpointError(ValueError):
  """A Hugging Face directory that does not fit (or is not) Qwen3."""


# --------------------------------------------------------------- config

_HF_DTYPES = {
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
      "dtype": _HF_DTYPES[dtype],
  }


def _read_json(path: epath.Path) -> dict[str, Any]:
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
  c = _read_json(epath.Path(hf_dir) / "config.json")
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
  fields = dict(
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
        "demix_jax.interop.hf.model_config_from_hf(hf_dir)"
    )


# ----------------------------------------------------------- vocabulary


def tokenizer_info(hf_dir: str | os.PathLike) -> dict[str, Any]:
  """What the directory's tokenizer files say, read as JSON (no libraries).

  Returns:
    {"kind": "sentencepiece" | "tokenizers" | None, "size": number of ids
    (vocabulary plus added tokens) or None, "eos_id", "pad_id", "path"}.
    A SentencePiece `tokenizer.model` is preferred when present (it is what
    demix_jax's data pipeline reads).
  """
  d = epath.Path(hf_dir)
  info: dict[str, Any] = {
      "kind": None,
      "size": None,
      "eos_id": None,
      "pad_id": None,
      "path": None,
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
    )
    return info
  if (d / "tokenizer.json").exists():
    tj = json.loads((d / "tokenizer.json").read_text())
    ids = list(tj.get("model", {}).get("vocab", {}).values())
    ids += [t["id"] for t in tj.get("added_tokens", [])]
    by_content = {t["content"]: t["id"] for t in tj.get("added_tokens", [])}
    tc = {}
    if (d / "tokenizer_config.json").exists():
      tc = json.loads((d / "tokenizer_config.json").read_text())

    def tok_id(key):
      v = tc.get(key)
      if isinstance(v, dict):
        v = v.get("content")
      return by_content.get(v) if v is not None else None

    info.update(
        kind="tokenizers",
        size=(max(ids) + 1) if ids else 0,
        eos_id=tok_id("eos_token"),
        pad_id=tok_id("pad_token"),
        path=os.fspath(d / "tokenizer.json"),
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
      use; it must be the checkpoint's own SentencePiece model.

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
    if info["kind"] != "sentencepiece":
      raise HFCheckpointError(
          f"{hf_dir} has a `tokenizers` tokenizer ({info['path']}), not a "
          "SentencePiece model; demix_jax's data pipeline reads SentencePiece "
          "models only"
      )
    import hashlib  # pylint: disable=g-import-not-at-top

    fp = hashlib.sha256(epath.Path(info["path"]).read_bytes()).hexdigest()
    if fp != vocab.fingerprint:
      raise HFCheckpointError(
          f"{hf_dir}/tokenizer.model (fingerprint {fp[:12]}...) is not the "
          f"data pipeline's tokenizer ({vocab.fingerprint[:12]}..., "
          f"{vocab.path}). Fix: set data.tokenizer.path={info['path']}"
      )
  return info


# -------------------------------------------------------------- weights


def _layer_map(cfg: ModelConfig) -> dict[tuple[str, ...], tuple[str, Any, Any]]:
  """demix leaf path -> (HF suffix, to_hf(one layer), from_hf(one layer))."""
  d, h, kv, hd = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim

  def in_proj(heads):
    return (
        lambda w: w.reshape(d, heads * hd).T,
        lambda w: w.T.reshape(d, heads, hd),
    )

  ident = (lambda w: w, lambda w: w)
  t2 = (lambda w: w.T, lambda w: w.T)
  return {
      ("attn_norm", "scale"): ("input_layernorm.weight", *ident),
      ("attn", "q_proj"): ("self_attn.q_proj.weight", *in_proj(h)),
      ("attn", "k_proj"): ("self_attn.k_proj.weight", *in_proj(kv)),
      ("attn", "v_proj"): ("self_attn.v_proj.weight", *in_proj(kv)),
      ("attn", "o_proj"): (
          "self_attn.o_proj.weight",
          lambda w: w.reshape(h * hd, d).T,
          lambda w: w.T.reshape(h, hd, d),
      ),
      ("attn", "q_norm", "scale"): ("self_attn.q_norm.weight", *ident),
      ("attn", "k_norm", "scale"): ("self_attn.k_norm.weight", *ident),
      ("mlp_norm", "scale"): ("post_attention_layernorm.weight", *ident),
      ("mlp", "gate_proj"): ("mlp.gate_proj.weight", *t2),
      ("mlp", "up_proj"): ("mlp.up_proj.weight", *t2),
      ("mlp", "down_proj"): ("mlp.down_proj.weight", *t2),
  }


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def _set(tree, path, value):
  for k in path[:-1]:
    tree = tree.setdefault(k, {})
  tree[path[-1]] = value


def _expected_leaves(cfg: ModelConfig) -> set[tuple[str, ...]]:
  shapes = jax.eval_shape(
      lambda: transformer.init_params(cfg, jax.random.key(0))
  )
  return {
      tuple(getattr(k, "key", k) for k in path)
      for path, _ in jax.tree_util.tree_leaves_with_path(shapes)
  }


def to_hf_state(
    params: Params, cfg: ModelConfig, dtype: str | None = None
) -> dict[str, np.ndarray]:
  """The Hugging Face state dict (name -> numpy array) of demix params.

  Args:
    params: demix_jax params (models.init_params structure).
    cfg: their model config.
    dtype: cast to this dtype name ("float32", "bfloat16", "float16");
      None keeps each leaf's dtype.

  Returns:
    An ordered dict: embeddings, layers 0..L-1, final norm, LM head.
  """
  expected = _expected_leaves(cfg)
  found = {
      tuple(getattr(k, "key", k) for k in path)
      for path, _ in jax.tree_util.tree_leaves_with_path(params)
  }
  if found != expected:
    raise HFCheckpointError(
        "params do not have the structure of the model config: missing "
        f"{sorted(expected - found)}, unexpected {sorted(found - expected)}"
    )
  target = None if dtype is None else np.dtype(transformer._DTYPES[dtype])  # pylint: disable=protected-access

  def arr(x):
    a = np.asarray(jax.device_get(x))
    return a if target is None else a.astype(target)

  out: dict[str, np.ndarray] = {
      "model.embed_tokens.weight": arr(params["embed"])
  }
  lmap = _layer_map(cfg)
  layers = {path: arr(_get(params["layers"], path)) for path in lmap}
  for i in range(cfg.n_layers):
    for path, (suffix, to_hf, _) in lmap.items():
      out[f"model.layers.{i}.{suffix}"] = np.ascontiguousarray(
          to_hf(layers[path][i])
      )
  out["model.norm.weight"] = arr(params["final_norm"]["scale"])
  if not cfg.tie_embeddings:
    out["lm_head.weight"] = np.ascontiguousarray(arr(params["lm_head"]).T)
  return out


def from_hf_state(
    state: Mapping[str, np.ndarray],
    cfg: ModelConfig,
    *,
    source: str = "the checkpoint",
    dtype: Any | None = None,
) -> Params:
  """demix_jax params (numpy arrays) from a Hugging Face state dict.

  Args:
    state: name -> array.
    cfg: the model config (shapes are checked against it).
    source: what to name in errors.
    dtype: cast every leaf to this numpy dtype (default cfg.param_dtype).

  Returns:
    The params pytree (numpy arrays, `layers` leaves stacked [L, ...]).
  """
  dt = np.dtype(cfg.weight_dtype if dtype is None else dtype)
  state = {
      k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")
  }
  used = set()

  def take(name, shape):
    if name not in state:
      raise HFCheckpointError(f"{source} has no tensor {name!r}")
    a = np.asarray(state[name])
    if tuple(a.shape) != tuple(shape):
      raise HFCheckpointError(
          f"{source}: {name} has shape {tuple(a.shape)}, the model config "
          f"needs {tuple(shape)}"
      )
    used.add(name)
    return a.astype(dt) if a.dtype != dt else a

  d, h, kv, hd, ff, v = (
      cfg.d_model,
      cfg.n_heads,
      cfg.n_kv_heads,
      cfg.head_dim,
      cfg.d_ff,
      cfg.vocab_size,
  )
  hf_shapes = {
      "input_layernorm.weight": (d,),
      "self_attn.q_proj.weight": (h * hd, d),
      "self_attn.k_proj.weight": (kv * hd, d),
      "self_attn.v_proj.weight": (kv * hd, d),
      "self_attn.o_proj.weight": (d, h * hd),
      "self_attn.q_norm.weight": (hd,),
      "self_attn.k_norm.weight": (hd,),
      "post_attention_layernorm.weight": (d,),
      "mlp.gate_proj.weight": (ff, d),
      "mlp.up_proj.weight": (ff, d),
      "mlp.down_proj.weight": (d, ff),
  }
  params: dict[str, Any] = {"embed": take("model.embed_tokens.weight", (v, d))}
  params["final_norm"] = {"scale": take("model.norm.weight", (d,))}
  layers: dict[str, Any] = {}
  for path, (suffix, _, from_hf) in _layer_map(cfg).items():
    per_layer = [
        from_hf(take(f"model.layers.{i}.{suffix}", hf_shapes[suffix]))
        for i in range(cfg.n_layers)
    ]
    _set(layers, path, np.stack(per_layer))
  params["layers"] = layers
  if cfg.tie_embeddings:
    if "lm_head.weight" in state:
      head = take("lm_head.weight", (v, d))
      if not np.array_equal(head, params["embed"]):
        raise HFCheckpointError(
            f"{source} has tie_word_embeddings but an lm_head.weight that "
            "differs from model.embed_tokens.weight"
        )
  else:
    params["lm_head"] = np.ascontiguousarray(take("lm_head.weight", (v, d)).T)
  extra = sorted(set(state) - used)
  if extra:
    head = ", ".join(extra[:6]) + (
        f" (+{len(extra) - 6} more)" if len(extra) > 6 else ""
    )
    raise HFCheckpointError(
        f"{source} has tensors the Qwen3 layout does not use: {head}"
    )
  return params


def load_params(
    hf_dir: str | os.PathLike,
    model_cfg: ModelConfig,
    *,
    target: Params | None = None,
    vocab: Any | None = None,
    require_tokenizer: bool = True,
) -> Params:
  """demix_jax params initialised from a Hugging Face Qwen3 directory.

  Checks config.json against `model_cfg` and the tokenizer against the
  vocabulary size (and `vocab`, when given) before reading any weights.

  Args:
    hf_dir: local directory or gs:// path with config.json and safetensors.
    model_cfg: the model config to load into (every shape field must match
      the checkpoint's; see `model_config_from_hf`).
    target: optional abstract params (ShapeDtypeStructs with shardings, e.g.
      the trainer's) to place the arrays on; default: host numpy arrays.
    vocab: optional data-pipeline Vocab to check against the checkpoint's
      tokenizer (see `check_vocab`).
    require_tokenizer: raise when the directory has no tokenizer (the
      vocabulary must come from the checkpoint); False reads weights only.

  Returns:
    The params pytree, in `model_cfg.param_dtype` (or target's dtypes).
  """
  check_config(hf_dir, model_cfg)
  if require_tokenizer or vocab is not None:
    check_vocab(hf_dir, model_cfg, vocab)
  state = safetensors_np.read_dir(hf_dir)
  params = from_hf_state(state, model_cfg, source=os.fspath(hf_dir))
  if target is None:
    return params
  return jax.tree.map(
      lambda x, t: jax.device_put(x.astype(t.dtype), t.sharding), params, target
  )


def export_params(
    params: Params,
    model_cfg: ModelConfig,
    out_dir: str | os.PathLike,
    *,
    tokenizer: bytes | str | os.PathLike | None = None,
    dtype: str | None = None,
    max_position_embeddings: int = 32_768,
    max_shard_bytes: int | None = 5 * 2**30,
    metadata: Mapping[str, str] | None = None,
) -> list[str]:
  """Writes a Hugging Face Qwen3ForCausalLM directory.

  Args:
    params: demix_jax params.
    model_cfg: their config.
    out_dir: destination (local or gs://).
    tokenizer: the SentencePiece model (bytes or a `.model` path) to write
      as tokenizer files; None writes weights and configs only.
    dtype: storage dtype name; None = the params' dtype.
    max_position_embeddings: see `hf_config`.
    max_shard_bytes: shard the safetensors past this size (None = one file).
    metadata: extra safetensors header metadata (strings).

  Returns:
    The file names written.
  """
  state = to_hf_state(params, model_cfg, dtype)
  store_dtype = dtype or {
      np.dtype(v): k for k, v in transformer._DTYPES.items()  # pylint: disable=protected-access
  }.get(state["model.embed_tokens.weight"].dtype, "float32")
  eos, pad, bos = 1, 0, None
  proto = None
  if tokenizer is not None:
    proto = (
        bytes(tokenizer)
        if isinstance(tokenizer, (bytes, bytearray))
        else epath.Path(tokenizer).read_bytes()
    )
    sp_tokenizer.check_supported(proto)
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top

    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(proto)
    if sp.GetPieceSize() > model_cfg.vocab_size:
      raise HFCheckpointError(
          f"the tokenizer has {sp.GetPieceSize()} pieces but the model only "
          f"{model_cfg.vocab_size} embedding rows"
      )
    norm = lambda i: None if i < 0 else int(i)
    eos, pad, bos = norm(sp.eos_id()), norm(sp.pad_id()), norm(sp.bos_id())
  d = epath.Path(out_dir)
  d.mkdir(parents=True, exist_ok=True)
  cfg_json = hf_config(
      model_cfg,
      dtype=store_dtype,
      max_position_embeddings=max_position_embeddings,
      eos_token_id=eos,
      pad_token_id=pad,
      bos_token_id=bos,
  )
  (d / "config.json").write_text(json.dumps(cfg_json, indent=2))
  gen = {"eos_token_id": eos, "pad_token_id": pad, "bos_token_id": bos}
  (d / "generation_config.json").write_text(
      json.dumps({k: v for k, v in gen.items() if v is not None}, indent=2)
  )
  meta = {"format": "pt", **dict(metadata or {})}
  files = ["config.json", "generation_config.json"]
  files += safetensors_np.write_dir(d, state, max_shard_bytes, meta)
  if proto is not None:
    files += sp_tokenizer.write_tokenizer(
        proto, d, model_max_length=max_position_embeddings
    )
  return files


def import_as_run(
    hf_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    model_cfg: ModelConfig | None = None,
) -> dict[str, Any]:
  """Writes a Hugging Face Qwen3 checkpoint as a demix_jax run directory.

  The result is an ordinary Orbax run (`<run_dir>/checkpoints/0`) that
  `checkpointing.load_params` reads, so any stage or trainer option that
  takes a run directory to start from (`init_from`) can start from a
  released checkpoint. Its metadata records the model config and the
  fingerprint of the checkpoint's SentencePiece tokenizer, so the usual
  tokenizer checks apply (point `data.tokenizer.path` at
  `<hf_dir>/tokenizer.model`). The optimizer state is a placeholder: the run
  is for initialising from, not for resuming.

  Args:
    hf_dir: the Hugging Face directory (local or gs://).
    run_dir: the run directory to create.
    model_cfg: defaults to `model_config_from_hf(hf_dir)`; shapes must match.

  Returns:
    The checkpoint metadata written.
  """
  import hashlib  # pylint: disable=g-import-not-at-top

  from demix_jax.training import checkpointing  # pylint: disable=g-import-not-at-top

  cfg = model_config_from_hf(hf_dir) if model_cfg is None else model_cfg
  params = load_params(hf_dir, cfg)
  info = tokenizer_info(hf_dir)
  fp = ""
  if info["kind"] == "sentencepiece":
    fp = hashlib.sha256(epath.Path(info["path"]).read_bytes()).hexdigest()
  meta = {
      "step": 0,
      "tokens_seen": 0,
      "num_steps": 0,
      "budget_tokens": [],
      "config_hash": "",
      "data_mixture": {},
      "tokenizer_fingerprint": fp,
      "model": cfg.to_dict(),
      "restored_from": "huggingface",
      "init_from": os.fspath(hf_dir),
      "init_from_tokens": None,
  }
  ckpt = checkpointing.Checkpointer(
      run_dir, checkpointing.CheckpointConfig(every_steps=1, async_save=False)
  )
  ckpt.save(0, params, {"placeholder": np.zeros((), np.int32)}, {}, meta)
  ckpt.close()
  return meta
