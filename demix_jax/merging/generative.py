"""Generated-text targets (exact match, pass@k) of merged proxies.

`GenerativeEvaluator` is what the pipeline's stages get from
`Workspace.engines.evaluator` (and `runs.from_run_dirs`) when a domain
metric in `eval.domain_metrics` is generative (`exact_match`, `pass@1`,
`pass@k`). It implements the `merging.evaluator.Evaluator` protocol, as the
row-NLL `MixtureEvaluator` does, so the stages need not know which one they
hold. Per chunk of mixtures (the inner evaluator's `chunk`):

1. the row NLLs come from the inner `MixtureEvaluator` (bits per byte of
   every benchmark, accuracies, held-out rows), built over the same
   domain metrics with the generative ones read as bpb;
2. the chunk is merged once per `eval.generation.mixtures_per_call`
   mixtures (`store.merge_stacked`, the method and DARE seed the inner
   evaluator uses) and every prompt of the generative benchmarks is decoded
   from the merged weights (`evals.generation.Generator.generate_mixtures`:
   KV cache, batched over prompts, vmapped over the mixtures);
3. completions are scored by `evals.tasks.score` (answers checked for math,
   programs run in `evals.sandbox` for code, all mixtures' programs in one
   parallel pool) and the `{b}/exact_match`, `{b}/pass@k` values enter
   `scoring.score_rows`, which averages them into `domain/<d>`.

Gradient objective (decision): generated text is not a differentiable
function of alpha, nor a linear function of the row NLLs, so
`make_objective` refuses generative targets (ValueError naming the target
and `eval.domain_metrics`). Its default (no targets) is the mean of the
domain scores whose metric is bpb, else "heldout/bpb"; the run spec
refuses `search.method = "gradient"` when the search objective holds a
generative target (the gradient would pick alpha ignoring it), and the
existing `search.gradient.enabled` check refuses an objective with no
bpb/loss target at all. With `search.method = "surrogate"`, an enabled
gradient refinement descends the bpb/loss part of the objective only, as
it already did for accuracy domains, and is recorded, not used.

Cost: `generation_stats` counts the mixtures decoded, the prompt tokens
(prefill) and the tokens generated for them (padding mixtures of a short
last chunk are not counted); `validation.cost` turns them into
training-token equivalents. Multi-host: decoded tokens are gathered with
`multihost.to_numpy` (every process decodes and scores the same text).
"""

from __future__ import annotations

import collections
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from demix_jax.evals import generation as generation_lib
from demix_jax.evals import passk
from demix_jax.evals import sandbox as sandbox_lib
from demix_jax.evals import scoring
from demix_jax.evals import tasks
from demix_jax.merging import evaluator as evaluator_lib
from demix_jax.merging import store as store_lib


def has_generative(domain_metrics: Mapping[str, str] | None) -> bool:
  """Whether any domain metric scores generated text."""
  return any(scoring.is_generative(m) for m in (domain_metrics or {}).values())


def nll_domain_metrics(domain_metrics: Mapping[str, str]) -> dict[str, str]:
  """The domain metrics of the inner (row-NLL) evaluator: generative -> bpb."""
  return {
      d: "bpb" if scoring.is_generative(m) else m
      for d, m in dict(domain_metrics).items()
  }


class GenerativeEvaluator:
  """A `MixtureEvaluator` plus generated-text targets (see the module doc).

  Args:
    inner: the row-NLL `MixtureEvaluator`, built with
      `nll_domain_metrics(domain_metrics)`.
    codec: the tokenizer (`data.tokenizer.Vocab`).
    items: {benchmark: its `tasks.GenItem`s} for every benchmark with
      generative targets under `domain_metrics`.
    domain_metrics: {domain: metric}, generative metrics included.
    generation: decoding settings (`config.eval.generation`).
    sandbox: limits of the programs of the code benchmarks.
    math_timeout_s: time limit of one symbolic MATH equivalence check.
  """

  def __init__(
      self,
      inner: Any,
      codec: generation_lib.TextCodec,
      items: Mapping[str, Sequence[tasks.GenItem]],
      *,
      domain_metrics: Mapping[str, str],
      generation: generation_lib.GenerationConfig,
      sandbox: sandbox_lib.SandboxLimits = sandbox_lib.DEFAULT_LIMITS,
      math_timeout_s: float = 3.0,
  ):
    self.inner = inner
    # The same components and rows as the inner evaluator's.
    self.store = inner.store
    self.suite = inner.suite
    self.domain_metrics = dict(domain_metrics)
    self.targets = scoring.target_names(inner.suite, self.domain_metrics)
    self.generation = generation
    self.sandbox = sandbox
    self.math_timeout_s = float(math_timeout_s)
    self.generator = generation_lib.Generator(
        inner.cfg,
        codec,
        generation,
        mesh=getattr(inner, "mesh", None),
        rules=getattr(inner, "rules", None),
    )
    self._targets_of = {}
    for g in inner.suite.groups:
      ts = (
          scoring.generative_targets(g.name, self.domain_metrics)
          if g.kind == "bpb"
          else []
      )
      if ts:
        if not items.get(g.name):
          raise ValueError(f"no generative items given for {g.name!r}")
        self._targets_of[g.name] = ts
    self._items = {b: list(items[b]) for b in self._targets_of}
    self._requests: list = []
    self._slices: dict = {}
    for b, its in self._items.items():
      start = len(self._requests)
      self._requests += generation_lib.requests_for(its, generation)
      self._slices[b] = slice(start, len(self._requests))
    self._prompt_tokens = generation.num_samples * sum(
        max(1, min(len(codec.encode(r.prompt)), generation.max_prompt_tokens))
        for r in self._requests
    )
    spec = inner.spec

    def merge(stacked_and_base, alpha):
      stacked, base = stacked_and_base
      return store_lib.merge_stacked(spec, stacked, base, alpha)

    # One function object, so the jitted merge compiles once per shape.
    self._merge = merge
    # Counts and seconds (float), by name.
    self.stats: dict[str, Any] = collections.Counter()
    self.last_reasons: dict[str, collections.Counter] = {}

  def row_nll_evaluator(self) -> evaluator_lib.Evaluator:
    """The inner row-NLL `MixtureEvaluator` (no generation)."""
    return self.inner

  # ------------------------------------------------------------ scoring
  @property
  def generative_targets(self) -> tuple[str, ...]:
    return tuple(t for ts in self._targets_of.values() for t in ts)

  def generation_stats(self) -> dict[str, float]:
    """Mixtures (and single models) decoded, their prompt and generated
    tokens, and the seconds spent decoding and scoring, so far."""
    return {
        k: self.stats[k]
        for k in ("models", "prompt_tokens", "generated_tokens", "seconds")
    }

  def _score(self, completions) -> dict[str, np.ndarray]:
    """{generative target: [M]} of completions [M][request][sample]."""
    t0 = time.time()
    m = len(completions)
    out = {}
    for b, ts in self._targets_of.items():
      items, sl = self._items[b], self._slices[b]
      texts = [
          [c.text for c in completions[i][r]]
          for i in range(m)
          for r in range(sl.start, sl.stop)
      ]
      # All mixtures' programs in one call: the sandbox pool stays full.
      res = tasks.score(
          items * m,
          texts,
          self.sandbox,
          ks=(),
          math_timeout_s=self.math_timeout_s,
      )
      # Why samples failed, by kind ("AssertionError", "timeout", "got").
      self.last_reasons[b] = collections.Counter(
          r.split(":")[0].split(" ")[0]
          if r.startswith(("got", "match"))
          else r.split(":")[0][:60]
          for rs in res.reasons
          for r in rs
      )
      n = len(items)
      for t in ts:
        metric = t.rsplit("/", 1)[1]
        k = scoring.pass_k(metric) or 1
        out[t] = np.array(
            [
                passk.mean_pass_at_k(res.correct[i * n : (i + 1) * n], k)
                for i in range(m)
            ]
        )
    self.stats["models"] += m
    self.stats["prompt_tokens"] += m * self._prompt_tokens
    self.stats["generated_tokens"] += sum(
        c.n_tokens for per in completions for cs in per for c in cs
    )
    self.stats["seconds"] += time.time() - t0
    return out

  def generate_mixtures(self, alphas) -> list:
    """Completions [M][request][sample] of the merges of `alphas`."""
    t0 = time.time()
    store = self.store
    out = self.generator.generate_mixtures(
        self._requests,
        alphas,
        stacked=(store.stacked, store.base),
        merge=self._merge,
    )
    self.stats["seconds"] += time.time() - t0
    return out

  def _check(self, alphas) -> np.ndarray:
    a = np.asarray(alphas, np.float32)
    return a[None] if a.ndim == 1 else a

  def evaluate(
      self, alphas, progress: Callable[[int, int], None] | None = None
  ) -> dict[str, np.ndarray]:
    """Every target (generated-text ones included) for every mixture.

    Args:
      alphas: [M, K] mixture weights.
      progress: optional callback(done, total) after each chunk.

    Returns:
      {target name: float64 [M]}; names in `self.targets`.
    """
    a = self._check(alphas)
    m, c = a.shape[0], self.inner.chunk
    nll = np.zeros((m, self.suite.n_rows), np.float32)
    gen = {t: np.zeros(m) for t in self.generative_targets}
    for start in range(0, m, c):
      part = a[start : start + c]
      n = part.shape[0]
      nll[start : start + n] = self.inner.evaluate_nll(part)
      for t, v in self._score(self.generate_mixtures(part)).items():
        gen[t][start : start + n] = v
      if progress is not None:
        progress(min(start + c, m), m)
    return scoring.score_rows(nll, self.suite, self.domain_metrics, gen)

  def evaluate_params(self, params) -> dict[str, float]:
    """Every target for one model (the final run, baselines, references)."""
    nll = self.inner.evaluate_params_nll(params)
    t0 = time.time()
    comps = self.generator.generate(params, self._requests)
    self.stats["seconds"] += time.time() - t0
    gen = self._score([comps])
    s = scoring.score_rows(nll, self.suite, self.domain_metrics, gen)
    return {k: float(v) for k, v in s.items()}

  def make_objective(self, targets=None):
    """The inner evaluator's differentiable objective over bpb/loss targets.

    Args:
      targets: names or {name: weight}; None = the mean of the bpb domain
        scores (else "heldout/bpb").

    Raises:
      ValueError: a generative (or accuracy) target: not differentiable.
    """
    if targets is None:
      targets = [
          t
          for t in self.targets
          if t.startswith("domain/")
          and not scoring.higher_is_better(t, self.domain_metrics)
      ] or ["heldout/bpb"]
    for t in targets:
      if t not in self.targets:
        raise ValueError(f"unknown objective target {t!r}; see .targets")
      if scoring.higher_is_better(t, self.domain_metrics):
        raise ValueError(
            f"objective target {t!r} is higher-is-better and not"
            " differentiable (generated-text and accuracy scores are not"
            " smooth functions of alpha); use bpb or loss targets, or a bpb"
            " metric for its domain in eval.domain_metrics"
        )
    return self.inner.make_objective(targets)


def wrap(
    inner: Any,
    codec: generation_lib.TextCodec,
    *,
    domain_metrics: Mapping[str, str] | None,
    generation: generation_lib.GenerationConfig | None = None,
    sandbox: sandbox_lib.SandboxLimits = sandbox_lib.DEFAULT_LIMITS,
    math_timeout_s: float = 3.0,
    max_items: int = 0,
    seed: int = 0,
    root: str | None = None,
    files: Mapping[str, str] | None = None,
) -> Any:
  """`inner` itself when no domain metric is generative, else it wrapped.

  Items are the same seeded subsample (`max_items`, `seed`) as the
  benchmark's bpb rows (`benchmarks.subsample` over the same item count),
  from the same published sets (`files`, `eval.benchmark_files`).
  """
  if not has_generative(domain_metrics):
    return inner
  dm = dict(domain_metrics or {})  # not None: has_generative was true
  names = [
      g.name
      for g in inner.suite.groups
      if g.kind == "bpb" and scoring.generative_targets(g.name, dm)
  ]
  items = {
      b: tasks.read_gen_items(b, max_items, seed, root, files) for b in names
  }
  return GenerativeEvaluator(
      inner,
      codec,
      items,
      domain_metrics=dm,
      generation=generation or generation_lib.GenerationConfig(),
      sandbox=sandbox,
      math_timeout_s=math_timeout_s,
  )
