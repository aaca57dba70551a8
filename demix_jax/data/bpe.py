"""Byte-level BPE tokenizers: Hugging Face `tokenizers` `tokenizer.json` files.

`BpeVocab` implements `tokenizer.Vocab` over a byte-level BPE
`tokenizer.json` (the format Qwen3 and GPT-2-style models ship): encoding
and batch encoding run in the `tokenizers` Rust library, with no special
tokens added (no BOS; the data pipeline appends EOS itself).

Which ids are eos and pad (the rule, in order):

1. `tokenizer_config.json` beside the file, when present: its `eos_token`
   and `pad_token` (a string or `{"content": ...}`), looked up among the
   tokens; a missing or null `pad_token` means pad = eos. Qwen3 base models
   give `<|endoftext|>` for both.
2. Otherwise the special tokens of the file itself: eos is the first of
   `EOS_NAMES` present, pad the first of `PAD_NAMES` present, else eos.
3. No eos found: an error naming data.tokenizer.path.

Byte lengths (for bits per byte): a byte-level BPE writes every byte as one
character of a 256-character alphabet (printable Latin-1 bytes as
themselves, the others shifted to U+0100 onwards), so a vocabulary token
stands for as many bytes as it has characters; an added token that is not
special stands for its text's UTF-8 bytes; special tokens count 0. Summed
over the ids of a text this is the UTF-8 length of the text after the
tokenizer's normaliser (Qwen3's is NFC; `train_bpe` uses none). As in
`transformers`, a special token's literal text inside a document is read as
that token.

`train_bpe` trains one with `tokenizers` on sampled documents.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Mapping, Sequence

from etils import epath
import numpy as np

EOS_NAMES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")
PAD_NAMES = ("<|pad|>", "<pad>")
# Special tokens of a tokenizer trained by `train_bpe`.
TRAINED_SPECIALS = ("<|endoftext|>",)


def byte_alphabet() -> dict[str, int]:
  """Character -> byte of the byte-level alphabet (256 entries)."""
  kept = [
      *range(ord("!"), ord("~") + 1),
      *range(0xA1, 0xAC + 1),
      *range(0xAE, 0xFF + 1),
  ]
  out = {chr(b): b for b in kept}
  shifted = 0
  for b in range(256):
    if b not in out.values():
      out[chr(256 + shifted)] = b
      shifted += 1
  return out


def _has_type(node: Any, name: str) -> bool:
  """Whether a tokenizer.json component (possibly a Sequence) has `name`."""
  if not isinstance(node, Mapping):
    return False
  if node.get("type") == name:
    return True
  return any(
      _has_type(n, name)
      for key in ("pretokenizers", "decoders", "normalizers", "processors")
      for n in node.get(key) or ()
  )


def _content(v: Any) -> str | None:
  if isinstance(v, Mapping):
    v = v.get("content")
  return v if isinstance(v, str) else None


def token_ids(spec: Mapping[str, Any]) -> dict[str, int]:
  """Every token of a parsed tokenizer.json (vocabulary and added) -> id."""
  out = {
      str(k): int(v)
      for k, v in (spec.get("model") or {}).get("vocab", {}).items()
  }
  out.update({t["content"]: int(t["id"]) for t in spec.get("added_tokens", ())})
  return out


def config_beside(path: str) -> dict[str, Any] | None:
  """The parsed tokenizer_config.json in path's directory, or None."""
  if not path:
    return None
  beside = epath.Path(path).parent / "tokenizer_config.json"
  return json.loads(beside.read_text()) if beside.exists() else None


def special_ids(
    spec: Mapping[str, Any],
    token_to_id: Mapping[str, int],
    config: Mapping[str, Any] | None,
    where: str,
) -> tuple[int, int]:
  """(eos_id, pad_id) by the module's rule (no `tokenizers` needed).

  Args:
    spec: the parsed tokenizer.json.
    token_to_id: every token (vocabulary and added) -> id (`token_ids`).
    config: the parsed tokenizer_config.json beside it, or None.
    where: the file, for errors.
  """
  eos = pad = None
  if config is not None:
    eos_tok = _content(config.get("eos_token"))
    pad_tok = _content(config.get("pad_token"))
    for name, tok in (("eos_token", eos_tok), ("pad_token", pad_tok)):
      if tok is not None and tok not in token_to_id:
        raise ValueError(
            f"data.tokenizer.path: {where}: tokenizer_config.json's {name} "
            f"{tok!r} is not a token of the tokenizer. Fix: name one of its "
            "tokens there"
        )
    eos = token_to_id.get(eos_tok) if eos_tok is not None else None
    pad = token_to_id.get(pad_tok) if pad_tok is not None else None
  specials = [t["content"] for t in spec.get("added_tokens", ())]
  if eos is None:
    eos = next((token_to_id[n] for n in EOS_NAMES if n in specials), None)
    if eos is None:
      raise ValueError(
          f"data.tokenizer.path: {where} has no end-of-text token (none of "
          f"{EOS_NAMES} among its added tokens, and no tokenizer_config.json "
          "naming eos_token beside it). Fix: put a tokenizer_config.json "
          'with "eos_token" next to it'
      )
  if pad is None:
    pad = next((token_to_id[n] for n in PAD_NAMES if n in specials), eos)
  return int(eos), int(pad)


class BpeVocab:
  """A byte-level BPE `tokenizer.json` (Hugging Face `tokenizers`)."""

  kind = "bpe"

  def __init__(
      self,
      data: bytes,
      path: str = "",
      config: Mapping[str, Any] | None = None,
  ):
    """Builds it from the file's bytes.

    Args:
      data: the tokenizer.json bytes.
      path: the file it came from ("" = in memory); its directory's
        tokenizer_config.json is read when `config` is None.
      config: the parsed tokenizer_config.json (overrides the one beside).
    """
    import tokenizers  # pylint: disable=g-import-not-at-top

    self._data = bytes(data)
    self.path = path
    where = path or "<tokenizer.json>"
    try:
      spec = json.loads(self._data.decode("utf-8"))
      self._tok = tokenizers.Tokenizer.from_str(self._data.decode("utf-8"))
    except Exception as e:  # tokenizers raises a bare Exception  # noqa: BLE001
      raise ValueError(
          f"data.tokenizer.path: {where} is not a tokenizers tokenizer.json "
          f"({str(e).splitlines()[0] if str(e) else type(e).__name__}). "
          "Fix: give a tokenizer.json saved by tokenizers/transformers"
      ) from e
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or not (
        _has_type(spec.get("pre_tokenizer"), "ByteLevel")
        and _has_type(spec.get("decoder"), "ByteLevel")
    ):
      raise ValueError(
          f"data.tokenizer.path: {where} is not a byte-level BPE (model "
          f"{model.get('type')!r}; a ByteLevel pre-tokenizer and decoder are "
          "needed). Fix: give a byte-level BPE tokenizer.json (as Qwen3 "
          "ships), or the SentencePiece .model of a SentencePiece tokenizer"
      )
    if config is None:
      config = config_beside(path)
    self._config = dict(config) if config is not None else None
    self._specials = {int(t["id"]): t for t in spec.get("added_tokens", ())}
    token_to_id = self._tok.get_vocab(with_added_tokens=True)
    self._eos, self._pad = special_ids(spec, token_to_id, config, where)
    self.fingerprint = hashlib.sha256(self._data).hexdigest()
    self._byte_lengths: np.ndarray | None = None

  def __getstate__(self):
    # Grain worker processes receive the vocab by pickling.
    return {"data": self._data, "path": self.path, "config": self._config}

  def __setstate__(self, state):
    self.__init__(state["data"], state["path"], state["config"])

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  @property
  def pad_id(self) -> int:
    return self._pad

  @property
  def eos_id(self) -> int:
    return self._eos

  @property
  def tokenizer_json(self) -> bytes:
    """The tokenizer.json bytes (what the fingerprint hashes)."""
    return self._data

  @property
  def special_tokens(self) -> dict[str, str]:
    """{"eos_token", "pad_token"} as token strings."""
    eos = self._tok.id_to_token(self._eos)
    pad = self._tok.id_to_token(self._pad)
    # Both ids were taken from this tokenizer's own vocabulary (__init__),
    # so id_to_token finds them.
    assert eos is not None and pad is not None
    return {"eos_token": eos, "pad_token": pad}

  def encode(self, text: str) -> list[int]:
    """Token ids of text, without BOS or EOS."""
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of many texts (one call into the Rust batch encoder)."""
    encs = self._tok.encode_batch_fast(list(texts), add_special_tokens=False)
    return [e.ids for e in encs]

  def decode(self, ids: Iterable[int]) -> str:
    """Text of ids; special tokens (pad and eos among them) are skipped."""
    return self._tok.decode(
        [int(i) for i in ids if i not in (self._pad, self._eos)],
        skip_special_tokens=True,
    )

  def token_byte_lengths(self) -> np.ndarray:
    """UTF-8 bytes each id stands for ([vocab_size] int32; 0 for special).

    Raises:
      ValueError: a vocabulary token outside the byte-level alphabet.
    """
    if self._byte_lengths is None:
      alphabet = byte_alphabet()
      out = np.zeros(self.vocab_size, np.int32)
      for i in range(self.vocab_size):
        added = self._specials.get(i)
        if added is not None:
          out[i] = 0 if added.get("special") else len(added["content"].encode())
          continue
        tok = self._tok.id_to_token(i)
        if tok is None:
          continue
        if any(c not in alphabet for c in tok):
          raise ValueError(
              f"data.tokenizer.path: {self.path or '<tokenizer.json>'}: "
              f"token {i} ({tok!r}) is not written in the byte-level "
              "alphabet, so its bytes are unknown. Fix: give a byte-level "
              "BPE tokenizer.json"
          )
        out[i] = len(tok)
      self._byte_lengths = out
    return self._byte_lengths

  @property
  def seqio_vocab(self):
    raise ValueError(
        f"{self.path or 'this tokenizer'} is a byte-level BPE; seqio has no "
        "vocabulary for it (seqio tasks need a SentencePiece .model). The "
        "grain pipeline reads both kinds"
    )

  def __repr__(self) -> str:
    return (
        f"BpeVocab(size={self.vocab_size}, eos={self._eos}, pad={self._pad}, "
        f"fingerprint={self.fingerprint[:12]}, path={self.path!r})"
    )


def train_bpe(texts: Iterable[str], vocab_size: int) -> bytes:
  """A byte-level BPE trained with `tokenizers` on texts; tokenizer.json bytes.

  Settings: no normaliser (text round-trips exactly), digits split one by
  one, then the byte-level pre-tokenizer with its word-splitting regex and
  no prefix space; `<|endoftext|>` is id 0 (eos and pad); the alphabet holds
  all 256 bytes, so any text encodes.

  Args:
    texts: the training documents (whole texts; newlines are bytes too).
    vocab_size: ids in the result, the special token included.
  """
  from tokenizers import Tokenizer
  from tokenizers import decoders  # pylint: disable=g-import-not-at-top
  from tokenizers import models
  from tokenizers import pre_tokenizers
  from tokenizers import processors
  from tokenizers import trainers

  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.Sequence(
      [
          pre_tokenizers.Digits(individual_digits=True),
          pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
      ]
  )
  tok.decoder = decoders.ByteLevel()
  tok.post_processor = processors.ByteLevel(trim_offsets=False)
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size,
      special_tokens=list(TRAINED_SPECIALS),
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False,
  )
  tok.train_from_iterator(texts, trainer)
  return tok.to_str().encode("utf-8")
