"""Hugging Face Qwen3 checkpoints in and out (numpy and JAX only, no torch).

Out: `export_params(params, model_cfg, out_dir, tokenizer=...)` writes a
`Qwen3ForCausalLM` directory (config.json, generation_config.json,
model.safetensors or shards, and the tokenizer files); `transformers` loads
it with `AutoModelForCausalLM.from_pretrained(out_dir)`.

In: `load_params(hf_dir, model_cfg) -> params` reads a Qwen3 directory
(local or `gs://`) into demix_jax's params layout: a released Qwen3
checkpoint (config.json, sharded `model-0000X-of-0000Y.safetensors` with
`model.safetensors.index.json`, a byte-level BPE `tokenizer.json` and
`tokenizer_config.json`) or a demix_jax export. The config and tokenizer
checks (`hf_config.model_config_from_hf`, `check_config`, `check_vocab`)
run before any weight is read.

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

from demix_jax.data import tokenizer as tokenizer_lib
from demix_jax.interop import bpe_tokenizer
from demix_jax.interop import hf_config as hf_config_lib
from demix_jax.interop import safetensors_np
from demix_jax.interop import sp_tokenizer
from demix_jax.models import transformer

Params = Any
ModelConfig = transformer.ModelConfig


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
    raise hf_config_lib.HFCheckpointError(
        "params do not have the structure of the model config: missing "
        f"{sorted(expected - found)}, unexpected {sorted(found - expected)}"
    )
  target = None if dtype is None else np.dtype(jax.numpy.dtype(dtype))

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
      raise hf_config_lib.HFCheckpointError(f"{source} has no tensor {name!r}")
    a = np.asarray(state[name])
    if tuple(a.shape) != tuple(shape):
      raise hf_config_lib.HFCheckpointError(
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
        raise hf_config_lib.HFCheckpointError(
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
    raise hf_config_lib.HFCheckpointError(
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
  hf_config_lib.check_config(hf_dir, model_cfg)
  if require_tokenizer or vocab is not None:
    hf_config_lib.check_vocab(hf_dir, model_cfg, vocab)
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
    tokenizer: bytes | str | os.PathLike | tokenizer_lib.Vocab | None = None,
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
    tokenizer: what to write as tokenizer files: a SentencePiece model or
      a byte-level BPE tokenizer.json (a `data.tokenizer.Vocab`, the file's
      bytes, or a path: `.model`, `.json` or a directory holding one);
      None writes weights and configs only.
    dtype: storage dtype name; None = the params' dtype.
    max_position_embeddings: see `hf_config`.
    max_shard_bytes: shard the safetensors past this size (None = one file).
    metadata: extra safetensors header metadata (strings).

  Returns:
    The file names written.
  """
  state = to_hf_state(params, model_cfg, dtype)
  store_dtype = dtype or {
      np.dtype(jax.numpy.dtype(k)): k
      for k in ("float32", "bfloat16", "float16")
  }.get(state["model.embed_tokens.weight"].dtype, "float32")
  eos, pad, bos = 1, 0, None
  tok = None
  if tokenizer is not None:
    tok = _tokenizer_files(tokenizer)
    if tok["size"] > model_cfg.vocab_size:
      raise hf_config_lib.HFCheckpointError(
          f"the tokenizer has {tok['size']} ids but the model only "
          f"{model_cfg.vocab_size} embedding rows"
      )
    eos, pad, bos = tok["eos"], tok["pad"], tok["bos"]
  d = epath.Path(out_dir)
  d.mkdir(parents=True, exist_ok=True)
  cfg_json = hf_config_lib.hf_config(
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
  if tok is not None and tok["kind"] == "sentencepiece":
    files += sp_tokenizer.write_tokenizer(
        tok["data"], d, model_max_length=max_position_embeddings
    )
  elif tok is not None:
    files += bpe_tokenizer.write_tokenizer(
        tok["data"],
        d,
        source=tok["path"],
        model_max_length=max_position_embeddings,
    )
  return files


def _tokenizer_files(tokenizer: Any) -> dict[str, Any]:
  """{"kind", "data", "path", "size", "eos", "pad", "bos"} of what
  `export_params` was given as its tokenizer."""
  path = ""
  if isinstance(tokenizer, tokenizer_lib.Vocab):
    kind, path = tokenizer.kind, tokenizer.path
    # Each kind's file is an attribute of its class, not of the protocol.
    concrete: Any = tokenizer
    data = (
        concrete.model_proto
        if kind == "sentencepiece"
        else concrete.tokenizer_json
    )
  elif isinstance(tokenizer, (bytes, bytearray)):
    data = bytes(tokenizer)
    kind = "bpe" if data.lstrip()[:1] == b"{" else "sentencepiece"
  else:
    kind, path = tokenizer_lib.resolve_path(os.fspath(tokenizer))
    data = epath.Path(path).read_bytes()
  if kind == "bpe":
    info = bpe_tokenizer.describe(data, path)
    return dict(
        kind=kind,
        data=data,
        path=path,
        size=info["size"],
        eos=info["eos_id"],
        pad=info["pad_id"],
        bos=None,
    )
  sp_tokenizer.check_supported(data)
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top

  sp = spm.SentencePieceProcessor()
  sp.LoadFromSerializedProto(data)
  norm = lambda i: None if i < 0 else int(i)
  return dict(
      kind=kind,
      data=data,
      path=path,
      size=sp.GetPieceSize(),
      eos=norm(sp.eos_id()),
      pad=norm(sp.pad_id()),
      bos=norm(sp.bos_id()),
  )


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
  fingerprint of the checkpoint's tokenizer file (its `tokenizer.model`
  when it has one, else its `tokenizer.json`), so the usual tokenizer
  checks apply (point `data.tokenizer.path` at `<hf_dir>`). The optimizer
  state is a placeholder: the run is for initialising from, not for
  resuming.

  Args:
    hf_dir: the Hugging Face directory (local or gs://).
    run_dir: the run directory to create.
    model_cfg: defaults to `hf_config.model_config_from_hf(hf_dir)`;
      shapes must match.

  Returns:
    The checkpoint metadata written.
  """
  from demix_jax.training import checkpointing  # pylint: disable=g-import-not-at-top

  cfg = (
      hf_config_lib.model_config_from_hf(hf_dir)
      if model_cfg is None
      else model_cfg
  )
  params = load_params(hf_dir, cfg)
  fp = hf_config_lib.tokenizer_info(hf_dir)["fingerprint"] or ""
  meta: dict[str, Any] = {
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
