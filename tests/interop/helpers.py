"""Shared pieces of the interop tests: tiny configs, random params, the
texts a test tokenizer is trained on."""

import inspect
import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np

from demix_jax import models

# d_model != n_heads * head_dim and n_kv_heads < n_heads, so a wrong reshape
# or head grouping cannot pass by accident; non-default eps and theta check
# that config.json carries them.
TINY = dict(
    vocab_size=400,
    d_model=48,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    head_dim=16,
    d_ff=80,
    rope_theta=5_000.0,
    norm_eps=1e-5,
)


def tiny_cfg(tie: bool = True, **kw) -> models.ModelConfig:
  return models.ModelConfig(**{**TINY, "tie_embeddings": tie, **kw})


def random_params(cfg: models.ModelConfig, seed: int = 0):
  """init_params' structure with every leaf redrawn at a scale where each
  parameter visibly moves the logits (normal(0.2); norm scales 1 +
  normal(0.2)), so a mapping error cannot hide below the tolerance."""
  shapes = models.init_params(cfg, jax.random.key(seed))
  rng = np.random.default_rng(seed)
  flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  out = []
  for path, x in flat:
    is_norm = any(getattr(k, "key", None) == "scale" for k in path)
    v = rng.normal(0.0, 0.2, x.shape).astype(np.float32)
    out.append(jnp.asarray(1.0 + v if is_norm else v))
  return jax.tree.unflatten(treedef, out)


TOKENIZER_TEXTS = [inspect.getsource(m) for m in (json.decoder, textwrap)]
