"""A byte-level BPE tokenizer.json as Hugging Face tokenizer files.

`write_tokenizer(data, out_dir, source=...)` writes what
`transformers.AutoTokenizer.from_pretrained(out_dir)` loads:

* `tokenizer.json`: the file itself, byte for byte (so the exported
  directory's tokenizer has the fingerprint the checkpoints record);
* `tokenizer_config.json`: the one beside the source file when there is one
  (a Qwen3 release's, with its chat template), else a minimal one naming
  the eos and pad tokens (demix_jax.data.bpe's rule) and no BOS;
* `special_tokens_map.json`: the eos and pad tokens.

Reads the JSON only; the `tokenizers` library is not needed.
"""

from __future__ import annotations

import json
import os
from typing import Any

from etils import epath

from demix_jax.data import bpe as bpe_lib

FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def describe(data: bytes, source: str = "") -> dict[str, Any]:
  """{"size", "eos_id", "pad_id", "eos_token", "pad_token", "config"} of a
  tokenizer.json's bytes; `config` is the tokenizer_config.json beside
  `source` (or None)."""
  where = source or "<tokenizer.json>"
  try:
    spec = json.loads(bytes(data).decode("utf-8"))
  except (UnicodeDecodeError, ValueError) as e:
    raise ValueError(f"{where} is not a JSON tokenizer.json: {e}") from e
  ids = bpe_lib.token_ids(spec)
  config = bpe_lib.config_beside(source)
  eos, pad = bpe_lib.special_ids(spec, ids, config, where)
  by_id = {i: t for t, i in ids.items()}
  return {
      "size": (max(ids.values()) + 1) if ids else 0,
      "eos_id": eos,
      "pad_id": pad,
      "eos_token": by_id[eos],
      "pad_token": by_id[pad],
      "config": config,
      "added_tokens": list(spec.get("added_tokens", ())),
  }


def write_tokenizer(
    data: bytes,
    out_dir: str | os.PathLike,
    *,
    source: str = "",
    model_max_length: int | None = None,
) -> list[str]:
  """Writes the tokenizer files of a byte-level BPE into out_dir.

  Args:
    data: the tokenizer.json bytes.
    out_dir: the Hugging Face model directory.
    source: the file `data` came from (its tokenizer_config.json is kept).
    model_max_length: recorded in a written tokenizer_config.json.

  Returns:
    The file names written.
  """
  info = describe(data, source)
  d = epath.Path(out_dir)
  d.mkdir(parents=True, exist_ok=True)
  (d / "tokenizer.json").write_bytes(bytes(data))
  cfg = info["config"]
  if cfg is None:
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "bos_token": None,
        "eos_token": info["eos_token"],
        "pad_token": info["pad_token"],
        "added_tokens_decoder": {
            str(t["id"]): {k: v for k, v in t.items() if k != "id"}
            for t in info["added_tokens"]
        },
    }
    if model_max_length:
      cfg["model_max_length"] = int(model_max_length)
  (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
  specials = {"eos_token": info["eos_token"], "pad_token": info["pad_token"]}
  (d / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
  return list(FILES)
