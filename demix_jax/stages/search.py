"""Stage `search`: merged proxies scored on device, surrogate rounds, alpha*.

Rounds of merged proxies (DeMix Sec. 3) pick alpha*; the gradient search
refines it on the merged model's differentiable bits per byte; the chosen
mixture becomes the final run's source weights. The component diagnostics
(delta per component, pairwise loss barriers) are computed here because they
need the same loaded components. The search state is saved after every
round (search/state/), so a killed search resumes without rescoring.
"""

from __future__ import annotations

import dataclasses
import json
import time

from absl import logging
import numpy as np

from demix_jax import multihost
from demix_jax import progress as progress_lib
from demix_jax import spec as spec_lib
from demix_jax.data import mixture as mixture_lib
from demix_jax.evals import scoring
from demix_jax.merging import diagnostics
from demix_jax.search import gradient as gradient_lib
from demix_jax.search import objective as objective_lib
from demix_jax.search import pool as pool_lib
from demix_jax.search import rounds as rounds_lib
from demix_jax.search import surrogates
from demix_jax.stages import common
from demix_jax.stages import results
from demix_jax.stages import stage as stage_lib
from demix_jax.training import checkpointing

NAME = "search"


def sample_pool(
    spec: spec_lib.RunSpec,
    ws,
    seed: int,
    size: int | None = None,
    sampler: str | None = None,
):
  """The candidate pool (or reference mixtures) drawn with the spec's sampler
  (or `sampler`, e.g. the validation's)."""
  s = spec.search
  prior = pool_lib.prior_from_tokens(
      [ws.bounds.prior_tokens[n] for n in ws.candidates], s.pool.temperature
  )
  cfg = s.pool
  if size is not None:
    cfg = dataclasses.replace(cfg, size=size)
  if sampler is not None:
    cfg = dataclasses.replace(cfg, sampler=sampler)
  return pool_lib.sample_pool(
      cfg,
      np.random.default_rng(seed),
      ws.bounds.alpha_bounds(),
      prior,
      ws.candidates,
  )


def _gradient(spec, ev, bounds, alpha, direction, obj):
  """Mirror descent on the merged model's bpb, from alpha*.

  With the normalised objective the bpb targets are weighted as it weighs
  them (w_t / |base_t|), so the descent minimises the same function the
  rounds ranked by; otherwise equally.
  """
  g = spec.search.gradient
  smooth = [t for t in obj.targets if not direction(t)]
  targets = smooth or None
  if obj.kind == "normalized" and smooth:
    w = dict(zip(obj.targets, obj.weight_vector() / obj.scales()))
    total = sum(w[t] for t in smooth)
    targets = {t: float(w[t] / total) for t in smooth}
  objective = ev.make_objective(targets)
  t1 = time.time()
  grad = gradient_lib.gradient_search(objective, bounds, g, init=alpha)
  scores = {
      k: float(v[0])
      for k, v in ev.evaluate(np.asarray(grad.alpha)[None]).items()
  }
  entry = {
      "alpha": np.asarray(grad.alpha).tolist(),
      "merged_scores": scores,
      "objective": float(grad.value),
      "evaluations": int(grad.evaluations),
      "seconds": time.time() - t1,
  }
  return grad, entry


def run(spec: spec_lib.RunSpec, inputs: common.Inputs) -> results.SearchResult:
  ws = inputs.ws
  s = spec.search
  base = inputs.results["base"]
  comps = inputs.results["components"]
  ev = ws.engines.evaluator(
      base.run_dir, comps.run_dirs(), spec.budgets.use_budget
  )
  store = ev.store
  dm = dict(spec.eval.domain_metrics)
  direction = lambda t: scoring.higher_is_better(t, dm)
  bounds = ws.bounds.alpha_bounds()
  total = sum(rounds_lib.round_sizes(s.rounds.n_init, s.rounds.rounds))
  bar = progress_lib.Progress(NAME, total, "proxies")
  scored = [0]

  def evaluate(alphas):
    def report(done, _):
      bar.update(scored[0] + done)

    out = ev.evaluate(alphas, report)
    scored[0] += len(alphas)
    return out

  # The base model on the same evaluator: the normalised objective's
  # reference, and the zero point of every "change from the base" reported.
  base_params = store.base
  if base_params is None:
    base_params = checkpointing.load_params(base.run_dir)
  base_scores = ev.evaluate_params(base_params)
  obj = s.objective
  if obj.kind == "normalized":
    obj = obj.with_reference(base_scores)
  t0 = time.time()
  result = rounds_lib.run_search(
      evaluate,
      lambda: sample_pool(spec, ws, spec.seed),
      obj,
      direction,
      s.rounds,
      str(ws.workdir / "search" / "state"),
      ws.candidates,
  )
  search_seconds = time.time() - t0
  alpha = np.asarray(result.alpha, np.float64)
  measured = {k: float(v[0]) for k, v in ev.evaluate(alpha[None]).items()}
  methods_table = {
      "surrogate": {"alpha": alpha.tolist(), "merged_scores": measured}
  }
  grad = None
  if s.gradient is not None:
    grad, methods_table["gradient"] = _gradient(
        spec, ev, bounds, alpha, direction, obj
    )
  chosen = alpha
  if s.method == "gradient" and grad is not None:
    chosen = np.asarray(grad.alpha, np.float64)
  # The final runs train on this mixture on every process: use process 0's.
  chosen = multihost.broadcast(np.asarray(chosen, np.float64))
  alpha_d = dict(zip(ws.candidates, chosen.tolist()))
  weights = ws.bounds.source_weights(alpha_d)
  epochs = mixture_lib.epochs_per_source(
      weights, ws.data.token_counts, spec.final.tokens
  )
  proxies = baseline_proxies(
      spec, ws, ev, {"demix": alpha_d}, obj, base_scores, direction
  )
  barriers = diagnostics.loss_barriers(
      ev.row_nll_evaluator(), points=s.barrier_points
  )
  if barriers.get("warning"):
    logging.warning("%s", barriers["warning"])
  diag = {
      "delta": diagnostics.weight_deltas(store),
      "barrier": {k: v["barrier"] for k, v in barriers["pairs"].items()},
      "barrier_target": barriers["target"],
      "barrier_warning": barriers.get("warning"),
  }
  generation = ev.generation_stats()  # prompt and generated tokens, time
  if generation:
    diag["generation"] = generation
  snippet = (
      "--config.final.fixed_mixtures.found='"
      + json.dumps({k: round(v, 6) for k, v in weights.items()})
      + "'"
  )
  used = "gradient" if s.method == "gradient" else "surrogate"
  bar.finish(
      f"{result.n_evaluated} proxies, alpha* = "
      + ", ".join(f"{k} {v:.3f}" for k, v in alpha_d.items())
  )
  return results.SearchResult(
      alpha=alpha_d,
      source_weights=weights,
      predicted=result.predicted,
      predicted_std=result.predicted_std,
      merged_scores=methods_table[used]["merged_scores"],
      methods=methods_table,
      epochs=epochs,
      rounds=result.rounds,
      final_cv=result.final_cv,
      proxies_csv=result.table_path,
      n_proxies=result.n_evaluated,
      diagnostics=diag,
      config_snippet=snippet,
      objective=results.SearchObjective(
          kind=s.objective.kind, targets=tuple(s.objective.targets)
      ),
      search_seconds=search_seconds,
      surrogate=surrogates.resolve_kind(s.rounds.surrogate, result.n_evaluated),
      base_scores=base_scores,
      proxies=proxies,
      gradient_paths=[] if grad is None else np.asarray(grad.paths).tolist(),
      tokens=0,
  )


def baseline_alphas(spec: spec_lib.RunSpec, ws) -> dict[str, dict[str, float]]:
  """Component weights of the final stage's baselines, where they exist.

  "natural" is the prior itself; a fixed mixture (source weights) maps back
  through the beta padding (`weights_to_alpha`), and is left out when it has
  less general data than the padding alone gives (no merge expresses it).
  """
  out = {}
  if "natural" in spec.final.baselines:
    out["natural"] = dict(ws.bounds.natural_alpha)
  d = spec.data
  for name, mix in spec.final.fixed_mixtures.items():
    full = {c: float(mix.get(c, 0.0)) for c in ws.candidates}
    total = sum(full.values())
    if total <= 0 or set(mix) - set(ws.candidates):
      continue
    a = mixture_lib.weights_to_alpha(
        {c: v / total for c, v in full.items()}, d.general, d.beta
    )
    if min(a.values()) >= -1e-9:
      out[name] = {c: max(0.0, a[c]) for c in ws.candidates}
  return out


def baseline_proxies(spec, ws, ev, found, obj, base_scores, direction):
  """The found mixture and every baseline scored as merged proxies.

  Returns {name: {"alpha", "merged_scores", "objective", "normalized"}}:
  `objective` is the search objective among these mixtures (for the
  composite, percentile ranks among them), `normalized` the mean relative
  change from the base either way, so found vs natural reads the same on
  the proxy as on the trained runs.
  """
  alphas = {**found, **baseline_alphas(spec, ws)}
  names = list(alphas)
  a = np.array([[alphas[n][c] for c in ws.candidates] for n in names])
  scores = ev.evaluate(a)
  norm = objective_lib.ObjectiveSpec(
      obj.targets, "normalized", obj.weights
  ).with_reference(base_scores)
  values = objective_lib.evaluate(scores, obj, direction, what="baselines")
  normalized = objective_lib.evaluate(scores, norm, direction)
  return {
      n: {
          "alpha": alphas[n],
          "merged_scores": {t: float(v[i]) for t, v in scores.items()},
          "objective": float(values[i]),
          "normalized": float(normalized[i]),
      }
      for i, n in enumerate(names)
  }


STAGE = stage_lib.Stage(
    name=NAME,
    requires=("base", "components"),
    result=results.SearchResult,
    run=run,
    # The final run's token count sets the epoch caps on alpha.
    hashed=stage_lib.SCORING + ("search", "final.tokens"),
)
