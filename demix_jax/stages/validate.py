"""Stage `validate`: reference runs vs merged and trained proxies (Table 2).

Reference mixtures are drawn with the search's sampler (another seed), or
with `validate.sampler` ("uniform": Dirichlet(1) under the same caps, which
spreads them over the simplex instead of around the prior); each
is trained from the base for `validate.reference_tokens`, keeping early
checkpoints that serve as the trained proxies (RegMix-style) at
`validate.proxy_fractions` of its tokens. Merged proxies of every variant
(budget x merge method x beta, one factor at a time) score the same
mixtures; the harness reports rank agreement and cost. The first
`validate.twins` reference mixtures are trained a second time with another
data order for the noise ceiling. Components for an
extra beta are trained here, under validate/components_beta<b>/.
"""

from __future__ import annotations

import jax

from demix_jax import models
from demix_jax import progress as progress_lib
from demix_jax import spec as spec_lib
from demix_jax.evals import scoring
from demix_jax.merging import diagnostics
from demix_jax.search import rounds as rounds_lib
from demix_jax.stages import common
from demix_jax.stages import components as components_stage
from demix_jax.stages import results
from demix_jax.stages import search as search_stage
from demix_jax.stages import stage as stage_lib
from demix_jax.training import checkpointing
from demix_jax.validation import harness

NAME = "validate"
_SAME = 1e-12


def variants(spec: spec_lib.RunSpec) -> list[harness.MergedVariant]:
  """Merged-proxy variants, ablating one factor at a time."""
  v, beta0 = spec.validate, spec.data.beta
  out = []
  for b in spec.budgets.component_budgets:
    for method in v.merge_methods:
      for beta in (beta0,) + v.betas:
        if method != "linear" and abs(beta - beta0) > _SAME:
          continue
        if b != spec.budgets.use_budget and (
            method != "linear" or abs(beta - beta0) > _SAME
        ):
          continue
        out.append(
            harness.MergedVariant(
                label=f"{method}|beta{beta:g}|{int(b)}",
                component_tokens=int(b),
                merge_method=method,
                beta=beta,
            )
        )
  return out


def run(
    spec: spec_lib.RunSpec, inputs: common.Inputs
) -> results.ValidateResult:
  ws = inputs.ws
  v = spec.validate
  base = inputs.results["base"]
  comps = inputs.results["components"]
  ref_tokens = v.reference_tokens
  alphas = search_stage.sample_pool(
      spec,
      ws,
      spec.seed + common.REFERENCE_POOL_SEED,
      size=v.num_references,
      sampler=None if v.sampler == "search" else v.sampler,
  )
  ev0 = ws.engines.evaluator(
      base.run_dir, comps.run_dirs(), spec.budgets.use_budget
  )
  dm = dict(spec.eval.domain_metrics)
  domains = [t.split("/", 1)[1] for t in ev0.targets if t.startswith("domain/")]
  direction = {d: scoring.higher_is_better(f"domain/{d}", dm) for d in domains}
  # Every source's held-out bits per byte too (lower is better): targets the
  # search can use, each with its own noise ceiling in the tables.
  heldout = [
      t
      for t in ev0.targets
      if t.startswith("heldout/") and t.endswith("/bpb") and t != "heldout/bpb"
  ]
  direction.update({t: False for t in heldout})

  def targets_of(scores) -> dict[str, float]:
    return {**common.domain_scores(scores), **{t: scores[t] for t in heldout}}

  budgets = harness.proxy_budgets(ref_tokens, v.proxy_fractions)
  beta_dirs = {}

  def component_dirs(beta: float) -> dict[str, str]:
    if abs(beta - spec.data.beta) < _SAME:
      return comps.run_dirs()
    if beta not in beta_dirs:
      out_dir = ws.workdir / "validate" / f"components_beta{beta:g}"
      runs = components_stage.train_components(
          spec, inputs, beta, out_dir, what=f"component (beta={beta:g})"
      )
      beta_dirs[beta] = {c: r.run_dir for c, r in runs.items()}
    return beta_dirs[beta]

  # One progress line over every reference and twin run (the longest part).
  per_run = common.steps_of(spec, ref_tokens)
  bar = progress_lib.Progress(
      NAME, per_run * (v.num_references + v.twins), "reference steps"
  )

  def train_reference(i, alpha, out_dir, twin=False):
    # A twin is the same mixture and budget from the same base; only the
    # data order (and the step seed) differ: what a second training would
    # see. It keeps no early checkpoints (it is no trained proxy).
    weights = ws.bounds.source_weights(dict(zip(ws.candidates, alpha.tolist())))
    slot = v.num_references + i if twin else i
    ws.recipe.train(
        out_dir,
        weights,
        ref_tokens,
        what=f"twin of reference {i}" if twin else f"reference {i}",
        budgets=() if twin else tuple(budgets),
        init_from=base.run_dir,
        seed_offset=(common.TWIN_SEED if twin else common.REFERENCE_SEED) + i,
        config_hash=inputs.config_hash,
        progress=lambda s: bar.update(per_run * slot + s),
    )

  def score_reference(i, fraction, prefix="ref"):
    run_dir = ws.workdir / "validate" / "references" / f"{prefix}_{i:04d}"
    tokens = None if fraction >= 1.0 else int(round(fraction * ref_tokens))
    params = checkpointing.load_params(run_dir, tokens)
    return targets_of(ev0.evaluate_params(params))

  def score_merged(a, label):
    method, beta_s, tokens = label.split("|")
    ev = ws.engines.evaluator(
        base.run_dir, component_dirs(float(beta_s[4:])), int(tokens), method
    )
    out = dict(targets_of(ev.evaluate(a)))
    # How far the components moved and how convex the path between them is:
    # what decides whether a merge can stand in for training (the recipe
    # study reads these beside the rank agreement).
    barriers = diagnostics.loss_barriers(
        ev.row_nll_evaluator(), points=spec.search.barrier_points
    )
    delta = diagnostics.weight_deltas(ev.store)
    out["diagnostics"] = {
        "delta": delta,
        "delta_mean": sum(delta.values()) / len(delta),
        "barrier": {k: p["barrier"] for k, p in barriers["pairs"].items()},
        "max_barrier": barriers["max_barrier"],
        "barrier_target": barriers["target"],
    }
    return out

  n = spec.search.rounds
  cost = harness.CostSettings(
      n_params=float(models.num_params(spec.model)),
      n_components=len(ws.candidates),
      n_proxies=sum(rounds_lib.round_sizes(n.n_init, n.rounds)),
      eval_tokens=float(ev0.suite.real_tokens),
  )
  final = inputs.get("final")
  final_scores = None
  if final is not None:
    final_scores = {
        name: targets_of(r.scores) for name, r in final.runs.items()
    }
  table = harness.run_validation(
      str(ws.workdir),
      alphas,
      direction,
      train_reference,
      score_reference,
      score_merged,
      reference_tokens=ref_tokens,
      variants=variants(spec),
      cost=cost,
      proxy_fractions=v.proxy_fractions,
      main_merge_method="linear",
      main_beta=spec.data.beta,
      final_scores=final_scores,
      twins=v.twins,
      train_twin=lambda i, a, d: train_reference(i, a, d, twin=True),
      score_twin=lambda i, f: score_reference(i, f, prefix="twin"),
      write=jax.process_index() == 0,
  )
  bar.finish(
      f"{v.num_references} references + {v.twins} twins of {ref_tokens:,} "
      "tokens"
  )
  return results.ValidateResult(
      rows=table.get("rows", []),
      table=str(ws.workdir / "validate" / "table.json"),
      tokens=len(alphas) * ref_tokens,
  )


STAGE = stage_lib.Stage(
    name=NAME,
    requires=("base", "components"),
    optional=("final",),
    result=results.ValidateResult,
    run=run,
    hashed=stage_lib.SCORING + ("search", "final.tokens", "validate"),
)
