"""Trained run directories as merge inputs: model, tokenizer, rows.

`from_run_dirs` builds an evaluator from the runs alone: the
trainer records the model config, sequence length and tokenizer fingerprint
in every checkpoint, so no pipeline workdir or config is needed. The checks
here run on metadata only (no arrays are read), so a wrong tokenizer or a
component of another model fails in a second, naming the run, before any
parameter is loaded.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from jax.sharding import Mesh

from demix_jax import models
from demix_jax.data import tokenizer as tokenizer_lib
from demix_jax.evals import benchmarks as bench_lib
from demix_jax.evals import rows as rows_lib
from demix_jax.evals import sandbox as sandbox_lib
from demix_jax.merging import engine
from demix_jax.merging import evaluator as evaluator_lib
from demix_jax.merging import generative
from demix_jax.merging import methods
from demix_jax.merging import store as store_lib
from demix_jax.training import checkpointing

# The nine DeMix benchmarks (general, code and math domains).
DEFAULT_BENCHMARKS = tuple(bench_lib.BENCHMARKS)


def as_vocab(tokenizer: str | tokenizer_lib.Vocab) -> tokenizer_lib.Vocab:
  """A Vocab from a tokenizer path (local or gs://) or a Vocab.

  A path is a SentencePiece `.model`, a byte-level BPE `tokenizer.json`, or
  a directory holding one (`data.tokenizer.load_vocab`).
  """
  if isinstance(tokenizer, tokenizer_lib.Vocab):
    return tokenizer
  return tokenizer_lib.load_vocab(str(tokenizer))


def check_runs(
    base_dir: str,
    components: Mapping[str, str],
    vocab: tokenizer_lib.Vocab,
    tokens: int | None = None,
    base_tokens: int | None = None,
) -> tuple[models.ModelConfig, int | None]:
  """The shared model config and training seq_len of the runs, checked.

  Args:
    base_dir: the base run directory.
    components: {name: run directory}.
    vocab: the tokenizer the rows will be encoded with.
    tokens: the components' token budget (None = latest).
    base_tokens: the base's budget (None = latest).

  Returns:
    (ModelConfig, seq_len the base was trained at, or None if unrecorded).

  Raises:
    ValueError: no components, components of different models than the
      base, or a run trained with another tokenizer
      (`tokenizer.TokenizerMismatchError`, a ValueError).
    checkpoint_reads.CheckpointError: a run without (readable) checkpoints.
  """
  if not components:
    raise ValueError("from_run_dirs needs at least one component run")
  runs = [("base", base_dir, base_tokens)] + [
      (name, d, tokens) for name, d in components.items()
  ]
  model_cfg, seq_len = None, None
  for name, run_dir, tok in runs:
    meta = checkpointing.read_metadata(run_dir, tok)
    fp = meta.get("tokenizer_fingerprint") or ""
    if fp and fp != vocab.fingerprint:
      raise tokenizer_lib.TokenizerMismatchError(
          f"run {name!r} ({run_dir}) was trained with tokenizer {fp[:12]}..., "
          f"but the tokenizer given is {vocab.fingerprint[:12]}... "
          f"({vocab.path or 'in memory'}). Pass the tokenizer those runs "
          "were trained with (data.tokenizer.path, or the one the pipeline "
          "trained: <workdir>/data/tokenizer.model or tokenizer.json)"
      )
    cfg = checkpointing.read_model_config(run_dir, tok)
    if model_cfg is None:
      model_cfg, seq_len = cfg, meta.get("seq_len")
    elif cfg != model_cfg:
      raise ValueError(
          f"run {name!r} ({run_dir}) is a different model than the base "
          f"({base_dir}): {cfg} vs {model_cfg}; merge only components "
          "continued from that base"
      )
  assert model_cfg is not None  # runs holds the base at least
  return model_cfg, seq_len


def suite_for(
    vocab: tokenizer_lib.Vocab,
    seq_len: int,
    *,
    benchmarks: Sequence[str] = DEFAULT_BENCHMARKS,
    max_items: int = 32,
    batch_size: int = 32,
    seed: int = 0,
    cache_dir: str | None = None,
    heldout: Mapping[str, Mapping[str, Any]] | None = None,
    benchmark_files: Mapping[str, str] | None = None,
) -> rows_lib.EvalSuite:
  """The benchmark (and held-out) rows, as the pipeline builds them.

  See `evals.benchmarks.build_suite` for the arguments; `token_bytes` comes
  from the vocab, so held-out rows without `n_bytes` still get bits per
  byte.
  """
  return bench_lib.build_suite(
      tuple(benchmarks),
      vocab.encode,
      vocab.fingerprint,
      int(seq_len),
      int(batch_size),
      max_items=int(max_items),
      seed=int(seed),
      cache_dir=cache_dir,
      heldout={k: dict(v) for k, v in (heldout or {}).items()},
      token_bytes=vocab.token_byte_lengths(),
      files=dict(benchmark_files or {}),
  )


def load_store(
    base_dir: str,
    components: Mapping[str, str],
    model_cfg: models.ModelConfig,
    *,
    tokens: int | None = None,
    base_tokens: int | None = None,
    mesh=None,
    rules=(),
) -> store_lib.ComponentStore:
  """The stacked components and the base, sharded like the pipeline's."""
  return store_lib.ComponentStore.from_checkpoints(
      dict(components),
      base_dir=base_dir,
      tokens=tokens,
      base_tokens=base_tokens,
      mesh=mesh,
      rules=rules,
      logical_axes=models.param_logical_axes(model_cfg),
  )


def from_run_dirs(
    base_dir: str,
    components: Mapping[str, str],
    *,
    tokenizer: str | tokenizer_lib.Vocab,
    benchmarks: Sequence[str] = DEFAULT_BENCHMARKS,
    tokens: int | None = None,
    base_tokens: int | None = None,
    max_items: int = 32,
    batch_size: int = 32,
    seq_len: int | None = None,
    heldout: Mapping[str, Mapping[str, Any]] | None = None,
    method: str | methods.MergeSpec = "linear",
    chunk_size: int = 8,
    mesh: Mesh | None = None,
    rules: Sequence[tuple[str, Any]] = (),
    domain_metrics: Mapping[str, str] | None = None,
    seed: int = 0,
    cache_dir: str | None = None,
    generation: Any = None,
    sandbox: Any = None,
    benchmark_files: Mapping[str, str] | None = None,
) -> evaluator_lib.Evaluator:
  """An evaluator over checkpoints you trained, from their run dirs alone.

  The model config and sequence length come from the checkpoints'
  metadata (the trainer records them), and the tokenizer is checked
  against the fingerprint recorded there before any parameter is read,
  so mixtures of your own runs score without a pipeline workdir:

    ev = from_run_dirs(
        base, {"general": d1, "code": d2}, tokenizer="tok.model")
    ev.evaluate(np.array([[0.5, 0.5]]))

  Args:
    base_dir: the base run the components were continued from.
    components: {name: run dir}, in the order of alpha's columns.
    tokenizer: a tokenizer path (`.model`, `tokenizer.json` or a directory
      holding one) or a `data.tokenizer.Vocab`.
    benchmarks: names in `evals.benchmarks.BENCHMARKS` (default: all nine
      DeMix benchmarks).
    tokens: the components' token budget to load (None = latest).
    base_tokens: the base's budget (None = latest).
    max_items: seeded subsample per benchmark (0 = every item).
    batch_size: rows per forward.
    seq_len: row length (default: the length the base was trained at).
    heldout: {source: {"tokens": [N, seq_len], optionally "n_bytes" [N],
      "segment_ids", "positions"}} held-out rows (see
      `evals.benchmarks.build_suite`).
    method: merge method name, or a `methods.MergeSpec`.
    chunk_size: mixtures per compiled call.
    mesh: optional mesh for the components and the mixtures.
    rules: logical axis rules (with `mesh`), e.g. the pipeline's
      `mesh.rules`.
    domain_metrics: {domain: metric} (default: bits per byte); a
      generative one (exact_match, pass@k) decodes from every mixture.
    seed: benchmark subsample seed (and DARE's, for a method name).
    cache_dir: folder caching the tokenized benchmarks.
    generation: an `evals.generation.GenerationConfig` for generative
      metrics (default: its defaults).
    sandbox: `evals.sandbox.SandboxLimits` for the code benchmarks.
    benchmark_files: {benchmark: path or glob} of published full sets, as
      config `eval.benchmark_files` (`evals.benchmark_files`).

  Returns:
    The `engine.MixtureEvaluator`, or a `generative.GenerativeEvaluator`
    around it when a domain metric is generative.

  Raises:
    ValueError: a tokenizer other than the runs' (TokenizerMismatchError),
      components of different models, no seq_len recorded or given.
  """
  vocab = as_vocab(tokenizer)
  model_cfg, trained_len = check_runs(
      base_dir, components, vocab, tokens, base_tokens
  )
  seq_len = seq_len or trained_len
  if not seq_len:
    raise ValueError(
        f"{base_dir}: the checkpoints record no sequence length; pass "
        "seq_len= (the length the runs were trained at)"
    )
  suite = suite_for(
      vocab,
      seq_len,
      benchmarks=benchmarks,
      max_items=max_items,
      batch_size=batch_size,
      seed=seed,
      cache_dir=cache_dir,
      heldout=heldout,
      benchmark_files=benchmark_files,
  )
  store = load_store(
      base_dir,
      components,
      model_cfg,
      tokens=tokens,
      base_tokens=base_tokens,
      mesh=mesh,
      rules=rules,
  )
  if not isinstance(method, methods.MergeSpec):
    method = methods.MergeSpec(method, seed=seed)
  inner = engine.MixtureEvaluator(
      model_cfg,
      store,
      suite,
      spec=method,
      chunk_size=chunk_size,
      mesh=mesh,
      rules=rules,
      domain_metrics=generative.nll_domain_metrics(domain_metrics or {}),
  )
  return generative.wrap(
      inner,
      vocab,
      domain_metrics=domain_metrics,
      generation=generation,
      sandbox=sandbox or sandbox_lib.DEFAULT_LIMITS,
      max_items=max_items,
      seed=seed,
      files=dict(benchmark_files or {}),
  )
