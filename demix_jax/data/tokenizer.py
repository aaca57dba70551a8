"""Tokenizers: SentencePiece models and byte-level BPE `tokenizer.json` files.

`Vocab` is the interface every tokenizer implements (docs/interfaces.md):
`encode(text) -> list[int]` (no BOS/EOS), `encode_batch(texts)` (one call
into the native encoder), `decode(ids)`, `vocab_size`, `pad_id`, `eos_id`,
`fingerprint` (hex sha256 of the tokenizer file's bytes, recorded in
checkpoint metadata so models trained with different tokenizers are never
merged), `token_byte_lengths()` (for bits per byte), `kind` and `path`;
instances pickle (grain worker processes receive them that way).

Two kinds implement it:

* `SentencePieceVocab`: a SentencePiece `.model` (pad 0, eos 1, unk 2, no
  BOS; the seqio convention). `seqio_vocab` gives the equivalent
  `seqio.SentencePieceVocabulary`.
* `bpe.BpeVocab`: a Hugging Face `tokenizers` byte-level BPE
  `tokenizer.json`, as Qwen3 ships it; see demix_jax/data/bpe.py for how
  its pad and eos ids are chosen.

`load_vocab(path)` picks the kind from the file (`.model` -> SentencePiece,
`.json` -> BPE; a directory -> its `tokenizer.model`, else its
`tokenizer.json`). `train_vocab` trains either kind on a seeded sample of
every source (`text_sample.sample_texts`, read as a stream); the SentencePiece settings round-trip code
exactly: BPE, byte fallback, identity normalisation, whitespace kept, no
dummy prefix, and "\\n" as a piece of its own (training reads one line per
sentence, so newlines would otherwise only be reachable by byte fallback).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from typing import (
    Iterable,
    Iterator,
    Mapping,
    Protocol,
    Sequence,
    runtime_checkable,
)

from absl import logging
from etils import epath
import numpy as np

from demix_jax.data import bpe as bpe_lib
from demix_jax.data import text_sample

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
_TRAINER_VERSION = 1  # bump when settings change, to invalidate caches
KINDS = ("sentencepiece", "bpe")
MIN_VOCAB_SIZE = 300  # 256 bytes + specials + merges, either kind
# The file a trained tokenizer of each kind is cached as.
TRAINED_NAMES = {"sentencepiece": "tokenizer.model", "bpe": "tokenizer.json"}


class TokenizerMismatchError(ValueError):
  """A checkpoint or cache was made with a different tokenizer."""


@runtime_checkable
class Vocab(Protocol):
  """What demix_jax needs of a tokenizer (both kinds implement it)."""

  kind: str  # "sentencepiece" or "bpe"
  path: str  # the file it was loaded from ("" = in memory)
  fingerprint: str  # hex sha256 of the tokenizer file's bytes

  @property
  def vocab_size(self) -> int:
    """Number of ids (including special tokens)."""

  @property
  def pad_id(self) -> int:
    """The id padding is written with."""

  @property
  def eos_id(self) -> int:
    """The id that ends every document."""

  def encode(self, text: str) -> list[int]:
    """Token ids of text, without BOS or EOS."""

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """`[encode(t) for t in texts]`, in one native call."""

  def decode(self, ids: Iterable[int]) -> str:
    """Text of ids; pad, eos (and other control tokens) are skipped."""

  def token_byte_lengths(self) -> np.ndarray:
    """UTF-8 bytes each id stands for ([vocab_size] int32; 0 = control)."""


class SentencePieceVocab:
  """A SentencePiece vocabulary (pad 0, eos 1, unk 2, no BOS)."""

  kind = "sentencepiece"

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
        raise ValueError(
            "seqio_vocab needs a SentencePieceVocab loaded from a file"
        )
      self._seqio_vocab = seqio.SentencePieceVocabulary(path)
    return self._seqio_vocab

  def __repr__(self) -> str:
    return (
        f"SentencePieceVocab(size={self.vocab_size}, fingerprint="
        f"{self.fingerprint[:12]}, path={self.path!r})"
    )


def _read_file(path: str) -> bytes:
  p = epath.Path(path)
  if not p.exists():
    raise FileNotFoundError(
        f"data.tokenizer.path: {path} does not exist. Fix: point it at a "
        "SentencePiece .model, a tokenizer.json, or a directory holding one, "
        "or set it to '' to train one"
    )
  return p.read_bytes()


def resolve_path(path: str) -> tuple[str, str]:
  """(kind, file) of a tokenizer path: a file or a directory holding one.

  A directory gives its `tokenizer.model` when present (demix_jax's own
  exports hold both files, and checkpoints record the `.model`'s
  fingerprint), else its `tokenizer.json` (a Qwen3 release).

  Raises:
    ValueError: a file that is neither kind, or a directory holding
      neither file (the message names data.tokenizer.path).
  """
  p = epath.Path(path)
  if p.is_dir():
    for kind, name in (
        ("sentencepiece", "tokenizer.model"),
        ("bpe", "tokenizer.json"),
    ):
      if (p / name).exists():
        return kind, os.fspath(p / name)
    raise ValueError(
        f"data.tokenizer.path: the directory {path} holds neither "
        "tokenizer.model nor tokenizer.json. Fix: point it at a directory "
        "with one of them (e.g. a Hugging Face model directory) or a file"
    )
  if p.suffix == ".json":
    return "bpe", os.fspath(path)
  if p.suffix == ".model":
    return "sentencepiece", os.fspath(path)
  raise ValueError(
      f"data.tokenizer.path: {path} is neither a SentencePiece .model nor a "
      "tokenizer.json. Fix: give a file ending in .model or .json, or a "
      "directory holding tokenizer.model or tokenizer.json"
  )


def load_vocab(path: str, kind: str | None = None) -> Vocab:
  """Loads a tokenizer (local or gs://), choosing its kind from the file.

  Args:
    path: a `.model` file (SentencePiece), a `.json` file (byte-level BPE),
      or a directory holding `tokenizer.model` or `tokenizer.json`.
    kind: if given, the kind the caller needs; another kind is refused.

  Returns:
    A SentencePieceVocab or a bpe.BpeVocab.

  Raises:
    FileNotFoundError: the path does not exist.
    ValueError: not a tokenizer, the wrong kind, or unusable special ids
      (every message names data.tokenizer.path).
  """
  found, file = resolve_path(path)
  if kind is not None and kind != found:
    raise ValueError(
        f"data.tokenizer.path: {path} is a {found} tokenizer, but a {kind} "
        f"one is needed here. Fix: give a "
        f"{'SentencePiece .model' if kind == 'sentencepiece' else 'tokenizer.json'}"
    )
  data = _read_file(file)
  if found == "bpe":
    return bpe_lib.BpeVocab(data, path=file)
  return SentencePieceVocab(data, path=file)


def check_fingerprint(vocab: Vocab, expected: str, what: str) -> None:
  """Raises TokenizerMismatchError if vocab is not the one `what` used."""
  if expected and expected != vocab.fingerprint:
    raise TokenizerMismatchError(
        f"{what} was made with tokenizer {expected[:12]}..., but the current "
        f"tokenizer is {vocab.fingerprint[:12]}... ({vocab.path}). Fix: use "
        "the same data.tokenizer.path (and vocab_size/sample settings) as "
        f"{what}, or start from a fresh workdir"
    )


def _samples(
    texts_by_source: Mapping[str, Iterable[str]],
    sample_chars: int,
    seed: int,
    sampler: str,
) -> Iterator[str]:
  for i, name in enumerate(sorted(texts_by_source)):
    yield from text_sample.sample_texts(
        texts_by_source[name], sample_chars, seed + i, sampler
    )


def _training_lines(texts: Iterable[str], seed: int) -> list[str]:
  lines: list[str] = []
  for text in texts:
    lines.extend(ln for ln in text.split("\n") if ln)
  random.Random(seed).shuffle(lines)
  return lines


# ------------------------------------------------------------- training


def train_vocab(
    texts_by_source: Mapping[str, Iterable[str]],
    vocab_size: int,
    out_path: str,
    seed: int = 0,
    sample_chars: int = 2_000_000,
    kind: str = "sentencepiece",
    sampler: str = "stream",
) -> Vocab:
  """Trains (or loads from cache) a tokenizer of `kind` on a sample.

  The sample is balanced: up to `sample_chars` characters from every source,
  chosen with `seed` by `sampler`; the sources are read as streams and only
  the sample is held. The tokenizer is cached at `out_path` with a sidecar
  `out_path + ".json"` holding the hash of the sample and settings; a cached
  one is reused only when that hash matches.

  Args:
    texts_by_source: source name -> its training documents (an iterable).
    vocab_size: ids in the tokenizer (>= 300: 256 bytes + specials + merges).
    out_path: where to write it (local or gs://): a `.model` file for
      "sentencepiece", a `.json` file for "bpe".
    seed: sampling seed.
    sample_chars: characters sampled per source.
    kind: "sentencepiece" (pad 0, eos 1) or "bpe" (byte-level,
      `bpe.train_bpe`).
    sampler: "stream" or "shuffle" (see `text_sample.sample_texts`).

  Returns:
    The Vocab.
  """
  if kind not in KINDS:
    raise ValueError(
        f"data.tokenizer.kind={kind!r} is not one of {KINDS}. Fix: use one "
        f"of {KINDS}"
    )
  if vocab_size < MIN_VOCAB_SIZE:
    raise ValueError(
        f"data.tokenizer.vocab_size={vocab_size} is too small for a byte "
        f"level tokenizer (256 byte pieces + specials). Fix: use >= "
        f"{MIN_VOCAB_SIZE}"
    )
  texts = list(_samples(texts_by_source, sample_chars, seed, sampler))
  lines = _training_lines(texts, seed)
  if not lines:
    raise ValueError("train_vocab: the sources gave no text to train on")
  key = hashlib.sha256()
  settings: list[int | str] = [_TRAINER_VERSION, vocab_size, seed]
  if (kind, sampler) != ("sentencepiece", "shuffle"):
    settings += [kind, sampler]
  key.update(json.dumps(settings).encode())
  for line in lines:
    key.update(line.encode())
    key.update(b"\n")
  digest = key.hexdigest()
  path, meta = epath.Path(out_path), epath.Path(out_path + ".json")
  if path.exists() and meta.exists():
    if json.loads(meta.read_text()).get("key") == digest:
      return load_vocab(out_path, kind)
    logging.info("tokenizer cache %s is stale; retraining", out_path)
  if kind == "bpe":
    data = bpe_lib.train_bpe(texts, vocab_size)
  else:
    data = _train_sentencepiece(lines, vocab_size)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data)
  meta.write_text(
      json.dumps(
          {
              "key": digest,
              "kind": kind,
              "vocab_size": vocab_size,
              "seed": seed,
              "sampler": sampler,
              "lines": len(lines),
          }
      )
  )
  return load_vocab(out_path, kind)


def _train_sentencepiece(lines: list[str], vocab_size: int) -> bytes:
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top

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
  return model.getvalue()
