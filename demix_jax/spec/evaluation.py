"""Reader of the `eval` config section: benchmarks, metrics, generation.

Domain metrics (`eval.domain_metrics.<domain>`): "bpb" (every domain),
"acc" / "acc_norm" (domains of multiple-choice benchmarks: general),
"exact_match" (math: gsm8k, minerva_math) and "pass@1" / "pass@k" with a
whole k (code: humaneval, mbpp). The generative ones decode from every
proxy with `eval.generation.*` and score the text (`merging.generative`).

Checks, each naming its field:
* a metric that does not exist for a benchmark of its domain;
* pass@k with k > eval.generation.num_samples (the estimator needs n >= k
  samples per problem), and num_samples > 1 without sampling
  (temperature 0: every sample would be the same text);
* `eval.benchmark_files.<benchmark>`: a benchmark not in eval.benchmarks,
  a path or glob that matches no Parquet / JSON-lines file, or a file
  without a column of the benchmark's release (named with the column);
* `search.method = "gradient"` with a generative target in the search
  objective (`check_search`): the gradient descends only bpb/loss targets,
  so the mixture it picks would ignore them.
pass@1 with temperature > 0 and one sample is allowed (a sampled pass@1).
"""

from __future__ import annotations

from typing import Mapping

from demix_jax import config_lib
from demix_jax.config_lib import ConfigError
from demix_jax.evals import benchmark_files as files_lib
from demix_jax.evals import benchmarks as bench_lib
from demix_jax.evals import generation as generation_lib
from demix_jax.evals import sandbox as sandbox_lib
from demix_jax.evals import scoring
from demix_jax.spec import sections
from demix_jax.spec import types

_MIB = 1 << 20


def static_targets(
    benchmarks: tuple[str, ...],
    heldout_sources: tuple[str, ...],
    domain_metrics: Mapping[str, str],
) -> tuple[str, ...]:
  """The evaluator's target names, from names alone (no data needed)."""
  groups = [(b, bench_lib.spec_of(b).kind) for b in benchmarks]
  groups += [(f"heldout/{s}", "heldout") for s in heldout_sources]
  return tuple(scoring.names_for_groups(groups, domain_metrics))


def _metric_fix(domain: str) -> str:
  members = bench_lib.DOMAINS[domain]
  kinds = {bench_lib.spec_of(b).kind for b in members}
  if kinds == {"mc"}:
    return "use bpb, acc or acc_norm (its benchmarks are multiple choice)"
  gen = {scoring.generative_metric(b) for b in members}
  if gen == {"exact_match"}:
    return "use bpb or exact_match (its benchmarks have checked answers)"
  return "use bpb, pass@1 or pass@k, e.g. pass@10 (its benchmarks run code)"


def domain_metrics(r: config_lib.Reader) -> dict[str, str]:
  dm = r.mapping("eval.domain_metrics")
  for d, m in dm.items():
    field = f"eval.domain_metrics.{d}"
    if d not in bench_lib.DOMAINS:
      raise ConfigError(
          field, "unknown domain", f"use one of {tuple(bench_lib.DOMAINS)}"
      )
    try:
      scoring.higher_is_better(f"domain/{d}", {d: m})
    except (ValueError, TypeError) as e:
      raise ConfigError(field, f"{m!r} is not a metric", _metric_fix(d)) from e
    for b in bench_lib.DOMAINS[d]:
      try:
        scoring.names_for_groups([(b, bench_lib.spec_of(b).kind)], {d: m})
      except ValueError as e:
        raise ConfigError(
            field, f"{m!r} does not exist for benchmark {b!r}", _metric_fix(d)
        ) from e
  return dm


def generation(r: config_lib.Reader) -> generation_lib.GenerationConfig:
  g = "eval.generation"
  temperature = r.float(f"{g}.temperature", 0.0)
  num_samples = r.int(f"{g}.num_samples")
  if num_samples > 1 and temperature == 0:
    raise ConfigError(
        f"{g}.num_samples",
        f"{num_samples} samples with temperature 0 (greedy) are all the same"
        " text",
        f"set {g}.temperature > 0 (e.g. 0.8) or num_samples = 1",
    )
  return sections.lib(
      g,
      "see demix_jax.evals.generation.GenerationConfig",
      generation_lib.GenerationConfig,
      max_new_tokens=r.int(f"{g}.max_new_tokens"),
      temperature=temperature,
      top_k=r.int(f"{g}.top_k", 0),
      num_samples=num_samples,
      seed=r.int(f"{g}.seed", 0),
      batch_size=r.int(f"{g}.batch_size"),
      max_prompt_tokens=r.int(f"{g}.max_prompt_tokens"),
      prompt_bucket=r.int(f"{g}.prompt_bucket"),
      steps_per_call=r.int(f"{g}.steps_per_call"),
      mixtures_per_call=r.int(f"{g}.mixtures_per_call"),
  )


def sandbox(r: config_lib.Reader) -> sandbox_lib.SandboxLimits:
  s = "eval.generation.sandbox"
  return sandbox_lib.SandboxLimits(
      timeout_s=r.float(f"{s}.timeout_s", 0.0, open_low=True),
      cpu_s=r.int(f"{s}.cpu_s"),
      memory_bytes=r.int(f"{s}.memory_mb") * _MIB,
      file_bytes=r.int(f"{s}.file_mb") * _MIB,
      workers=r.int(f"{s}.workers", 0),
      network_namespace=r.bool(f"{s}.network_namespace"),
      isolation=r.choice(f"{s}.isolation", sandbox_lib.ISOLATIONS),
  )


def benchmark_files(
    r: config_lib.Reader, benchmarks: tuple[str, ...]
) -> dict[str, str]:
  """`eval.benchmark_files`, each entry's files and columns checked."""
  if r.optional(files_lib.FIELD) is None:  # configs from before the field
    return {}
  files = r.mapping(files_lib.FIELD)
  for name, pattern in files.items():
    field = f"{files_lib.FIELD}.{name}"
    if name not in benchmarks:
      raise ConfigError(
          field,
          f"{name!r} is not in eval.benchmarks {benchmarks}",
          "add it to eval.benchmarks or remove the entry",
      )
    try:
      files_lib.check(name, pattern)
    except files_lib.BenchmarkFileError as e:
      raise ConfigError(e.field, e.problem, e.fix) from e
  return files


def eval(r: config_lib.Reader, data: types.DataSpec) -> types.EvalSpec:
  benchmarks = r.names("eval.benchmarks", tuple(bench_lib.BENCHMARKS))
  files = benchmark_files(r, benchmarks)
  dm = domain_metrics(r)
  gen = generation(r)
  for d, m in dm.items():
    k = scoring.pass_k(m)
    if k is not None and k > gen.num_samples:
      raise ConfigError(
          "eval.generation.num_samples",
          f"{gen.num_samples} sample(s) per problem cannot estimate"
          f" eval.domain_metrics.{d}={m!r} (pass@k needs n >= k samples)",
          f"set eval.generation.num_samples >= {k} (and temperature > 0),"
          " or use pass@1",
      )
  targets = sections.lib(
      "eval.domain_metrics",
      "use bpb for every domain, acc/acc_norm where all its benchmarks are"
      " multiple choice, exact_match for math, pass@k for code",
      static_targets,
      benchmarks,
      tuple(data.sources),
      dm,
  )
  return types.EvalSpec(
      benchmarks=benchmarks,
      max_items=r.int("eval.max_items"),
      heldout_sequences=r.int("eval.heldout_sequences"),
      batch_size=r.int("eval.batch_size"),
      domain_metrics=dm,
      targets=targets,
      generation=gen,
      sandbox=sandbox(r),
      math_timeout_s=r.float(
          "eval.generation.math_timeout_s", 0.0, open_low=True
      ),
      benchmark_files=files,
  )


def check_search(
    search: types.SearchSpec, ev: types.EvalSpec
) -> types.SearchSpec:
  """Refuses a gradient-chosen mixture for an objective it cannot see.

  The gradient search descends the objective's bpb/loss targets only
  (`merging.generative`: generated text has no gradient), so with
  `search.method = "gradient"` a generative target of weight > 0 in the
  objective would be silently dropped from the choice of alpha.

  Returns:
    `search`, unchanged.
  """
  if search.method != "gradient":
    return search
  w = search.objective.weight_vector()
  gen = [
      t
      for t, wt in zip(search.objective.targets, w)
      if wt > 0 and _generative_target(t, ev.domain_metrics)
  ]
  if gen:
    raise ConfigError(
        "search.method",
        f"'gradient' cannot optimise the generated-text targets {gen} of"
        " search.objective (exact match / pass@k have no gradient)",
        "use search.method='surrogate' (the gradient refinement is then"
        " recorded, not used), or a bpb metric for that domain in"
        " eval.domain_metrics",
    )
  return search


def _generative_target(name: str, dm: Mapping[str, str]) -> bool:
  parts = name.split("/")
  if parts[0] == "domain" and len(parts) == 2:
    return scoring.is_generative(dict(dm).get(parts[1], "bpb"))
  return scoring.is_generative(parts[-1])
