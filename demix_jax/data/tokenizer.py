"""The vocabulary: a SentencePiece model used through seqio.

`Vocab` follows docs/interfaces.md: `encode(text) -> list[int]` (no BOS/EOS),
`decode(ids)`, `vocab_size`, `eos_id` (1), `pad_id` (0) and `fingerprint`
(hex sha256 of the serialized model proto, recorded in checkpoint metadata
so models trained with different tokenizers are never merged). Encoding
calls the SentencePiece processor directly (the fast path); `seqio_vocab`
gives the equivalent `seqio.SentencePieceVocabulary` for seqio users.

`train_vocab` trains the default model on a seeded, balanced sample of every
source with settings that round-trip code exactly: BPE, byte fallback,
identity normalisation, whitespace kept, no dummy prefix, and "\\n" as a
piece of its own (training reads one line per sentence, so newlines would
otherwise only be reachable by byte fallback).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from typing import Iterable, Iterator, Mapping, Sequence

from absl import logging
from etils import epath
import numpy as np

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
_TRAINER_VERSION = 1  # bump when settings change, to invalidate caches


class TokenizerMismatchError(ValueError):
  """A checkpoint or cache was made with a different tokenizer."""


class Vocab:
  """A SentencePiece vocabulary (pad 0, eos 1, unk 2, no BOS)."""

  def __init__(self, model_proto: bytes, path: str = ""):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top

    self._proto = bytes(model_proto)
    self.path = path
    self._sp = spm.SentencePieceProcessor()
    self._sp.LoadFromSerializedProto(self._proto)
    if self._sp.pad_id() != PAD_ID or self._sp.eos_id() != EOS_ID:
      raise ValueError(
          f"tokenizer {path or '<proto>'}: pad_id={self._sp.pad_id()}, "
          f"eos_id={self._sp.eos_id()}; expected pad 0 and eos 1 (the seqio "
          "convention). Fix: train with pad_id=0, eos_id=1, or let demix_jax "
          "train one (data.tokenizer.path='')"
      )
    self.fingerprint = hashlib.sha256(self._proto).hexdigest()
    self._byte_lengths: np.ndarray | None = None
    self._seqio_vocab = None

  def __getstate__(self):
    # Grain worker processes receive the vocab by pickling.
    return {"proto": self._proto, "path": self.path}

  def __setstate__(self, state):
    self.__init__(state["proto"], state["path"])

  @property
  def vocab_size(self) -> int:
    return self._sp.GetPieceSize()

  @property
  def pad_id(self) -> int:
    return PAD_ID

  @property
  def eos_id(self) -> int:
    return EOS_ID

  @property
  def model_proto(self) -> bytes:
    return self._proto

  def encode(self, text: str) -> list[int]:
    """Token ids of text, without BOS or EOS."""
    return self._sp.EncodeAsIds(text)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of many texts (one C++ call)."""
    return self._sp.EncodeAsIds(list(texts))

  def decode(self, ids: Iterable[int]) -> str:
    """Text of ids; pad and eos are skipped."""
    return self._sp.DecodeIds(
        [int(i) for i in ids if i not in (PAD_ID, EOS_ID)]
    )

  def token_byte_lengths(self) -> np.ndarray:
    """UTF-8 bytes each id stands for ([vocab_size] int32; 0 for control).

    Summing it over the ids of a text gives len(text.encode()) exactly for
    this tokenizer's settings (no dummy prefix, byte fallback), which is what
    bits-per-byte needs.
    """
    if self._byte_lengths is None:
      out = np.zeros(self.vocab_size, np.int32)
      for i in range(self.vocab_size):
        if self._sp.IsControl(i) or self._sp.IsUnknown(i):
          continue
        if self._sp.IsByte(i):
          out[i] = 1
        else:
          out[i] = len(self._sp.IdToPiece(i).replace("\u2581", " ").encode())
      self._byte_lengths = out
    return self._byte_lengths

  @property
  def seqio_vocab(self):
    """The same model as a `seqio.SentencePieceVocabulary` (imports TF)."""
    if self._seqio_vocab is None:
      import seqio  # pylint: disable=g-import-not-at-top

      path = self.path
      if not path:
        raise ValueError("seqio_vocab needs a Vocab loaded from a file")
      self._seqio_vocab = seqio.SentencePieceVocabulary(path)
    return self._seqio_vocab

  def __repr__(self) -> str:
    return (
        f"Vocab(size={self.vocab_size}, fingerprint="
        f"{self.fingerprint[:12]}, path={self.path!r})"
    )


def load_vocab(path: str) -> Vocab:
  """Loads a SentencePiece `.model` file (local or gs://)."""
  p = epath.Path(path)
  if not p.exists():
    raise FileNotFoundError(
        f"data.tokenizer.path: {path} does not exist. Fix: point it at a "
        "SentencePiece .model file, or set it to '' to train one"
    )
  return Vocab(p.read_bytes(), path=os.fspath(path))


def check_fingerprint(vocab: Vocab, expected: str, what: str) -> None:
  """Raises TokenizerMismatchError if vocab is not the one `what` used."""
  if expected and expected != vocab.fingerprint:
    raise TokenizerMismatchError(
        f"{what} was made with tokenizer {expected[:12]}..., but the current "
        f"tokenizer is {vocab.fingerprint[:12]}... ({vocab.path}). Fix: use "
        "the same data.tokenizer.path (and vocab_size/sample settings) as "
        f"{what}, or start from a fresh workdir"
    )


def sample_texts(texts: Iterable[str], max_chars: int, seed: int) -> list[str]:
  """A seeded sample of whole texts totalling about max_chars characters.

  Args:
    texts: a sequence (sampled at random) or any iterable (first texts).
    max_chars: stop once this many characters are collected.
    seed: seed of the order in which a sequence is visited.

  Returns:
    The chosen texts, in visiting order.
  """
  if isinstance(texts, Sequence):
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    items: Iterator[str] = (texts[i] for i in order)
  else:
    items = iter(texts)
  out: list[str] = []
  total = 0
  for t in items:
    if total >= max_chars:
      break
    t = t[: max_chars - total]
    out.append(t)
    total += len(t)
  return out


def _training_lines(
    texts_by_source: Mapping[str, Iterable[str]], sample_chars: int, seed: int
) -> list[str]:
  lines: list[str] = []
  for i, name in enumerate(sorted(texts_by_source)):
    for text in sample_texts(texts_by_source[name], sample_chars, seed + i):
      lines.extend(ln for ln in text.split("\n") if ln)
  random.Random(seed).shuffle(lines)
  return lines


def train_vocab(
    texts_by_source: Mapping[str, Iterable[str]],
    vocab_size: int,
    out_path: str,
    seed: int = 0,
    sample_chars: int = 2_000_000,
) -> Vocab:
  """Trains (or loads from cache) a BPE SentencePiece model.

  The sample is balanced: up to `sample_chars` characters from every source,
  chosen with `seed`. The model is cached at `out_path` with a sidecar
  `out_path + ".json"` holding the hash of the sample and settings; a cached
  model is reused only when that hash matches.

  Args:
    texts_by_source: source name -> its training documents.
    vocab_size: pieces in the model (>= 300: 256 bytes + specials + merges).
    out_path: where to write the `.model` file (local or gs://).
    seed: sampling seed.
    sample_chars: characters sampled per source.

  Returns:
    The Vocab.
  """
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top

  if vocab_size < 300:
    raise ValueError(
        f"data.tokenizer.vocab_size={vocab_size} is too small for a byte "
        "fallback model (256 byte pieces + specials). Fix: use >= 300"
    )
  lines = _training_lines(texts_by_source, sample_chars, seed)
  if not lines:
    raise ValueError("train_vocab: the sources gave no text to train on")
  key = hashlib.sha256()
  key.update(json.dumps([_TRAINER_VERSION, vocab_size, seed]).encode())
  for line in lines:
    key.update(line.encode())
    key.update(b"\n")
  digest = key.hexdigest()
  path, meta = epath.Path(out_path), epath.Path(out_path + ".json")
  if path.exists() and meta.exists():
    if json.loads(meta.read_text()).get("key") == digest:
      return load_vocab(out_path)
    logging.info("tokenizer cache %s is stale; retraining", out_path)
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines),
      model_writer=model,
      model_type="bpe",
      vocab_size=vocab_size,
      character_coverage=1.0,
      byte_fallback=True,
      normalization_rule_name="identity",
      remove_extra_whitespaces=False,
      add_dummy_prefix=False,
      allow_whitespace_only_pieces=True,
      split_digits=True,
      user_defined_symbols=["\n"],
      pad_id=PAD_ID,
      eos_id=EOS_ID,
      unk_id=UNK_ID,
      bos_id=-1,
      max_sentence_length=1 << 14,
      shuffle_input_sentence=False,
      num_threads=1,
      seed_sentencepiece_size=1_000_000,
      minloglevel=2,
  )
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(model.getvalue())
  meta.write_text(
      json.dumps(
          {
              "key": digest,
              "vocab_size": vocab_size,
              "seed": seed,
              "lines": len(lines),
          }
      )
  )
  return load_vocab(out_path)
