"""The RunSpec and its sections: frozen, typed views of a pipeline config."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from demix_jax import config_lib
from demix_jax import models
from demix_jax.data import sources as sources_lib
from demix_jax.evals import generation as generation_lib
from demix_jax.evals import sandbox as sandbox_lib
from demix_jax.evals import scoring as scoring_lib
from demix_jax.merging import methods as merge_methods
from demix_jax.search import gradient as gradient_lib
from demix_jax.search import objective as objective_lib
from demix_jax.search import pool as pool_lib
from demix_jax.search import rounds as rounds_lib
from demix_jax.training import optim as optim_lib

SEARCH_METHODS = ("surrogate", "gradient")
BASELINES = ("natural",)
# Trained-proxy searches (`search.baselines.<name>.kind`): RegMix, one round
# of proxies; CLIMB, rounds of n, n/2, ... drawn from the surrogate's top
# region, as the DeMix search draws its merged proxies.
PROXY_SEARCH_KINDS = ("regmix", "climb")
NORMALIZE = ("error", "warn", "silent")


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
  # A SentencePiece .model, a byte-level BPE tokenizer.json, or a directory
  # holding one (local or gs://); "" = train one of `kind`.
  path: str
  vocab_size: int
  sample_chars: int
  kind: str = "sentencepiece"  # what to train: "sentencepiece" | "bpe"
  sampler: str = "stream"  # how training documents are sampled


@dataclasses.dataclass(frozen=True)
class DataSpec:
  sources: Mapping[str, sources_lib.SourceSpec]
  candidates: tuple[str, ...]  # the order of alpha's entries
  general: str
  beta: float
  seq_len: int
  pretrain_mixture: Mapping[str, float]
  max_epochs: float
  on_overrun: str
  normalize_weights: str
  shuffle_seed: int
  worker_count: int
  tokenizer: TokenizerSpec


@dataclasses.dataclass(frozen=True)
class MeshSpec:
  axes: Mapping[str, int]  # -1 = the remaining devices
  rules: tuple[tuple[str, Any], ...]


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  global_batch_size: int
  grad_accum_steps: int
  log_every_steps: int
  eval_every_steps: int
  eval_batches: int
  checkpoint_every_steps: int
  keep_last: int
  peak_flops: float


@dataclasses.dataclass(frozen=True)
class BudgetSpec:
  """Training tokens of each stage."""

  base_tokens: int  # 0 with base_init_from: use that checkpoint as is
  # A Hugging Face Qwen3 directory or a demix_jax run directory the base
  # starts from ("" = from scratch), e.g. a released Qwen3 checkpoint.
  base_init_from: str
  component_tokens: int
  component_budgets: tuple[int, ...]  # component checkpoints kept forever
  use_budget: int  # the budget the search merges


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  """The `eval` section (spec/evaluation.py reads it).

  `generation`, `sandbox` and `math_timeout_s` are always read and checked;
  they are used when a domain metric is generative (exact_match, pass@k).
  """

  benchmarks: tuple[str, ...]
  max_items: int
  heldout_sequences: int
  batch_size: int
  domain_metrics: Mapping[str, str]
  targets: tuple[str, ...]  # every target name the evaluator returns
  generation: generation_lib.GenerationConfig = (
      generation_lib.GenerationConfig()
  )
  sandbox: sandbox_lib.SandboxLimits = sandbox_lib.DEFAULT_LIMITS
  math_timeout_s: float = 3.0  # one symbolic MATH equivalence check
  # {benchmark: path or glob} of published sets; the others: the wheel.
  benchmark_files: Mapping[str, str] = dataclasses.field(default_factory=dict)

  @property
  def generative(self) -> bool:
    """Whether any target scores generated text (the evaluator decodes)."""
    return any(
        scoring_lib.is_generative(m) for m in self.domain_metrics.values()
    )


@dataclasses.dataclass(frozen=True)
class MergeSettings:
  spec: merge_methods.MergeSpec
  chunk_size: int


@dataclasses.dataclass(frozen=True)
class ProxySearchSpec:
  """A search over trained proxies, the baseline (`search.baselines.<name>`).

  Each proxy is trained from the base for `tokens_per_proxy` tokens on one
  pool mixture and scored with the search's evaluator; the search's
  surrogate, pool and objective pick the mixture (stages/baselines.py).

  Attributes:
    kind: "regmix" (one round) or "climb" (`rounds` rounds).
    proxies: round 0's proxies; round r has proxies // 2**r.
    rounds: the number of rounds (1 for regmix).
    tokens_per_proxy: training tokens of each proxy.
  """

  kind: str
  proxies: int
  rounds: int
  tokens_per_proxy: int


@dataclasses.dataclass(frozen=True)
class SearchSpec:
  pool: pool_lib.PoolConfig
  rounds: rounds_lib.SearchConfig
  objective: objective_lib.ObjectiveSpec
  constraints: Mapping[str, float | tuple[float, float]]
  method: str
  gradient: gradient_lib.GradientConfig | None  # None = disabled
  barrier_points: int
  cap_run_tokens: int  # 0 = the sum of the (prior) token counts
  prior_tokens: Mapping[str, float]  # {candidate: tokens}; {} = counted
  # Trained-proxy searches run by the `baselines` stage, by name.
  baselines: Mapping[str, ProxySearchSpec] = dataclasses.field(
      default_factory=dict
  )


@dataclasses.dataclass(frozen=True)
class FinalSpec:
  tokens: int
  baselines: tuple[str, ...]
  fixed_mixtures: Mapping[str, Mapping[str, float]]
  # "" = this run's search; else another run's report/mixture.json (or its
  # run directory), checked at preflight (`spec.transfer.read`).
  mixture_from: str = ""
  seeds: int = 1  # training seeds per final mixture


@dataclasses.dataclass(frozen=True)
class ValidateSpec:
  num_references: int
  reference_tokens: int  # resolved: 0 in the config = components' tokens
  proxy_fractions: tuple[float, ...]
  merge_methods: tuple[str, ...]
  betas: tuple[float, ...]
  twins: int  # references trained twice for the noise ceiling (0 = none)
  sampler: str  # "search" (the search's sampler) or a pool sampler name


@dataclasses.dataclass(frozen=True)
class PrepareSpec:
  """How the prepare stage writes the sources as token shards (`prepare.*`).

  Attributes:
    out_dir: where each source's shards go, `<out_dir>/<source>` (local or
      gs://); "" = `<workdir>/prepare`.
    unit_mb: input MiB per work unit (one shard pair per unit).
    unit_docs: records per work unit of record stores (tfds, ArrayRecord).
    encode_batch: documents per tokenizer call.
    beam_args: Apache Beam pipeline options, e.g. ("--runner=DataflowRunner",
      "--project=p", ...); () = Beam's in-process runner.
  """

  out_dir: str = ""
  unit_mb: float = 64.0
  unit_docs: int = 100_000
  encode_batch: int = 1024
  beam_args: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """Everything a run needs, typed. `config` is the plain dict it came from."""

  seed: int
  stages: tuple[str, ...]
  model: models.ModelConfig
  optim: optim_lib.OptimConfig
  component_optim: optim_lib.OptimConfig  # optim + components.optim
  mesh: MeshSpec
  data: DataSpec
  train: TrainSpec
  budgets: BudgetSpec
  eval: EvalSpec
  merge: MergeSettings
  search: SearchSpec
  final: FinalSpec
  validate: ValidateSpec
  config: Mapping[str, Any]
  prepare: PrepareSpec = dataclasses.field(default_factory=PrepareSpec)

  @property
  def candidates(self) -> tuple[str, ...]:
    return self.data.candidates

  def fields_hash(self, paths: tuple[str, ...]) -> str:
    """Hash of the config values at dotted `paths` (missing = None)."""
    picked = {}
    for p in paths:
      node: Any = self.config
      for part in p.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
      picked[p] = node
    return config_lib.config_hash(picked)


# ----------------------------------------------------------------------------
# Checks over the plain dict.
# ----------------------------------------------------------------------------
