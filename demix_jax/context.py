"""Run context: the typed objects every stage shares, built lazily.

`RunContext(config, workdir)` is the one place a pipeline ConfigDict is
turned into typed library arguments (SourceSpecs, ModelConfig, OptimConfig,
TrainConfig, ...). Expensive pieces (corpora, tokenizer, token counts, the
evaluation suite) are built on first use and cached under `workdir/data/`,
so every stage, the CLI, tests and notebooks see the same objects.
"""

from __future__ import annotations

import functools
import json
import math
import os
from typing import Any, Mapping

from absl import logging
from etils import epath
import jax
import ml_collections
import numpy as np

from demix_jax import config_lib
from demix_jax import models
from demix_jax.data import mixture as mixture_lib
from demix_jax.data import sources as sources_lib
from demix_jax.data import tokenizer as tokenizer_lib
from demix_jax.training import optim as optim_lib

# Config sections each stage's outputs depend on (a stage is redone, or
# refused, when they change; see pipeline.stage_done).
_TRAINING = ("seed", "model", "data", "train", "optim", "base")
_SEARCH = _TRAINING + ("components", "eval", "merge", "search")
STAGE_SECTIONS = {
    "base": _TRAINING,
    "components": _TRAINING + ("components",),
    "search": _SEARCH,
    "final": _SEARCH + ("final",),
    "validate": _SEARCH + ("validate",),
}


def section_hash(config: ml_collections.ConfigDict, stage: str) -> str:
  """Hash of the config sections a stage depends on."""
  full = config_lib.to_dict(config)
  return config_lib.config_hash({k: full.get(k) for k in STAGE_SECTIONS[stage]})


class RunContext:
  """Typed, lazily built view of one pipeline run."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    # Local workdirs are made absolute once here: Orbax rejects relative
    # paths, and done.json files record run directories for later stages.
    if workdir and "://" not in str(workdir):
      workdir = os.path.abspath(os.fspath(workdir))
    self.workdir = epath.Path(workdir)
    self.data_dir = self.workdir / "data"

  # ------------------------------------------------------------- typed cfg
  @functools.cached_property
  def candidates(self) -> tuple[str, ...]:
    return tuple(self.config.data.candidates)

  @functools.cached_property
  def general(self) -> str:
    return str(self.config.data.general)

  @functools.cached_property
  def beta(self) -> float:
    return float(self.config.data.beta)

  @functools.cached_property
  def model_cfg(self) -> models.ModelConfig:
    return models.ModelConfig.from_dict(config_lib.to_dict(self.config.model))

  @functools.cached_property
  def optim_cfg(self) -> optim_lib.OptimConfig:
    return optim_lib.OptimConfig.from_dict(
        config_lib.to_dict(self.config.optim)
    )

  @functools.cached_property
  def specs(self) -> dict[str, sources_lib.SourceSpec]:
    return {
        name: sources_lib.spec_from_dict(
            name, spec, offline_max_docs=int(self.config.data.offline_max_docs)
        )
        for name, spec in config_lib.to_dict(self.config.data.sources).items()
    }

  def validate_inputs(self) -> None:
    """Cheap input checks (files, fields, weights) before any work."""
    sources_lib.validate_sources(self.specs)
    normalize = self.config.data.normalize_weights
    mixture_lib.validate_weights(
        config_lib.to_dict(self.config.data.pretrain_mixture),
        list(self.specs),
        field="data.pretrain_mixture",
        normalize=normalize,
    )
    for name, mix in config_lib.to_dict(
        self.config.final.fixed_mixtures
    ).items():
      mixture_lib.validate_weights(
          mix,
          list(self.specs),
          field=f"final.fixed_mixtures.{name}",
          normalize=normalize,
      )

  # ------------------------------------------------------------ data side
  @functools.cached_property
  def sources(self) -> dict[str, sources_lib.Source]:
    self.data_dir.mkdir(parents=True, exist_ok=True)
    return sources_lib.open_sources(self.specs, str(self.data_dir / "corpora"))

  @functools.cached_property
  def vocab(self) -> tokenizer_lib.Vocab:
    tok = self.config.data.tokenizer
    if tok.path:
      vocab = tokenizer_lib.load_vocab(tok.path)
    else:
      vocab = tokenizer_lib.train_vocab(
          {n: s.docs("train") for n, s in self.sources.items()},
          int(tok.vocab_size),
          str(self.data_dir / "tokenizer.model"),
          seed=int(self.config.seed),
          sample_chars=int(tok.sample_chars),
      )
    if vocab.vocab_size > self.model_cfg.vocab_size:
      raise config_lib.ConfigError(
          "model.vocab_size",
          f"{self.model_cfg.vocab_size} is smaller than the tokenizer's "
          f"{vocab.vocab_size} pieces",
          "set it to at least the tokenizer size",
      )
    return vocab

  @functools.cached_property
  def token_counts(self) -> dict[str, int]:
    counts = {
        n: int(s.token_count(self.vocab)) for n, s in self.sources.items()
    }
    for n, c in counts.items():
      if c <= 0:
        raise config_lib.ConfigError(
            f"data.sources.{n}", "has zero tokens", "point it at non-empty data"
        )
    logging.info("train tokens per source: %s", counts)
    return counts

  @functools.cached_property
  def natural_alpha(self) -> dict[str, float]:
    """The token-count prior over candidates (the paper's "Uniform")."""
    t = np.array([self.token_counts[c] for c in self.candidates], float)
    return dict(zip(self.candidates, (t / t.sum()).tolist()))

  def source_weights(self, alpha: Mapping[str, float]) -> dict[str, float]:
    return mixture_lib.alpha_to_weights(alpha, self.general, self.beta)

  def heldout(self, name: str) -> dict[str, np.ndarray]:
    """Deterministic held-out rows of one source (cached per context)."""
    return self._heldout_all[name]

  @functools.cached_property
  def _heldout_all(self) -> dict[str, dict[str, np.ndarray]]:
    from demix_jax.data import pipeline as data_pipeline  # pylint: disable=g-import-not-at-top

    return {
        n: data_pipeline.heldout_sequences(
            s,
            self.vocab,
            int(self.config.data.seq_len),
            int(self.config.eval.heldout_sequences),
            seed=int(self.config.seed),
        )
        for n, s in self.sources.items()
    }

  def eval_batches(self) -> dict[str, list[dict[str, np.ndarray]]]:
    """Held-out rows of every source as this host's trainer eval batches."""
    bs = int(self.config.eval.batch_size)
    pc, pi = jax.process_count(), jax.process_index()
    out = {}
    for name in self.sources:
      rows = self.heldout(name)
      n = (len(rows["tokens"]) // bs) * bs
      if n == 0:
        logging.warning(
            "source %s: fewer held-out rows than eval.batch_size;"
            " skipping its held-out eval",
            name,
        )
        continue
      batches = []
      for start in range(0, n, bs):
        sl = slice(start, start + bs)
        host = {
            k: v[sl]
            for k, v in rows.items()
            if k in ("tokens", "segment_ids", "positions", "num_bytes")
        }
        per = bs // pc
        batches.append(
            {k: v[pi * per : (pi + 1) * per] for k, v in host.items()}
        )
      out[name] = batches
    return out

  # -------------------------------------------------------------- training
  def train_config(
      self,
      total_tokens: int,
      *,
      mixture: Mapping[str, float],
      budgets: tuple[int, ...] = (),
      init_from: str = "",
      init_from_tokens: int | None = None,
      seed_offset: int = 0,
  ):
    """The trainer's TrainConfig for one run of this pipeline."""
    # Imported lazily: the trainer pulls in clu's writers and TensorFlow,
    # which config validation and --help should not pay for.
    from demix_jax.training import trainer as trainer_lib  # pylint: disable=g-import-not-at-top

    c = self.config
    return trainer_lib.TrainConfig(
        global_batch_size=int(c.train.global_batch_size),
        seq_len=int(c.data.seq_len),
        total_tokens=int(total_tokens),
        grad_accum_steps=int(c.train.grad_accum_steps),
        log_every_steps=int(c.train.log_every_steps),
        eval_every_steps=int(c.train.eval_every_steps),
        eval_batches=int(c.train.eval_batches),
        checkpoint_every_steps=int(c.train.checkpoint_every_steps),
        keep_last=int(c.train.keep_last),
        budgets=tuple(int(b) for b in budgets),
        peak_flops=float(c.train.peak_flops),
        seed=int(c.seed) + seed_offset,
        mesh_axes=dict(config_lib.to_dict(c.mesh.axes)),
        rules=tuple(
            (k, tuple(v) if isinstance(v, list) else v) for k, v in c.mesh.rules
        ),
        init_from=init_from,
        init_from_tokens=init_from_tokens,
        config_hash=config_lib.config_hash(c),
        data_mixture=dict(mixture),
        tokenizer_fingerprint=self.vocab.fingerprint,
    )

  def train(
      self,
      run_dir: epath.Path,
      weights: Mapping[str, float],
      total_tokens: int,
      *,
      what: str,
      budgets: tuple[int, ...] = (),
      init_from: str = "",
      init_from_tokens: int | None = None,
      seed_offset: int = 0,
  ):
    """Trains one run on source `weights` (resumes its own checkpoints).

    Returns:
      The trainer's TrainResult.
    """
    from demix_jax.data import pipeline as data_pipeline  # pylint: disable=g-import-not-at-top
    from demix_jax.training import trainer as trainer_lib  # pylint: disable=g-import-not-at-top

    weights = mixture_lib.validate_weights(
        weights,
        list(self.sources),
        field=what,
        normalize=self.config.data.normalize_weights,
    )
    weights = mixture_lib.active(weights)
    mixture_lib.check_repetition(
        weights,
        self.token_counts,
        int(total_tokens),
        float(self.config.data.max_epochs),
        self.config.data.on_overrun,
        what=what,
    )
    logging.info(
        "%s: training %d tokens on %s",
        what,
        total_tokens,
        {k: round(v, 4) for k, v in weights.items()},
    )
    it = data_pipeline.make_train_iterator(
        self.sources,
        weights,
        self.vocab,
        int(self.config.data.seq_len),
        int(self.config.train.global_batch_size),
        seed=int(self.config.data.shuffle_seed) + seed_offset,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        worker_count=int(self.config.data.worker_count),
    )
    cfg = self.train_config(
        total_tokens,
        mixture=weights,
        budgets=budgets,
        init_from=init_from,
        init_from_tokens=init_from_tokens,
        seed_offset=seed_offset,
    )
    return trainer_lib.train(
        self.model_cfg,
        self.optim_cfg,
        cfg,
        str(run_dir),
        it,
        eval_data=self.eval_batches(),
    )


def write_json(path: epath.Path, obj: Any) -> None:
  """Atomic JSON write (process 0 only)."""
  if jax.process_index() != 0:
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / (path.name + ".tmp")
  tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=_json))
  tmp.replace(path)


def _json(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return str(x)
