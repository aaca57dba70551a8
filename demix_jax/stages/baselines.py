"""Stage `baselines`: RegMix and CLIMB, searches over trained proxies.

Each method of `search.baselines` runs the DeMix search loop
(`search.rounds.run_search`) with the search's own pool (same sampler and
seed), surrogate, objective and top-k averaging; only the proxies differ.
A proxy here is a model trained from the base for the method's
`tokens_per_proxy` on one pool mixture and scored with the search's
evaluator, instead of a merge of the components. RegMix scores one round
of proxies; CLIMB rounds of n, n/2, ... drawn from the surrogate's top
region (the candidate datasets are given, so CLIMB's clustering step has
nothing to do). The final stage trains each method's mixture under the
method's name.

Proxy runs are kept under baselines/proxies/t<tokens>/p<pool row>/ with a
done.json once scored, so a killed stage never retrains a finished proxy.
Two methods with the same tokens per proxy share the runs of the pool
rows they both draw (the same mixture, base, data order and seed train the
same model); each method's cost still counts all of its proxies.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from demix_jax import progress as progress_lib
from demix_jax import spec as spec_lib
from demix_jax import storage
from demix_jax.evals import scoring
from demix_jax.search import rounds as rounds_lib
from demix_jax.search import state as state_lib
from demix_jax.search import surrogates
from demix_jax.stages import common
from demix_jax.stages import results
from demix_jax.stages import search as search_stage
from demix_jax.stages import stage as stage_lib
from demix_jax.training import checkpointing

NAME = "baselines"
# A proxy of pool row i trains with seed offset PROXY_SEED + i (the seed
# ranges of stages/common.py end well below it).
PROXY_SEED = 1_000_000


def proxy_dir(ws, tokens: int, index: int):
  """The run directory of the proxy of pool row `index` at `tokens`."""
  return ws.workdir / NAME / "proxies" / f"t{int(tokens)}" / f"p{index:06d}"


def _pool_index(pool: np.ndarray, alpha: np.ndarray) -> int:
  hits = np.flatnonzero(np.all(pool == alpha[None], axis=1))
  if not len(hits):
    raise ValueError("baselines: a proposed mixture is not a pool row")
  return int(hits[0])


class _Proxies:
  """Trains (or reads back) and scores the trained proxies of pool rows."""

  def __init__(self, spec, inputs, ev, pool, bar):
    self.spec = spec
    self.inputs = inputs
    self.ws = inputs.ws
    self.ev = ev
    self.pool = pool
    self.bar = bar
    self.done = 0
    self.trained: dict[tuple[int, int], int] = {}  # (budget, row) -> tokens

  def score(self, index: int, tokens: int) -> dict[str, float]:
    ws = self.ws
    run_dir = proxy_dir(ws, tokens, index)
    done_path = run_dir / "done.json"
    alpha = dict(zip(ws.candidates, self.pool[index].tolist()))
    weights = ws.bounds.source_weights(alpha)
    if done_path.exists():
      run = common.read_result(results.FinalRun, done_path, ws)
      if set(run.weights) != set(weights) or any(
          abs(run.weights[k] - v) > 1e-9 for k, v in weights.items()
      ):
        raise storage.CorruptFileError(
            done_path,
            "holds a proxy trained on other source weights than pool row"
            f" {index}",
            f"delete {run_dir} to retrain it",
        )
    else:
      base = self.inputs.results["base"]
      r = ws.recipe.train(
          run_dir,
          weights,
          tokens,
          what=f"trained proxy {index} ({tokens:,} tokens)",
          init_from=base.run_dir,
          seed_offset=PROXY_SEED + index,
          config_hash=self.spec.fields_hash(stage_lib.TRAINING),
      )
      scores = self.ev.evaluate_params(r.params)
      run = results.FinalRun(
          run_dir=str(run_dir),
          weights=weights,
          tokens=r.tokens,
          train_seconds=r.seconds,
          scores={k: float(v) for k, v in scores.items()},
      )
      common.write_result(done_path, run, ws)
    self.trained[(int(tokens), index)] = int(run.tokens)
    self.done += 1
    self.bar.update(self.done)
    return run.scores

  def tokens_of(self, index: int, tokens: int) -> int:
    """Training tokens of a scored proxy (read back from its done.json)."""
    key = (int(tokens), index)
    if key not in self.trained:
      done_path = proxy_dir(self.ws, tokens, index) / "done.json"
      run = common.read_result(results.FinalRun, done_path, self.ws)
      self.trained[key] = int(run.tokens)
    return self.trained[key]

  def evaluate_fn(self, tokens: int):
    def evaluate(alphas):
      rows = [self.score(_pool_index(self.pool, a), tokens) for a in alphas]
      names = sorted({t for r in rows for t in r})
      return {
          t: np.array([r.get(t, np.nan) for r in rows], np.float64)
          for t in names
      }

    return evaluate


def _base_scores(inputs, ev) -> dict[str, float]:
  """The base model on the search's evaluator (the normalised objective's
  reference): the search's own record when it finished, else scored."""
  found = inputs.get("search")
  if found is not None and found.base_scores:
    return dict(found.base_scores)
  params = checkpointing.load_params(inputs.results["base"].run_dir)
  return {k: float(v) for k, v in ev.evaluate_params(params).items()}


def run(
    spec: spec_lib.RunSpec, inputs: common.Inputs
) -> results.BaselinesResult:
  ws = inputs.ws
  s = spec.search
  base = inputs.results["base"]
  comps = inputs.results["components"]
  assert isinstance(base, results.BaseResult)
  assert isinstance(comps, results.ComponentsResult)
  ev = ws.engines.evaluator(
      base.run_dir, comps.run_dirs(), spec.budgets.use_budget
  )
  dm = dict(spec.eval.domain_metrics)
  direction = lambda t: scoring.higher_is_better(t, dm)
  base_scores = _base_scores(inputs, ev)
  obj = s.objective
  if obj.kind == "normalized":
    obj = obj.with_reference(base_scores)
  # The DeMix search's pool: the same sampler, settings and seed.
  pool = search_stage.sample_pool(spec, ws, spec.seed)
  total = sum(
      sum(rounds_lib.round_sizes(m.proxies, m.rounds))
      for m in s.baselines.values()
  )
  bar = progress_lib.Progress(NAME, total, "trained proxies")
  proxies = _Proxies(spec, inputs, ev, pool, bar)
  methods = {}
  for name, m in s.baselines.items():
    state_dir = ws.workdir / NAME / name / "state"
    cfg = dataclasses.replace(
        s.rounds, n_init=m.proxies, rounds=m.rounds, chunk_size=1
    )
    found = rounds_lib.run_search(
        proxies.evaluate_fn(m.tokens_per_proxy),
        pool,
        obj,
        direction,
        cfg,
        str(state_dir),
        ws.candidates,
    )
    # Every proxy this method scored, this time or before a kill (a
    # resumed search reads those back from its state, not from here).
    ids = sorted(int(r["id"]) for r in state_lib.read_results(state_dir))
    for i in ids:
      proxies.tokens_of(i, m.tokens_per_proxy)
    alpha = dict(zip(ws.candidates, np.asarray(found.alpha).tolist()))
    methods[name] = results.ProxySearchRun(
        kind=m.kind,
        alpha=alpha,
        source_weights=ws.bounds.source_weights(alpha),
        n_proxies=found.n_evaluated,
        tokens_per_proxy=m.tokens_per_proxy,
        proxy_tokens=sum(proxies.trained[(m.tokens_per_proxy, i)] for i in ids),
        predicted=dict(found.predicted),
        rounds=list(found.rounds),
        final_cv=dict(found.final_cv),
        proxies_csv=found.table_path,
        surrogate=surrogates.resolve_kind(s.rounds.surrogate, len(ids)),
    )
  bar.finish(f"{len(methods)} methods, {len(proxies.trained)} trained proxies")
  return results.BaselinesResult(
      methods=methods,
      base_scores=base_scores,
      tokens=sum(proxies.trained.values()),
  )


STAGE = stage_lib.Stage(
    name=NAME,
    requires=("base", "components"),
    optional=("search",),
    result=results.BaselinesResult,
    run=run,
    # Same pool, caps (final.tokens) and evaluator as the search.
    hashed=stage_lib.SCORING + ("search", "final.tokens"),
)
