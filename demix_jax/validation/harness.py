"""The validation stage: merged proxies vs trained proxies vs real training.

`run_validation` takes R mixtures (the caller's sampler) and three callables,
so it runs the same with the real trainer/evaluator and with test fakes:

* `train_reference(i, alpha, out_dir)`: train reference model i on mixture
  alpha from the base with the full budget, writing under out_dir and
  keeping early checkpoints at the trained-proxy fractions of the budget;
* `score_reference(i, fraction) -> {domain: score}`: score reference i's
  checkpoint at `fraction` of its budget (1.0 = the reference itself,
  smaller = a trained proxy, RegMix/CLIMB style, as the official code uses
  early checkpoints of the reference runs);
* `score_merged(alphas, variant) -> {domain: [R] scores}`: merged proxies
  for all R mixtures, for one variant label (merge method / component budget
  / beta ablation); an optional "diagnostics" entry (the components'
  deltas, loss barriers) is cached with them and lands in the variant's
  table row.

Layout under workdir/validate/:

  references/ref_0000/   train_reference's out_dir; DONE marks it trained
  scores/reference.json  per-reference scores at every fraction (resumable:
                         written after each reference)
  scores/merged.json     per-variant merged-proxy scores (with the alphas'
                         digest, recomputed if the mixtures change)
  table.json             one row per method and budget (see `_row`)
  table.md               paper Table 2 layout (+ Tables 4-5 for ablations,
                         Table 3's rank columns for final models; `tables`)
  rho_vs_tokens.png      macro rho vs total training tokens per family

A rerun skips every reference with cached scores (or a DONE marker) and
every merged variant with cached scores for the same mixtures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import fractions
import logging
from typing import Any

from etils import epath
import numpy as np

from demix_jax import storage
from demix_jax.validation import cache
from demix_jax.validation import cost as cost_lib
from demix_jax.validation import metrics
from demix_jax.validation import tables

_LOG = logging.getLogger(__name__)

TRAINED_METHOD = "Trained proxy (RegMix/CLIMB)"
MERGED_METHOD = "DeMix"

TrainReference = Callable[[int, np.ndarray, str], None]
ScoreReference = Callable[[int, float], Mapping[str, float]]
ScoreMerged = Callable[[np.ndarray, str], Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class MergedVariant:
  """One family of merged proxies.

  Attributes:
    label: passed to score_merged; unique.
    component_tokens: training tokens of each component it merges.
    merge_method: "linear" (DeMix), or an ablation ("ties", "dare", ...).
    beta: general-data fraction the components were trained with.
  """

  label: str
  component_tokens: float
  merge_method: str = "linear"
  beta: float = 0.5


@dataclasses.dataclass(frozen=True)
class CostSettings:
  """How costs are counted (see `demix_jax.validation.cost`).

  Attributes:
    n_params: model parameters (FLOPs).
    n_components: N, components merged by DeMix.
    n_proxies: proxies each method evaluates in a search (the paper's
      notional 112); None = R. Correlations are over the R references
      regardless.
    eval_tokens: tokens of one evaluation pass of a proxy.
    benchmark_tokens: fixed per-proxy evaluation charge (the paper's
      0.01B convention) instead of eval_tokens / 3.
    base_tokens: tokens of the shared base.
    count_base: charge DeMix for the base (the paper does not).
    count_eval_for_trained: charge trained proxies for their evaluation too
      (the paper does not).
  """

  n_params: float
  n_components: int
  n_proxies: int | None = None
  eval_tokens: float = 0.0
  benchmark_tokens: float | None = None
  base_tokens: float = 0.0
  count_base: bool = False
  count_eval_for_trained: bool = False


def proxy_budgets(
    reference_tokens: float, fractions_: Sequence[float]
) -> list[int]:
  """Token counts at which a reference run must keep checkpoints."""
  return [int(round(f * reference_tokens)) for f in fractions_]


def fraction_label(f: float) -> str:
  """1/16 for 0.0625; decimals when no small denominator fits."""
  q = fractions.Fraction(f).limit_denominator(1024)
  if abs(float(q) - f) > 1e-9:
    return f"{f:g}"
  return str(q.numerator) if q.denominator == 1 else str(q)


def _check_inputs(alphas, higher_is_better, proxy_fractions, variants):
  if alphas.ndim != 2 or alphas.shape[0] < 3:
    raise ValueError(
        f"alphas must be [R, K] with R >= 3 reference mixtures, "
        f"got shape {alphas.shape}"
    )
  if (alphas < 0).any() or not np.allclose(alphas.sum(1), 1.0, atol=1e-6):
    raise ValueError(
        "alphas: every reference mixture must be non-negative and sum to 1"
    )
  if not higher_is_better:
    raise ValueError("higher_is_better: give at least one domain")
  for f in proxy_fractions:
    if not 0 < f < 1:
      raise ValueError(
          f"proxy_fractions: {f} must lie in (0, 1); 1.0 is the "
          "reference itself"
      )
  if len(set(proxy_fractions)) != len(proxy_fractions):
    raise ValueError(f"proxy_fractions {proxy_fractions} repeat a value")
  labels = [v.label for v in variants]
  if len(set(labels)) != len(labels):
    raise ValueError(f"merged variant labels {labels} must be unique")


def _uncertainty(proxy, reference, domains, ceil):
  """Bootstrap interval of rho and the noise ceiling, for one proxy family."""
  ci = metrics.bootstrap_rho(proxy, reference, domains)
  out = {
      "rho_ci": ci,
      "rho_macro_ci": ci["macro"],
      "ceiling_macro": ceil["macro"] if ceil else float("nan"),
  }
  if "macro_heldout" in ci:
    out["ceiling_macro_heldout"] = (
        ceil["macro_heldout"] if ceil else float("nan")
    )
  return out


def _row(method, family, budget_label, c: cost_lib.Cost, cons, **extra):
  row = {
      "method": method,
      "family": family,
      "budget_label": budget_label,
      "pre_tokens": c.pre_tokens,
      "n_proxies": c.n_proxies,
      "tokens_per_proxy": c.tokens_per_proxy,
      "total_tokens": c.total_tokens,
      "total_flops": c.total_flops,
  }
  row.update(extra)
  row.update(cons)
  row["rho_macro"] = cons["rho"]["macro"]
  if "macro_heldout" in cons["rho"]:
    row["rho_macro_heldout"] = cons["rho"]["macro_heldout"]
  return row


def run_validation(
    workdir: str,
    alphas: np.ndarray,
    higher_is_better: Mapping[str, bool],
    train_reference: TrainReference,
    score_reference: ScoreReference,
    score_merged: ScoreMerged,
    *,
    reference_tokens: float,
    variants: Sequence[MergedVariant],
    cost: CostSettings,
    proxy_fractions: Sequence[float] = (1 / 16, 1 / 8, 1 / 4),
    main_merge_method: str = "linear",
    main_beta: float = 0.5,
    final_scores: Mapping[str, Mapping[str, float]] | None = None,
    twins: int = 0,
    train_twin: TrainReference | None = None,
    score_twin: ScoreReference | None = None,
    write: bool = True,
    log: Callable[[str], None] = _LOG.info,
) -> dict[str, Any]:
  """Runs (or resumes) the validation and writes its table and plot.

  Args:
    workdir: pipeline workdir; outputs go to workdir/validate/.
    alphas: [R, K] reference mixtures (component weights, rows sum to 1).
    higher_is_better: {target: direction}; the targets scored, in order:
      benchmark domains, and optionally held-out targets
      ("heldout/<source>/bpb", lower is better), each reported with its
      own rho and noise ceiling and macro-averaged apart from the domains
      ("macro_heldout" beside "macro"; `metrics.macros`).
    train_reference: (i, alpha [K], out_dir) -> None; trains reference i
      with `reference_tokens` tokens, keeping checkpoints at
      proxy_budgets(reference_tokens, proxy_fractions).
    score_reference: (i, fraction) -> {domain: score} for reference i's
      checkpoint at that fraction of its budget (1.0 = final).
    score_merged: (alphas [R, K], variant label) -> {domain: [R] scores}.
    reference_tokens: training tokens of each reference run.
    variants: merged-proxy families to score.
    cost: cost-accounting settings.
    proxy_fractions: budget fractions of the trained-proxy baselines.
    main_merge_method: merge method of the main (Table 2) DeMix rows.
    main_beta: beta of the main DeMix rows.
    final_scores: optional {model name: {domain: score}} of final runs,
      ranked among the references.
    twins: the first `twins` reference mixtures are trained a second time
      (`train_twin`, another data order) for the noise ceiling: the
      Spearman between the two trainings, per domain and macro.
    train_twin: like train_reference, for the replicas.
    score_twin: like score_reference (called with fraction 1.0 only).
    write: write files (False on non-zero processes of a multi-host run).
    log: progress logger.

  Returns:
    The table dict written to table.json, plus "paths" {table_json,
    table_md, plot}.
  """
  alphas = np.asarray(alphas, dtype=np.float64)
  proxy_fractions = tuple(float(f) for f in proxy_fractions)
  _check_inputs(alphas, higher_is_better, proxy_fractions, variants)
  domains = list(higher_is_better)
  n = len(alphas)
  root = epath.Path(workdir) / "validate"
  fracs = (1.0,) + proxy_fractions
  ref_cache = cache.reference_scores(
      root, alphas, fracs, domains, train_reference, score_reference, write, log
  )
  merged, diags = cache.merged_scores(
      root, alphas, variants, domains, score_merged, write, log
  )

  reference = cache.family(ref_cache, n, 1.0, domains)
  ceil, ceil_ci = None, None
  if twins:
    if train_twin is None or score_twin is None:
      raise ValueError("twins > 0 needs train_twin and score_twin")
    if not 3 <= twins <= n:
      raise ValueError(
          f"twins={twins}: the noise ceiling needs 3 to {n} (the number "
          "of references) replicated mixtures"
      )
    twin_cache = cache.reference_scores(
        root,
        alphas[:twins],
        (1.0,),
        domains,
        train_twin,
        score_twin,
        write,
        log,
        kind="twin",
    )
    twin = cache.family(twin_cache, twins, 1.0, domains)
    first = {d: reference[d][:twins] for d in domains}
    ceil = metrics.ceiling(first, twin, domains)
    ceil_ci = metrics.bootstrap_rho(first, twin, domains)
  n_proxies = cost.n_proxies if cost.n_proxies is not None else n
  rows = []
  for f in sorted(proxy_fractions):
    tokens = f * reference_tokens
    c = cost_lib.trained_proxy_cost(
        n_proxies,
        tokens,
        n_params=cost.n_params,
        eval_tokens=cost.eval_tokens,
        benchmark_tokens=cost.benchmark_tokens,
        count_eval=cost.count_eval_for_trained,
    )
    proxy = cache.family(ref_cache, n, f, domains)
    cons = metrics.consistency(proxy, reference, higher_is_better)
    rows.append(
        _row(
            TRAINED_METHOD,
            "trained",
            f"{n_proxies} x {fraction_label(f)} reference budget",
            c,
            cons,
            **_uncertainty(proxy, reference, domains, ceil),
            main=True,
            variant=None,
            fraction=f,
            train_tokens_per_proxy=tokens,
        )
    )
  for v in sorted(variants, key=lambda v: v.component_tokens):
    c = cost_lib.demix_cost(
        cost.n_components,
        v.component_tokens,
        n_proxies,
        n_params=cost.n_params,
        eval_tokens=cost.eval_tokens,
        benchmark_tokens=cost.benchmark_tokens,
        base_tokens=cost.base_tokens,
        count_base=cost.count_base,
    )
    is_main = v.merge_method == main_merge_method and v.beta == main_beta
    method = (
        MERGED_METHOD
        if is_main
        else f"{MERGED_METHOD} ({v.merge_method}, beta={v.beta:g})"
    )
    cons = metrics.consistency(
        merged[v.label],
        reference,
        higher_is_better,
    )
    rows.append(
        _row(
            method,
            "merged",
            f"{cost.n_components} x {tables.fmt_tokens(v.component_tokens)}"
            " components",
            c,
            cons,
            **_uncertainty(merged[v.label], reference, domains, ceil),
            diagnostics=diags[v.label],
            main=is_main,
            variant=v.label,
            merge_method=v.merge_method,
            beta=v.beta,
            component_tokens=v.component_tokens,
        )
    )
  ranks = {
      name: metrics.mixture_ranks(s, reference, higher_is_better)
      for name, s in (final_scores or {}).items()
  }
  table = {
      "domains": domains,
      "benchmark_domains": metrics.split_targets(domains)[0],
      "heldout_targets": metrics.split_targets(domains)[1],
      "higher_is_better": dict(higher_is_better),
      "n_references": n,
      "reference_tokens": reference_tokens,
      "n_components": cost.n_components,
      "proxy_fractions": proxy_fractions,
      "main_merge_method": main_merge_method,
      "main_beta": main_beta,
      "cost_settings": dataclasses.asdict(cost),
      "alphas": alphas.tolist(),
      "reference_scores": {d: reference[d].tolist() for d in domains},
      "n_twins": twins,
      "ceiling": ceil,
      "ceiling_ci": ceil_ci,
      "twin_scores": {d: twin[d].tolist() for d in domains} if twins else None,
      "rows": rows,
      "mixture_ranks": ranks,
  }
  table = cache.jsonable(table)
  paths = {
      "table_json": str(root / "table.json"),
      "table_md": str(root / "table.md"),
      "plot": str(root / "rho_vs_tokens.png"),
  }
  if write:
    root.mkdir(parents=True, exist_ok=True)
    cache.write_json(root / "table.json", table)
    storage.atomic_write_text(root / "table.md", tables.markdown(table))
    tables.plot_rho_vs_tokens(table["rows"], paths["plot"])
  table["paths"] = paths
  return table
