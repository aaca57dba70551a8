r"""The paper's Table 6 transfer: the 1.7B-found mixture trained at 8B.

Same data and training recipe as configs/qwen3_1p7b.py (512 x 8192 tokens
per step), with the Qwen/Qwen3-8B shape (untied LM head). As in the
paper's Table 6, the 8B run does not search: its final stage trains the
mixture the finished 1.7B run found, read from that run's
report/mixture.json (`final.mixture_from`, default
`gs://YOUR_BUCKET/demix/qwen3_1p7b/report/mixture.json`; the `bucket`
argument replaces the bucket), beside the natural-proportion baseline.
The default stages are prepare -> base -> final -> report: no 8B
components and no 8B search. Preflight reads the mixture and refuses one
whose sources are not this run's candidates (exit 2) before training.
Command, after the 1.7B run finished (on every worker of the slice):

  python -m demix_jax.main --config=configs/qwen3_8b.py \
      --workdir=gs://YOUR_BUCKET/demix/qwen3_8b --multihost=on

To search again with 8B components instead, run the whole pipeline with
`--config.final.mixture_from= --stages=prepare,base,components,search,final,report`.
Check before launching:

  python -m demix_jax.aot --config=configs/qwen3_8b.py --topology=v5p-128

Sized for a v5p-128 slice (64 chips, physical 4x4x4; mesh data=4 x
fsdp=16, inherited from qwen3_1p7b: fsdp 16 maps onto the torus, an axis
of 8 would not). The compile check prints bytes per device and step-time
bounds (train, and the merge and generation steps an 8B search would
need) and a cost plan of this config's stages (base and final); the
README's compile-check table holds the figures, with their date and
machine. docs/paper_settings.md lists the settings (the test
checks this config against it too).
"""

import ml_collections

from configs import qwen3_1p7b
from demix_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the Qwen3-8B DeMix config (`runlocal` = tiny CPU twin)."""
  c = qwen3_1p7b.get_config(arg)
  if "runlocal" in (arg or ""):
    return c
  bucket = config_lib.parse_arg(
      arg, runlocal=False, bucket="gs://YOUR_BUCKET"
  ).bucket
  c.model.vocab_size = 151_936
  c.model.d_model = 4096
  c.model.n_layers = 36
  c.model.n_heads = 32
  c.model.n_kv_heads = 8
  c.model.head_dim = 128
  c.model.d_ff = 12288
  c.model.tie_embeddings = False
  # Table 6: the 1.7B run's found mixture, trained here at 8B; no search.
  c.final.mixture_from = f"{bucket}/demix/qwen3_1p7b/report/mixture.json"
  c.stages = ("prepare", "base", "final", "report")
  return c
