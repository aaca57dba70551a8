"""Stage bodies of the pipeline (see pipeline.py for ordering and skipping).

Each `run_<stage>(ctx)` does the work of one stage for a RunContext and
returns the JSON-able outputs that pipeline.py writes to
`workdir/<stage>/done.json`: at least `tokens` (training tokens spent) and
whatever later stages read.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

from absl import logging
import jax
import numpy as np

from demix_jax import context as context_lib
from demix_jax import multihost
from demix_jax import pipeline as pipeline_lib

# ---------------------------------------------------------------- training


def run_base(ctx: context_lib.RunContext) -> dict[str, Any]:
  """The shared base model, trained from scratch on the pretrain mixture."""
  weights = dict(ctx.config.data.pretrain_mixture)
  tokens = int(ctx.config.base.tokens)
  run_dir = ctx.workdir / "base" / "run"
  r = ctx.train(run_dir, weights, tokens, what="data.pretrain_mixture")
  return {
      "run_dir": str(run_dir),
      "tokens": r.tokens,
      "steps": r.steps,
      "train_seconds": r.seconds,
      "eval": r.eval_metrics,
      "mixture": weights,
  }


def run_components(ctx: context_lib.RunContext) -> dict[str, Any]:
  """One component per candidate, continued from the base on D'_i.

  D'_i = beta * G + (1 - beta) * D_i (the general candidate: G alone).
  Checkpoints at `components.budgets` tokens are kept forever; each
  component is its own resumable run, so a kill loses at most the steps
  since its last checkpoint.
  """
  base = pipeline_lib.require(ctx, "base")
  tokens = int(ctx.config.components.tokens)
  budgets = tuple(int(b) for b in ctx.config.components.budgets)
  out, spent = {}, 0
  from demix_jax.data import mixture as mixture_lib  # pylint: disable=g-import-not-at-top

  for i, cand in enumerate(ctx.candidates):
    done_path = ctx.workdir / "components" / cand / "done.json"
    if done_path.exists():
      out[cand] = json.loads(done_path.read_text())
      spent += out[cand]["tokens"]
      continue
    weights = mixture_lib.component_weights(cand, ctx.general, ctx.beta)
    run_dir = ctx.workdir / "components" / cand
    r = ctx.train(
        run_dir,
        weights,
        tokens,
        what=f"component {cand}",
        budgets=budgets,
        init_from=base["run_dir"],
        seed_offset=1 + i,
    )
    out[cand] = {
        "run_dir": str(run_dir),
        "tokens": r.tokens,
        "steps": r.steps,
        "train_seconds": r.seconds,
        "mixture": weights,
        "eval": r.eval_metrics,
        "budget_checkpoints": {
            str(k): v for k, v in r.budget_checkpoints.items()
        },
    }
    context_lib.write_json(done_path, out[cand])
    spent += r.tokens
  return {"components": out, "tokens": spent}


def run_final(ctx: context_lib.RunContext) -> dict[str, Any]:
  """Trains the found mixture and the baselines from the base, scores them."""
  base = pipeline_lib.require(ctx, "base")
  search = pipeline_lib.require(ctx, "search")
  tokens = int(ctx.config.final.tokens)
  runs = {"demix": dict(search["source_weights"])}
  for name in ctx.config.final.baselines:
    if name == "natural":
      runs["natural"] = ctx.source_weights(ctx.natural_alpha)
    else:
      raise pipeline_lib.config_lib.ConfigError(
          "final.baselines",
          f"unknown baseline {name!r}",
          "use 'natural' or list fixed mixtures in final.fixed_mixtures",
      )
  for name, mix in dict(ctx.config.final.fixed_mixtures).items():
    runs[name] = dict(mix)
  ev = evaluator(ctx)
  results, spent = {}, 0
  for i, (name, weights) in enumerate(runs.items()):
    done_path = ctx.workdir / "final" / name / "done.json"
    if done_path.exists():
      results[name] = json.loads(done_path.read_text())
      spent += results[name]["tokens"]
      continue
    run_dir = ctx.workdir / "final" / name
    r = ctx.train(
        run_dir,
        weights,
        tokens,
        what=f"final run {name}",
        init_from=base["run_dir"],
        seed_offset=100 + i,
    )
    scores = ev.evaluate_params(r.params)
    results[name] = {
        "run_dir": str(run_dir),
        "weights": weights,
        "tokens": r.tokens,
        "train_seconds": r.seconds,
        "scores": {k: float(v) for k, v in scores.items()},
    }
    context_lib.write_json(done_path, results[name])
    spent += r.tokens
  return {"runs": results, "tokens": spent}


# ------------------------------------------------------------------ search


def eval_suite(ctx: context_lib.RunContext):
  """Benchmarks (tokenized once, cached) + held-out rows of every source."""
  from demix_jax.evals import benchmarks as bench_lib  # pylint: disable=g-import-not-at-top

  c = ctx.config
  heldout = {}
  for name in ctx.sources:
    h = ctx.heldout(name)
    heldout[name] = {
        "tokens": h["tokens"],
        "segment_ids": h["segment_ids"],
        "positions": h["positions"],
        "n_bytes": h["num_bytes"],
    }
  return bench_lib.build_suite(
      tuple(c.eval.benchmarks),
      ctx.vocab.encode,
      ctx.vocab.fingerprint,
      int(c.data.seq_len),
      int(c.eval.batch_size),
      max_items=int(c.eval.max_items),
      seed=int(c.seed),
      cache_dir=str(ctx.data_dir / "benchmarks"),
      heldout=heldout,
  )


def mesh_and_rules(ctx: context_lib.RunContext):
  from demix_jax.training import sharding as sharding_lib  # pylint: disable=g-import-not-at-top

  cfg = ctx.train_config(1, mixture={})
  mesh = sharding_lib.create_mesh(cfg.mesh_axes)
  return mesh, sharding_lib.check_rules(cfg.rules, mesh)


def component_store(
    ctx: context_lib.RunContext,
    tokens: int | None = None,
    beta_dirs: dict[str, str] | None = None,
):
  """The stacked components at the configured budget (+ the base)."""
  from demix_jax import models  # pylint: disable=g-import-not-at-top
  from demix_jax.merging import store as store_lib  # pylint: disable=g-import-not-at-top

  comps = pipeline_lib.require(ctx, "components")["components"]
  base = pipeline_lib.require(ctx, "base")
  mesh, rules = mesh_and_rules(ctx)
  dirs = beta_dirs or {c: comps[c]["run_dir"] for c in ctx.candidates}
  use = int(ctx.config.components.use_budget) if tokens is None else tokens
  store = store_lib.ComponentStore.from_checkpoints(
      dirs,
      base_dir=base["run_dir"],
      tokens=use,
      mesh=mesh,
      rules=rules,
      logical_axes=models.param_logical_axes(ctx.model_cfg),
  )
  if store.fingerprint and store.fingerprint != ctx.vocab.fingerprint:
    raise pipeline_lib.config_lib.ConfigError(
        "data.tokenizer",
        "the components were trained with a different "
        "tokenizer than the current one",
        "use the tokenizer of that run "
        "(data.tokenizer.path) or a new workdir",
    )
  return store


def _merge_spec(ctx: context_lib.RunContext, method: str | None = None):
  from demix_jax.merging import methods  # pylint: disable=g-import-not-at-top

  m = ctx.config.merge
  return methods.MergeSpec(
      method=method or m.method,
      density=float(m.density),
      gamma=float(m.gamma),
      seed=int(ctx.config.seed),
  )


_EVALUATORS: dict[tuple, Any] = {}


def evaluator(ctx: context_lib.RunContext, store=None, method=None):
  """The merge+evaluate engine over the components (cached per context).

  Args:
    ctx: the run context (base and components must be finished).
    store: a ComponentStore (default: `component_store(ctx)`).
    method: merge method (default config.merge.method).

  Returns:
    A `merging.engine.MixtureEvaluator`.
  """
  from demix_jax.merging import engine as engine_lib  # pylint: disable=g-import-not-at-top

  key = (id(ctx), id(store), method)
  if key not in _EVALUATORS:
    mesh, rules = mesh_and_rules(ctx)
    if not hasattr(ctx, "_suite"):
      ctx._suite = eval_suite(ctx)  # pylint: disable=protected-access
    _EVALUATORS[key] = engine_lib.MixtureEvaluator(
        ctx.model_cfg,
        store if store is not None else component_store(ctx),
        ctx._suite,
        spec=_merge_spec(ctx, method),  # pylint: disable=protected-access
        chunk_size=int(ctx.config.merge.chunk_size),
        mesh=mesh,
        rules=rules,
        domain_metrics=dict(ctx.config.eval.domain_metrics),
    )
  return _EVALUATORS[key]


def alpha_bounds(ctx: context_lib.RunContext):
  """Per-candidate alpha bounds: epoch caps of the final run + constraints."""
  from demix_jax.data import mixture as mixture_lib  # pylint: disable=g-import-not-at-top
  from demix_jax.search import pool as pool_lib  # pylint: disable=g-import-not-at-top

  caps = mixture_lib.alpha_caps(
      ctx.candidates,
      ctx.general,
      ctx.token_counts,
      int(ctx.config.final.tokens),
      ctx.beta,
      float(ctx.config.data.max_epochs),
  )
  bounds = pool_lib.Bounds(
      np.zeros(len(ctx.candidates)), np.array([caps[c] for c in ctx.candidates])
  )
  constraints = {
      k: tuple(v) if isinstance(v, (list, tuple)) else float(v)
      for k, v in dict(ctx.config.search.constraints).items()
  }
  return bounds.with_constraints(ctx.candidates, constraints)


def run_search(ctx: context_lib.RunContext) -> dict[str, Any]:
  """Merged proxies scored on device, surrogate rounds, gradient search."""
  from demix_jax.evals import scoring  # pylint: disable=g-import-not-at-top
  from demix_jax.merging import diagnostics  # pylint: disable=g-import-not-at-top
  from demix_jax.search import gradient as gradient_lib  # pylint: disable=g-import-not-at-top
  from demix_jax.search import objective as objective_lib  # pylint: disable=g-import-not-at-top
  from demix_jax.search import pool as pool_lib  # pylint: disable=g-import-not-at-top
  from demix_jax.search import rounds as rounds_lib  # pylint: disable=g-import-not-at-top
  from demix_jax.search import surrogates  # pylint: disable=g-import-not-at-top

  c, s = ctx.config, ctx.config.search
  store = component_store(ctx)
  ev = evaluator(ctx, store)
  dm = dict(c.eval.domain_metrics)
  direction = lambda t: scoring.higher_is_better(t, dm)
  if s.objective == "composite":
    targets = tuple(t for t in ev.targets if t.startswith("domain/"))
    weights = {
        f"domain/{k}": float(v) for k, v in dict(s.domain_weights).items()
    }
    spec = objective_lib.ObjectiveSpec(targets, "composite", weights or None)
  else:
    if s.objective not in ev.targets:
      raise pipeline_lib.config_lib.ConfigError(
          "search.objective",
          f"{s.objective!r} is not a target",
          f"use 'composite' or one of {ev.targets}",
      )
    spec = objective_lib.ObjectiveSpec((s.objective,), "target")
  bounds = alpha_bounds(ctx)
  prior = pool_lib.prior_from_tokens(
      [ctx.token_counts[n] for n in ctx.candidates], float(s.temperature)
  )
  pool_cfg = pool_lib.PoolConfig(
      size=int(s.pool_size),
      sampler=s.sampler,
      temperature=float(s.temperature),
      concentration_range=tuple(s.concentration_range),
      concentration_count=int(s.concentration_count),
      floor=float(s.floor),
  )
  make_pool = lambda: pool_lib.sample_pool(
      pool_cfg,
      np.random.default_rng(int(c.seed)),
      bounds,
      prior,
      ctx.candidates,
  )
  search_cfg = rounds_lib.SearchConfig(
      n_init=int(s.n_init),
      rounds=int(s.rounds),
      top_region=float(s.top_region),
      final_topk=int(s.final_topk),
      surrogate=s.surrogate,
      exploration=float(s.exploration),
      lgbm=surrogates.LGBMParams(
          learning_rate=float(s.lgbm_learning_rate),
          num_iterations=int(s.lgbm_iterations),
      ),
      chunk_size=int(c.merge.chunk_size),
      seed=int(c.seed),
  )
  state_dir = ctx.workdir / "search" / "state"
  t0 = time.time()
  result = rounds_lib.run_search(
      lambda a: ev.evaluate(a, _progress("proxies")),
      make_pool,
      spec,
      direction,
      search_cfg,
      str(state_dir),
      ctx.candidates,
  )
  search_seconds = time.time() - t0
  alpha = np.asarray(result.alpha, np.float64)
  measured = {k: float(v[0]) for k, v in ev.evaluate(alpha[None]).items()}
  methods_table = {
      "surrogate": {"alpha": alpha.tolist(), "merged_scores": measured}
  }
  # Gradient search: directly on the merged model's differentiable bpb,
  # from the surrogate's alpha* and from random starts.
  grad = None
  if s.gradient.enabled:
    objective = ev.make_objective(
        [t for t in spec.targets if not direction(t)] or None
    )
    gcfg = gradient_lib.GradientConfig(
        steps=int(s.gradient.steps),
        learning_rate=float(s.gradient.learning_rate),
        starts=int(s.gradient.starts),
        seed=int(c.seed),
    )
    t1 = time.time()
    grad = gradient_lib.gradient_search(objective, bounds, gcfg, init=alpha)
    gscores = {
        k: float(v[0])
        for k, v in ev.evaluate(np.asarray(grad.alpha)[None]).items()
    }
    methods_table["gradient"] = {
        "alpha": np.asarray(grad.alpha).tolist(),
        "merged_scores": gscores,
        "objective": float(grad.value),
        "evaluations": int(grad.evaluations),
        "seconds": time.time() - t1,
    }
  chosen = alpha
  if s.method == "gradient" and grad is not None:
    chosen = np.asarray(grad.alpha, np.float64)
  # The final runs train on this mixture on every process: use process 0's.
  chosen = multihost.broadcast(np.asarray(chosen, np.float64))
  alpha_d = dict(zip(ctx.candidates, chosen.tolist()))
  weights = ctx.source_weights(alpha_d)
  from demix_jax.data import mixture as mixture_lib  # pylint: disable=g-import-not-at-top

  epochs = mixture_lib.epochs_per_source(
      weights, ctx.token_counts, int(c.final.tokens)
  )
  barriers = diagnostics.loss_barriers(ev, points=int(s.barrier_points))
  if barriers.get("warning"):
    logging.warning("%s", barriers["warning"])
  diag = {
      "delta": diagnostics.weight_deltas(store),
      "barrier": {k: v["barrier"] for k, v in barriers["pairs"].items()},
      "barrier_target": barriers["target"],
      "barrier_warning": barriers.get("warning"),
  }
  search_dir = ctx.workdir / "search"
  if grad is not None and multihost.is_writer():
    # Through bytes: np.save cannot write to gs:// itself.
    buf = io.BytesIO()
    np.save(buf, np.asarray(grad.paths))
    (search_dir / "gradient_paths.npy").write_bytes(buf.getvalue())
  snippet = (
      "--config.final.fixed_mixtures.found='"
      + json.dumps({k: round(v, 6) for k, v in weights.items()})
      + "'"
  )
  out = {
      "alpha": alpha_d,
      "source_weights": weights,
      "predicted": result.predicted,
      "predicted_std": result.predicted_std,
      "merged_scores": methods_table[
          "surrogate" if s.method != "gradient" else "gradient"
      ]["merged_scores"],
      "methods": methods_table,
      "epochs": epochs,
      "rounds": result.rounds,
      "final_cv": result.final_cv,
      "proxies_csv": result.table_path,
      "n_proxies": result.n_evaluated,
      "diagnostics": diag,
      "config_snippet": snippet,
      "objective": {"kind": spec.kind, "targets": list(spec.targets)},
      "search_seconds": search_seconds,
      "tokens": 0,
  }
  logging.info(
      "found mixture alpha=%s -> source weights %s",
      {k: round(v, 4) for k, v in alpha_d.items()},
      {k: round(v, 4) for k, v in weights.items()},
  )
  return out


def _progress(what: str):
  def report(done: int, total: int) -> None:
    logging.log_every_n_seconds(
        logging.INFO, "%s: %d/%d scored", 10, what, done, total
    )

  return report


# ------------------------------------------------------------------ report


def _read_proxies(path: str, names: tuple[str, ...]):
  """proxies.csv -> (alphas [M, K], {column: [M]}, rounds [M])."""
  import csv  # pylint: disable=g-import-not-at-top
  # The table may be on gs://; bytes keep its \r\n line ends as written.
  text = epath_path(path).read_bytes().decode()
  rows = list(csv.DictReader(io.StringIO(text, newline="")))
  alphas = np.array([[float(r[f"alpha/{n}"]) for n in names] for r in rows])
  cols = {}
  for key in rows[0] if rows else []:
    if key in ("id", "round") or key.startswith("alpha/"):
      continue
    cols[key] = np.array(
        [
            float(r[key]) if r[key] not in ("", "nan", "None") else np.nan
            for r in rows
        ]
    )
  return alphas, cols, np.array([int(r["round"]) for r in rows])


def _out_of_fold(
    kind: str, x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0
) -> np.ndarray:
  """Held-out-fold surrogate predictions (for predicted-vs-observed)."""
  from demix_jax.search import surrogates  # pylint: disable=g-import-not-at-top

  n = len(x)
  pred = np.full(n, np.nan)
  folds = min(folds, n)
  fold = np.random.default_rng(seed).permutation(n) % folds
  for f in range(folds):
    tr = (fold != f) & np.isfinite(y)
    if tr.sum() < surrogates.MIN_POINTS:
      continue
    model = surrogates.make_surrogate(kind, int(tr.sum()))
    pred[fold == f] = model.fit(x[tr], {"y": y[tr]}).predict(x[fold == f])["y"]
  return pred


def run_report(ctx: context_lib.RunContext) -> dict[str, Any]:
  """workdir/report/: summary.json, report.md and the plots."""
  from demix_jax.report import plots  # pylint: disable=g-import-not-at-top
  from demix_jax.report import summary as summary_lib  # pylint: disable=g-import-not-at-top
  from demix_jax.search import surrogates  # pylint: disable=g-import-not-at-top

  done = {"search": pipeline_lib.require(ctx, "search")}
  for stage in ("base", "components", "final", "validate"):
    d = pipeline_lib.stage_done(ctx, stage)
    if d is not None:
      done[stage] = d
  out_dir = ctx.workdir / "report"
  out_dir.mkdir(parents=True, exist_ok=True)
  search = done["search"]
  key_targets = list(search["objective"]["targets"])
  extra = [
      t
      for t in next(iter(search["methods"].values()))["merged_scores"]
      if t.startswith("heldout/") and t.endswith("/bpb")
  ]
  summary = summary_lib.build_summary(done, key_targets + extra)
  pngs = {}
  if jax.process_index() == 0:
    names = ctx.candidates
    alphas, cols, rounds = _read_proxies(search["proxies_csv"], names)
    chosen = np.array([search["alpha"][n] for n in names])
    paths = []
    gpath = ctx.workdir / "search" / "gradient_paths.npy"
    if gpath.exists():
      paths = list(np.load(io.BytesIO(gpath.read_bytes())))
    label = (
        "composite rank (lower is better)"
        if search["objective"]["kind"] == "composite"
        else search["objective"]["targets"][0]
    )
    pngs["landscape"] = plots.mixture_landscape(
        alphas,
        cols["objective"],
        names,
        str(out_dir / "landscape.png"),
        title=f"{len(alphas)} merged proxies",
        value_label=label,
        highlight=chosen,
        paths=paths,
    )
    t0 = key_targets[0]
    kind = ctx.config.search.surrogate
    kind = (
        "ridge"
        if kind == "auto" and len(alphas) < surrogates.AUTO_RIDGE_BELOW
        else ("lightgbm" if kind == "auto" else kind)
    )
    pred = _out_of_fold(kind, alphas, cols[t0], seed=int(ctx.config.seed))
    pngs["surrogate"] = plots.predicted_vs_observed(
        pred,
        cols[t0],
        str(out_dir / "surrogate.png"),
        label=t0,
        rho=surrogates.spearman(pred, cols[t0]),
    )
    best = {}
    obj = cols["objective"]
    for r in sorted(set(rounds.tolist())):
      best.setdefault("best proxy so far (objective)", []).append(
          float(np.nanmin(obj[rounds <= r]))
      )
    pngs["rounds"] = plots.best_per_round(
        best, str(out_dir / "rounds.png"), ylabel="composite rank"
    )
    diag = search.get("diagnostics") or {}
    if diag.get("delta"):
      barriers = {
          tuple(k.split("|")): v for k, v in diag.get("barrier", {}).items()
      }
      pngs["components"] = plots.component_diagnostics(
          diag["delta"], barriers, str(out_dir / "components.png")
      )
    if summary["final"]:
      table = {"demix": summary["final"], **summary["baselines"]}
      pngs["final"] = plots.final_vs_baselines(
          table,
          summary["key_targets"],
          str(out_dir / "final.png"),
          predicted=summary["merged"],
      )
    rel = {k: epath_name(v) for k, v in pngs.items()}
    context_lib.write_json(out_dir / "summary.json", summary)
    (out_dir / "report.md").write_text(
        summary_lib.render_markdown(summary, rel)
    )
  _print_result(summary)
  return {
      "summary": str(out_dir / "summary.json"),
      "report": str(out_dir / "report.md"),
      "plots": pngs,
      "tokens": 0,
  }


def epath_name(path: str) -> str:
  return path.rsplit("/", 1)[-1]


def _print_result(summary: dict[str, Any]) -> None:
  """The found mixture and the final-vs-baseline table, on stdout."""
  if jax.process_index() != 0:
    return
  print("\nFound mixture (alpha -> source weights):")
  for c, a in summary["alpha"].items():
    print(
        f"  {c:>12s}  alpha={a:.4f}  weight="
        f"{summary['source_weights'].get(c, 0.0):.4f}"
    )
  if summary["final"]:
    runs = {"demix": summary["final"], **summary["baselines"]}
    print("\nFinal runs (lower bpb is better):")
    print(
        f"  {'target':<28s}"
        + "".join(f"{r:>12s}" for r in runs)
        + f"{'proxy':>12s}"
    )
    for t in summary["key_targets"]:
      print(
          f"  {t:<28s}"
          + "".join(f"{runs[r].get(t, float('nan')):12.4f}" for r in runs)
          + f"{summary['merged'].get(t, float('nan')):12.4f}"
      )


# ---------------------------------------------------------------- validate


def _domain_scores(scores: dict[str, Any]) -> dict[str, Any]:
  return {
      k.split("/", 1)[1]: v
      for k, v in scores.items()
      if k.startswith("domain/")
  }


def _beta_components(ctx: context_lib.RunContext, beta: float) -> dict:
  """Component run dirs for a beta ablation (trained here if missing)."""
  from demix_jax.data import mixture as mixture_lib  # pylint: disable=g-import-not-at-top

  if abs(beta - ctx.beta) < 1e-12:
    comps = pipeline_lib.require(ctx, "components")["components"]
    return {c: comps[c]["run_dir"] for c in ctx.candidates}
  base = pipeline_lib.require(ctx, "base")
  dirs = {}
  for i, cand in enumerate(ctx.candidates):
    run_dir = ctx.workdir / "validate" / f"components_beta{beta:g}" / cand
    ctx.train(
        run_dir,
        mixture_lib.component_weights(cand, ctx.general, beta),
        int(ctx.config.components.tokens),
        what=f"component {cand} (beta={beta:g})",
        budgets=tuple(int(b) for b in ctx.config.components.budgets),
        init_from=base["run_dir"],
        seed_offset=1 + i,
    )
    dirs[cand] = str(run_dir)
  return dirs


def run_validate(ctx: context_lib.RunContext) -> dict[str, Any]:
  """Reference runs vs merged and trained proxies (the paper's Table 2)."""
  from demix_jax import models  # pylint: disable=g-import-not-at-top
  from demix_jax.evals import scoring  # pylint: disable=g-import-not-at-top
  from demix_jax.search import pool as pool_lib  # pylint: disable=g-import-not-at-top
  from demix_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  from demix_jax.validation import harness  # pylint: disable=g-import-not-at-top

  c, v = ctx.config, ctx.config.validate
  base = pipeline_lib.require(ctx, "base")
  ref_tokens = int(v.reference_tokens or c.components.tokens)
  fractions = tuple(float(f) for f in v.proxy_fractions)
  # Reference mixtures: the search's pool sampler, another seed.
  pool_cfg = pool_lib.PoolConfig(
      size=int(v.num_references),
      sampler=c.search.sampler,
      temperature=float(c.search.temperature),
      concentration_range=tuple(c.search.concentration_range),
      concentration_count=int(c.search.concentration_count),
      floor=float(c.search.floor),
  )
  prior = pool_lib.prior_from_tokens(
      [ctx.token_counts[n] for n in ctx.candidates], float(c.search.temperature)
  )
  alphas = pool_lib.sample_pool(
      pool_cfg,
      np.random.default_rng(int(c.seed) + 7919),
      alpha_bounds(ctx),
      prior,
      ctx.candidates,
  )
  dm = dict(c.eval.domain_metrics)
  ev0 = evaluator(ctx)
  domains = [t.split("/", 1)[1] for t in ev0.targets if t.startswith("domain/")]
  direction = {d: scoring.higher_is_better(f"domain/{d}", dm) for d in domains}
  budgets = harness.proxy_budgets(ref_tokens, fractions)

  def train_reference(i, alpha, out_dir):
    weights = ctx.source_weights(dict(zip(ctx.candidates, alpha.tolist())))
    ctx.train(
        epath_path(out_dir),
        weights,
        ref_tokens,
        what=f"reference {i}",
        budgets=tuple(budgets),
        init_from=base["run_dir"],
        seed_offset=1000 + i,
    )

  def score_reference(i, fraction):
    run = ctx.workdir / "validate" / "references" / f"ref_{i:04d}"
    tokens = None if fraction >= 1.0 else int(round(fraction * ref_tokens))
    params = checkpointing.load_params(run, tokens)
    return _domain_scores(ev0.evaluate_params(params))

  variants = []
  for b in c.components.budgets:
    for method in v.merge_methods:
      for beta in (ctx.beta,) + tuple(float(x) for x in v.betas):
        if method != "linear" and abs(beta - ctx.beta) > 1e-12:
          continue  # ablate one factor at a time
        if int(b) != int(c.components.use_budget) and (
            method != "linear" or abs(beta - ctx.beta) > 1e-12
        ):
          continue
        variants.append(
            harness.MergedVariant(
                label=f"{method}|beta{beta:g}|{int(b)}",
                component_tokens=int(b),
                merge_method=method,
                beta=beta,
            )
        )

  def score_merged(a, label):
    method, beta_s, tokens = label.split("|")
    beta = float(beta_s[4:])
    store = component_store(ctx, int(tokens), _beta_components(ctx, beta))
    ev = evaluator(ctx, store, method)
    return _domain_scores(ev.evaluate(a))

  suite = ev0.suite
  eval_tokens = float(suite.n_rows * int(c.data.seq_len))
  cost = harness.CostSettings(
      n_params=float(models.num_params(ctx.model_cfg)),
      n_components=len(ctx.candidates),
      n_proxies=int(
          sum(int(c.search.n_init) // 2**r for r in range(int(c.search.rounds)))
      ),
      eval_tokens=eval_tokens,
  )
  final = pipeline_lib.stage_done(ctx, "final")
  final_scores = None
  if final:
    final_scores = {
        n: _domain_scores(r["scores"]) for n, r in final["runs"].items()
    }
  table = harness.run_validation(
      str(ctx.workdir),
      alphas,
      direction,
      train_reference,
      score_reference,
      score_merged,
      reference_tokens=ref_tokens,
      variants=variants,
      cost=cost,
      proxy_fractions=fractions,
      main_merge_method="linear",
      main_beta=ctx.beta,
      final_scores=final_scores,
      write=jax.process_index() == 0,
  )
  spent = len(alphas) * ref_tokens
  return {
      "rows": table.get("rows", []),
      "table": str(ctx.workdir / "validate" / "table.json"),
      "tokens": spent,
  }


def epath_path(p):
  from etils import epath  # pylint: disable=g-import-not-at-top

  return epath.Path(p)
