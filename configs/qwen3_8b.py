r"""The paper's Table 6 transfer: Qwen3-8B components, seven candidates.

Same pipeline and data as configs/qwen3_1p7b.py (512 x 8192 tokens per
step), with the Qwen/Qwen3-8B shape (untied LM head). Check before
launching:

  python -m demix_jax.aot --config=configs/qwen3_8b.py --topology=v5p-128

Compiled for a v5p-128 slice (64 chips, physical 4x4x4; mesh data=4 x
fsdp=16, inherited from qwen3_1p7b: fsdp 16 maps onto the torus, an axis
of 8 would not) by that command (XLA:TPU for compile-only devices, no TPU
attached); what it reported per device (train step, a merge call of 64
mixtures) and the time bounds at the v5p peak are in README.md, "At TPU
scale".
"""

import ml_collections

from configs import qwen3_1p7b


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the Qwen3-8B DeMix config (`runlocal` = tiny CPU twin)."""
  c = qwen3_1p7b.get_config(arg)
  if "runlocal" in (arg or ""):
    return c
  c.model.vocab_size = 151_936
  c.model.d_model = 4096
  c.model.n_layers = 36
  c.model.n_heads = 32
  c.model.n_kv_heads = 8
  c.model.head_dim = 128
  c.model.d_ff = 12288
  c.model.tie_embeddings = False
  return c
