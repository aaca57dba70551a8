"""A SentencePiece BPE model as Hugging Face tokenizer files (no torch).

`write_tokenizer(model_proto, out_dir)` writes what `transformers`
(`AutoTokenizer.from_pretrained`) and the `tokenizers` library need:

* `tokenizer.model`: the SentencePiece model itself (for SentencePiece-based
  loaders, and so the exact original travels with the checkpoint);
* `tokenizer.json`: the same model in the `tokenizers` format (BPE over
  characters with byte fallback), which is what the fast tokenizer, vLLM and
  lm-eval-harness use;
* `tokenizer_config.json` and `special_tokens_map.json`: the special tokens
  (pad, eos, unk; no BOS) and that no BOS/EOS is added when encoding, as
  demix_jax's `Vocab.encode` does.

Supported SentencePiece settings (what `demix_jax.data.tokenizer.train_vocab`
trains, and close variants): model_type BPE, normalizer "identity" (no
Unicode normalisation), `remove_extra_whitespaces=False`, with or without
`add_dummy_prefix`, with or without `byte_fallback`, user-defined symbols.
Anything else (Unigram models, NFKC normalisation, whitespace collapsing) is
refused with an error rather than exported approximately.

How the conversion is exact: SentencePiece's BPE encoder starts from single
characters (user-defined symbols matched first, whole) and repeatedly merges
the adjacent pair whose concatenation is a vocabulary piece with the highest
score; characters outside the vocabulary become `<0xXX>` byte pieces. The
`tokenizers` BPE model does the same with merges ranked by the merged
piece's score, its `byte_fallback`, and user-defined symbols as added tokens
(split off before the model runs). The tests check encode/decode agreement
with SentencePiece on code, prose, digits, whitespace runs and characters
outside the vocabulary.

Known difference: control pieces (`<pad>`, `</s>`, `<unk>`) written literally
in the text are plain characters to SentencePiece but special tokens to a
Hugging Face tokenizer unless it is called with `split_special_tokens=True`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from etils import epath

SPIECE_UNDERLINE = "\u2581"

# sentencepiece_model.proto: ModelProto.SentencePiece.Type
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_BPE = 2  # TrainerSpec.ModelType


class UnsupportedTokenizerError(ValueError):
  """A SentencePiece model whose behaviour the export cannot reproduce."""


def _parse(model_proto: bytes):
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top

  # A generated protobuf module: its message classes are made when it is
  # imported, so the checker sees no ModelProto in it.
  m = sentencepiece_model_pb2.ModelProto()  # type: ignore[attr-defined]
  m.ParseFromString(model_proto)
  return m


def check_supported(model_proto: bytes) -> None:
  """Raises UnsupportedTokenizerError for settings the export cannot match."""
  m = _parse(model_proto)
  ts, ns = m.trainer_spec, m.normalizer_spec
  problems = []
  if ts.model_type != _BPE:
    problems.append(f"model_type={ts.model_type} (only BPE=2 is supported)")
  if ns.name not in ("identity", "") or ns.precompiled_charsmap:
    problems.append(
        f"normalizer {ns.name!r} (only 'identity' is supported: no Unicode "
        "normalisation)"
    )
  if ns.remove_extra_whitespaces:
    problems.append("remove_extra_whitespaces=True")
  if not ns.escape_whitespaces:
    problems.append("escape_whitespaces=False")
  if ts.treat_whitespace_as_suffix:
    problems.append("treat_whitespace_as_suffix=True")
  if problems:
    raise UnsupportedTokenizerError(
        "this SentencePiece model cannot be exported exactly as a Hugging "
        "Face tokenizer: " + "; ".join(problems)
    )


def tokenizer_json(model_proto: bytes) -> dict[str, Any]:
  """The `tokenizers` JSON of a SentencePiece BPE model (see module doc)."""
  check_supported(model_proto)
  m = _parse(model_proto)
  ns = m.normalizer_spec
  pieces = [(p.piece, p.score, p.type) for p in m.pieces]
  vocab = {piece: i for i, (piece, _, _) in enumerate(pieces)}
  unk = next((p for p, _, t in pieces if t == _UNKNOWN), None)
  # Merges: every split (a, b) of a mergeable piece into two vocabulary
  # pieces, ranked by the merged piece's score (highest first), then by id.
  mergeable = {
      piece: (score, i)
      for i, (piece, score, t) in enumerate(pieces)
      if t in (_NORMAL, _USER_DEFINED)
  }
  merges = []
  for piece, (score, i) in mergeable.items():
    for cut in range(1, len(piece)):
      a, b = piece[:cut], piece[cut:]
      if a in mergeable and b in mergeable:
        merges.append((-score, i, vocab[a], vocab[b], a, b))
  merges.sort()
  added = []
  for i, (piece, _, t) in enumerate(pieces):
    if t in (_CONTROL, _UNKNOWN, _USER_DEFINED):
      added.append(
          {
              "id": i,
              "content": piece,
              "single_word": False,
              "lstrip": False,
              "rstrip": False,
              "normalized": False,
              "special": t != _USER_DEFINED,
          }
      )
  replace = {
      "type": "Replace",
      "pattern": {"String": " "},
      "content": SPIECE_UNDERLINE,
  }
  normalizer: dict[str, Any]
  if ns.add_dummy_prefix:
    normalizer = {
        "type": "Sequence",
        "normalizers": [
            {"type": "Prepend", "prepend": SPIECE_UNDERLINE},
            replace,
        ],
    }
  else:
    normalizer = replace
  decoders = [
      {
          "type": "Replace",
          "pattern": {"String": SPIECE_UNDERLINE},
          "content": " ",
      },
      {"type": "ByteFallback"},
      {"type": "Fuse"},
  ]
  if ns.add_dummy_prefix:
    decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
  return {
      "version": "1.0",
      "truncation": None,
      "padding": None,
      "added_tokens": added,
      "normalizer": normalizer,
      "pre_tokenizer": None,
      "post_processor": None,
      "decoder": {"type": "Sequence", "decoders": decoders},
      "model": {
          "type": "BPE",
          "dropout": None,
          "unk_token": unk,
          "continuing_subword_prefix": None,
          "end_of_word_suffix": None,
          "fuse_unk": True,
          "byte_fallback": bool(m.trainer_spec.byte_fallback),
          "ignore_merges": False,
          "vocab": vocab,
          "merges": [[a, b] for *_, a, b in merges],
      },
  }


def special_tokens(model_proto: bytes) -> dict[str, str | None]:
  """{"pad_token", "eos_token", "unk_token", "bos_token"} of the model."""
  m = _parse(model_proto)
  ts = m.trainer_spec

  def piece(i):
    return m.pieces[i].piece if 0 <= i < len(m.pieces) else None

  return {
      "bos_token": piece(ts.bos_id),
      "eos_token": piece(ts.eos_id),
      "unk_token": piece(ts.unk_id),
      "pad_token": piece(ts.pad_id),
  }


def write_tokenizer(
    model_proto: bytes,
    out_dir: str | os.PathLike,
    model_max_length: int | None = None,
) -> list[str]:
  """Writes the tokenizer files of a SentencePiece model into out_dir.

  Args:
    model_proto: the serialized SentencePiece model (`.model` file bytes).
    out_dir: the Hugging Face model directory.
    model_max_length: recorded in tokenizer_config.json (optional).

  Returns:
    The file names written.

  Raises:
    UnsupportedTokenizerError: settings that cannot be reproduced exactly.
  """
  tj = tokenizer_json(model_proto)
  d = epath.Path(out_dir)
  d.mkdir(parents=True, exist_ok=True)
  (d / "tokenizer.model").write_bytes(model_proto)
  (d / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False))
  sp = special_tokens(model_proto)
  present = {k: v for k, v in sp.items() if v is not None}
  cfg: dict[str, Any] = {
      "tokenizer_class": "PreTrainedTokenizerFast",
      "add_bos_token": False,
      "add_eos_token": False,
      "clean_up_tokenization_spaces": False,
      # Batched generation needs prompts flush with the new tokens.
      "padding_side": "left",
      **{
          k: sp[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")
      },
      "added_tokens_decoder": {
          str(t["id"]): {k: v for k, v in t.items() if k != "id"}
          for t in tj["added_tokens"]
      },
  }
  if model_max_length:
    cfg["model_max_length"] = int(model_max_length)
  (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
  (d / "special_tokens_map.json").write_text(json.dumps(present, indent=2))
  return [
      "tokenizer.model",
      "tokenizer.json",
      "tokenizer_config.json",
      "special_tokens_map.json",
  ]
