r"""Your own data: candidates from local JSON-lines files.

Command (one glob per candidate; the first is the general pool G):

  python -m demix_jax.main \
      --config='configs/local_jsonl.py:general=data/web/*.jsonl,math=data/math/*.jsonl,code=data/code/*.jsonl' \
      --workdir=workdir/mine

Each JSONL line is one document; its text is the field `field` (default
"text"; dots reach nested fields). Held-out documents are a deterministic
1% hash split of each source (by content, so train and held-out never
overlap); point `heldout_paths` at your own files in the config below to
use a fixed held-out set instead. Everything else (model, budgets, search)
is the demo's; add `runlocal` to the argument for a one-minute smoke run,
and override any field with `--config.a.b=value`.
"""

import ml_collections

from configs import demo
from demix_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns a demo-shaped config over local JSONL candidates."""
  arg = config_lib.parse_arg(
      arg,
      runlocal=False,
      general="",
      math="",
      code="",
      field="text",
      tokenizer="",
  )
  c = demo.pipeline_defaults("runlocal" if arg.runlocal else None)
  names = [n for n in ("general", "math", "code") if arg[n]]
  if "general" not in names or len(names) < 2:
    raise config_lib.ConfigError(
        "<arg>",
        "needs general=<glob> and at least one more candidate",
        "pass e.g. general=web/*.jsonl,code=code/*.jsonl",
    )
  c.data.sources = ml_collections.ConfigDict(
      {
          n: {"kind": "jsonl", "paths": (arg[n],), "feature": arg.field}
          for n in names
      }
  )
  c.data.candidates = tuple(names)
  c.data.general = "general"
  c.data.tokenizer.path = arg.tokenizer  # "" = train one on your data
  c.data.tokenizer.sampler = "stream"  # one pass over files of any size
  return c
