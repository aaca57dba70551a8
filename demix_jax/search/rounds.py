"""Iterative surrogate search (DeMix / CLIMB style) with resumable state.

Rounds of n, n/2, n/4, ... proxies (default n = 64: 64 + 32 + 16 = 112).
Round 0 takes the first n pool rows (the pool is in random order, so the
budgets are nested like the official code's first-n of a pre-drawn set).
Each later round fits the surrogate on every scored proxy so far, predicts
the pool, ranks it by the objective and draws the round at random from the
top-K region of the not-yet-scored pool rows. Optionally the ranking uses an
upper confidence bound from an uncertainty model (exploration > 0).

Final: refit on all scored proxies, rank the pool, and average the top-k
pool mixtures (paper 128, code 1280) -> alpha*. The pool is a convex
polytope's points, so alpha* keeps every bound.

`evaluate_fn` is called per chunk; each chunk is appended to results.jsonl
as soon as it returns, and the round's proposals and RNG state are saved
before any of it is scored, so a search killed anywhere resumes without
scoring anything twice and ends at the same alpha* (see state.py).
"""

from collections.abc import Callable, Mapping
import dataclasses
import logging

from etils import epath
import numpy as np

from demix_jax.search import objective as objective_lib
from demix_jax.search import state as state_lib
from demix_jax.search import surrogates
from demix_jax.search import table as table_lib

_LOG = logging.getLogger(__name__)
_STATE_KEYS = ("settings", "round", "round_ids", "pending", "rng", "summaries")

EvaluateFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """Settings of the iterative search.

  Attributes:
    n_init: size n of round 0; round r has n // 2**r proxies.
    rounds: number of rounds (DeMix: 3).
    top_region: later rounds draw from the top-K of the pool ranked by the
      surrogate; a value < 1 is a fraction of the pool, >= 1 a count.
    final_topk: alpha* = mean of the top-k pool mixtures (paper 128, code
      1280).
    surrogate: lightgbm | ridge | gp | ensemble | auto (see surrogates.py).
    uncertainty: model for predictive std and exploration: gp | ensemble.
    exploration: UCB kappa; > 0 ranks by mean + kappa * std (good side).
    lgbm: LightGBM settings.
    ridge_alpha: ridge penalty (the code: 0.5).
    cv_folds: folds of the per-round cross-validation.
    chunk_size: mixtures per evaluate_fn call (0: a whole round).
    seed: seeds the draws of later rounds.
  """

  n_init: int = 64
  rounds: int = 3
  top_region: float = 0.05
  final_topk: int = 128
  surrogate: str = "auto"
  uncertainty: str = "gp"
  exploration: float = 0.0
  lgbm: surrogates.LGBMParams = surrogates.LGBMParams()
  ridge_alpha: float = 0.5
  cv_folds: int = 5
  chunk_size: int = 0
  seed: int = 0

  def fingerprint(self) -> dict:
    """Settings that change the outcome (chunk_size does not)."""
    d = dataclasses.asdict(self)
    d.pop("chunk_size")
    d["lgbm"]["extra"] = dict(d["lgbm"]["extra"])
    return d


@dataclasses.dataclass
class SearchResult:
  """What a search returns (also written to result.json / proxies.csv).

  Attributes:
    alpha: [K] the found mixture alpha*.
    names: candidate names (alpha's order).
    predicted: {target: surrogate prediction at alpha*}.
    predicted_std: {target: std from the uncertainty model at alpha*}.
    predicted_rank: alpha*'s predicted objective ranked within the pool
      (composite: mean percentile rank; lower is better).
    top_indices: pool rows averaged into alpha*.
    rounds: per-round summaries (size, surrogate, cv Spearman, best proxy).
    final_cv: out-of-fold Spearman per target of the final surrogate.
    table_path: CSV of every scored proxy.
    n_evaluated: number of scored proxies.
  """

  alpha: np.ndarray
  names: tuple[str, ...]
  predicted: dict[str, float]
  predicted_std: dict[str, float]
  predicted_rank: float
  top_indices: np.ndarray
  rounds: list[dict]
  final_cv: dict[str, float]
  table_path: str
  n_evaluated: int


def round_sizes(n_init: int, rounds: int) -> list[int]:
  """[n, n // 2, n // 4, ...]; every round must have at least one proxy."""
  sizes = [n_init // 2**r for r in range(rounds)]
  if rounds < 1 or min(sizes) < 1:
    raise ValueError(
        f"search: n_init={n_init} with rounds={rounds} gives "
        f"round sizes {sizes}; every round needs >= 1 proxy"
    )
  return sizes


def region_size(top_region: float, pool_size: int) -> int:
  """K of the top-K region from a fraction (< 1) or a count (>= 1)."""
  if top_region <= 0:
    raise ValueError(f"top_region must be positive, got {top_region}")
  k = top_region * pool_size if top_region < 1 else top_region
  return int(min(pool_size, max(1, round(k))))


def average_topk(
    pool: np.ndarray, values: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
  """Mean of the k pool rows with the lowest objective (NaN never chosen).

  Ties are broken by pool order (stable sort), so the result is
  deterministic.

  Returns:
    (alpha [K], chosen row indices [k]).
  """
  v = np.where(np.isfinite(values), values, np.inf)
  k = min(k, int(np.isfinite(values).sum()))
  if k < 1:
    raise ValueError("average_topk: no finite objective values")
  top = np.argsort(v, kind="stable")[:k]
  return pool[top].mean(axis=0), top


class _Search:
  """One search run bound to a directory (see run_search)."""

  def __init__(self, evaluate_fn, pool, spec, direction, cfg, workdir, names):
    self.evaluate_fn = evaluate_fn
    self.spec = spec
    self.direction = direction
    self.cfg = cfg
    self.workdir = epath.Path(workdir)
    self.sizes = round_sizes(cfg.n_init, cfg.rounds)
    if cfg.n_init < surrogates.MIN_POINTS:
      # Checked before anything is scored: the surrogate of round 1 (and of
      # the final selection) needs this many proxies.
      raise ValueError(
          f"search: n_init={cfg.n_init} proxies are too few; the surrogate "
          f"needs at least {surrogates.MIN_POINTS} (raise search.n_init)"
      )
    self.workdir.mkdir(parents=True, exist_ok=True)
    # Multi-host: every process reads the saved state before process 0 (the
    # only writer) changes it, so all resume from the same point.
    state_lib.barrier("search_init_start")
    self.pool = self._load_or_save_pool(pool)
    self.names = tuple(names or (f"c{i}" for i in range(self.pool.shape[1])))
    if len(self.names) != self.pool.shape[1]:
      raise ValueError(
          f"{len(self.names)} names for a pool of "
          f"{self.pool.shape[1]} candidates"
      )
    if sum(self.sizes) > len(self.pool):
      raise ValueError(
          f"search needs {sum(self.sizes)} distinct mixtures but "
          f"the pool has {len(self.pool)}; enlarge the pool"
      )
    self.state = self._load_or_init_state()
    self.rng = np.random.default_rng(cfg.seed)
    if self.state["rng"] is not None:
      self.rng.bit_generator.state = self.state["rng"]
    self.results = {r["id"]: r for r in state_lib.read_results(self.workdir)}
    state_lib.check_results(self.workdir, self.results, self.pool)
    state_lib.barrier("search_init_done")

  # ------------------------------------------------------------ state I/O
  def _load_or_save_pool(self, pool) -> np.ndarray:
    saved = state_lib.load_pool(self.workdir)
    if saved is not None:
      if not callable(pool) and not np.array_equal(saved, np.asarray(pool)):
        raise ValueError(
            f"{self.workdir} holds a search over a different pool; resume "
            "with the same pool settings and seed, or use a new workdir"
        )
      return saved
    pool = np.asarray(pool() if callable(pool) else pool, np.float64)
    if pool.ndim != 2 or np.abs(pool.sum(axis=1) - 1).max() > 1e-6:
      raise ValueError("pool must be [P, K] with rows summing to 1")
    state_lib.save_pool(self.workdir, pool)
    return pool

  def _load_or_init_state(self) -> dict:
    settings = {
        "search": self.cfg.fingerprint(),
        "objective": {
            "targets": list(self.spec.targets),
            "kind": self.spec.kind,
            "weights": dict(self.spec.weights or {}),
        },
    }
    st = state_lib.load_state(self.workdir, required=_STATE_KEYS)
    if st is None:
      st = {
          "version": 1,
          "settings": settings,
          "round": 0,
          "round_ids": [],
          "pending": None,
          "rng": None,
          "summaries": [],
      }
      state_lib.save_state(self.workdir, st)
    elif st["settings"] != settings:
      diff = [
          k
          for k in settings["search"]
          if settings["search"][k] != st["settings"]["search"].get(k)
      ]
      raise ValueError(
          f"{self.workdir} holds a search with other settings (search fields "
          f"{diff}, objective {st['settings']['objective']}); resume with the "
          "same settings or use a new workdir"
      )
    return st

  def _save(self):
    self.state["rng"] = self.rng.bit_generator.state
    state_lib.save_state(self.workdir, self.state)

  # ------------------------------------------------------------- the data
  def _scored_ids(self) -> list[int]:
    ids = [i for r in self.state["round_ids"] for i in r]
    return [i for i in ids if i in self.results]

  def _data(self, targets=None) -> tuple[np.ndarray, dict]:
    ids = self._scored_ids()
    x = self.pool[ids]
    names = targets or sorted(
        {t for i in ids for t in self.results[i]["scores"]}
    )
    y = {
        t: np.array([self.results[i]["scores"].get(t, np.nan) for i in ids])
        for t in names
    }
    return x, y

  def _fit(self, targets, kind=None):
    x, y = self._data(targets)
    kind = kind or self.cfg.surrogate
    model = surrogates.make_surrogate(
        kind, len(x), self.cfg.lgbm, self.cfg.ridge_alpha
    )
    return model.fit(x, y), x, y

  def _cv(self, x, y) -> dict[str, float]:
    return surrogates.cross_validate(
        self.cfg.surrogate,
        x,
        y,
        self.cfg.cv_folds,
        self.cfg.seed,
        params=self.cfg.lgbm,
        ridge_alpha=self.cfg.ridge_alpha,
    )

  def _rank_pool(
      self, targets, optimistic: bool = True
  ) -> tuple[np.ndarray, dict, surrogates.Surrogate]:
    """Objective of every pool row under the current surrogate.

    With `exploration` > 0 the rounds rank by the optimistic (UCB) scores;
    `optimistic=False` (the final alpha*) ranks by the predicted mean: the
    exploration bonus is for choosing what to measure, not what to train.
    """
    model, x, y = self._fit(targets)
    cv = self._cv(x, y)
    if self.cfg.exploration > 0 and optimistic:
      unc, _, _ = self._fit(targets, self.cfg.uncertainty)
      mean, std = unc.predict_with_std(self.pool)
      scores = objective_lib.optimistic_scores(
          mean, std, self.spec, self.direction, self.cfg.exploration
      )
    else:
      scores = model.predict(self.pool)
    values = objective_lib.evaluate(
        scores, self.spec, self.direction, what="pool mixtures"
    )
    return values, cv, model

  # ------------------------------------------------------------ the rounds
  def _propose(self, r: int) -> tuple[list[int], dict]:
    size = self.sizes[r]
    if r == 0:
      return list(range(size)), {}
    values, cv, _ = self._rank_pool(self.spec.targets)
    seen = np.zeros(len(self.pool), bool)
    seen[[i for ids in self.state["round_ids"] for i in ids]] = True
    values = np.where(seen, np.inf, values)
    k = region_size(self.cfg.top_region, len(self.pool))
    if k < size:
      _LOG.warning(
          "search: top region %d < round size %d; using the top %d",
          k,
          size,
          size,
      )
      k = size
    region = np.argsort(values, kind="stable")[:k]
    region = region[np.isfinite(values[region])]
    ids = self.rng.choice(region, size=size, replace=False)
    ids = state_lib.agree(np.asarray(ids, np.int64))
    return [int(i) for i in ids], cv

  def _evaluate(self, r: int, ids: list[int]) -> None:
    todo = [i for i in ids if i not in self.results]
    if len(todo) < len(ids):
      _LOG.info(
          "search round %d: %d of %d proxies already scored (resumed)",
          r,
          len(ids) - len(todo),
          len(ids),
      )
    step = self.cfg.chunk_size or max(1, len(todo))
    for lo in range(0, len(todo), step):
      chunk = todo[lo : lo + step]
      alphas = self.pool[chunk]
      scores = self.evaluate_fn(alphas)
      rows = []
      for j, i in enumerate(chunk):
        s = {}
        for t, v in scores.items():
          v = np.asarray(v).reshape(-1)
          if len(v) != len(chunk):
            raise ValueError(
                f"evaluate_fn returned {len(v)} values of {t} "
                f"for {len(chunk)} mixtures"
            )
          s[t] = float(v[j])
        rows.append({"id": i, "round": r, "alpha": alphas[j], "scores": s})
      state_lib.append_results(self.workdir, rows)
      for row in rows:
        bad = [t for t, v in row["scores"].items() if not np.isfinite(v)]
        if bad:
          _LOG.warning(
              "search: proxy %d (round %d) has NaN/inf scores %s; "
              "it is kept in the table and left out of fits",
              row["id"],
              r,
              bad,
          )
        self.results[row["id"]] = state_lib.read_results_row(row)
      _LOG.info(
          "search round %d: scored %d/%d",
          r,
          min(lo + step, len(todo)),
          len(todo),
      )

  def _summary(self, r: int, ids: list[int], cv: dict) -> dict:
    x, y = self._data(self.spec.targets)
    all_ids = self._scored_ids()
    values = objective_lib.evaluate(
        y, self.spec, self.direction, what="scored proxies"
    )
    in_round = np.isin(all_ids, ids)
    v = np.where(in_round & np.isfinite(values), values, np.inf)
    b = int(np.argmin(v))
    best = None
    if np.isfinite(v[b]):
      best = {
          "id": all_ids[b],
          "objective": float(values[b]),
          "alpha": [float(a) for a in x[b]],
          "scores": {t: float(y[t][b]) for t in y},
      }
    return {
        "round": r,
        "size": len(ids),
        "cv_spearman": cv,
        "best": best,
        "surrogate": self.cfg.surrogate if r else None,
    }

  def run(self) -> SearchResult:
    for r in range(self.state["round"], len(self.sizes)):
      pending = self.state["pending"]
      if pending is None or pending["round"] != r:
        ids, cv = self._propose(r)
        self.state["pending"] = {"round": r, "ids": ids, "cv": cv}
        self.state["round_ids"].append(ids)
        self._save()  # proposals + RNG before any scoring
      ids, cv = self.state["pending"]["ids"], self.state["pending"]["cv"]
      self._evaluate(r, ids)
      summary = self._summary(r, ids, cv)
      self.state["summaries"].append(summary)
      self.state["round"] = r + 1
      self.state["pending"] = None
      self._save()
      _LOG.info(
          "search round %d done: %d proxies, cv %s, best %s",
          r,
          len(ids),
          cv,
          summary["best"] and summary["best"]["objective"],
      )
    return self._final()

  def _final(self) -> SearchResult:
    values, cv, model = self._rank_pool(self.spec.targets, optimistic=False)
    alpha, top = average_topk(self.pool, values, self.cfg.final_topk)
    alpha, top = state_lib.agree((alpha, np.asarray(top, np.int64)))
    _, y_all = self._data()
    targets = [
        t for t in y_all if np.isfinite(y_all[t]).sum() >= surrogates.MIN_POINTS
    ]
    full, _, _ = self._fit(targets)
    unc, _, _ = self._fit(targets, self.cfg.uncertainty)
    pred = {t: float(v[0]) for t, v in full.predict(alpha[None]).items()}
    _, std = unc.predict_with_std(alpha[None])
    pool_pred = model.predict(np.concatenate([self.pool, alpha[None]]))
    rank = objective_lib.evaluate(pool_pred, self.spec, self.direction)[-1]
    table = self._write_table()
    result = SearchResult(
        alpha=alpha,
        names=self.names,
        predicted=pred,
        predicted_std={t: float(v[0]) for t, v in std.items()},
        predicted_rank=float(rank),
        top_indices=top,
        rounds=list(self.state["summaries"]),
        final_cv=cv,
        table_path=table,
        n_evaluated=len(self._scored_ids()),
    )
    out = dataclasses.asdict(result)
    out["alpha"] = dict(zip(self.names, alpha.tolist()))
    out["top_indices"] = top.tolist()
    state_lib.write_json(self.workdir / "result.json", out)
    return result

  def _write_table(self) -> str:
    ids = self._scored_ids()
    x, y = self._data()
    values = objective_lib.evaluate(
        {t: y[t] for t in self.spec.targets},
        self.spec,
        self.direction,
        what="scored proxies",
    )
    path = self.workdir / table_lib.PROXIES
    if state_lib.is_writer():
      rows = [self.results[i]["round"] for i in ids]
      data = table_lib.format_proxies(ids, rows, self.names, x, y, values)
      state_lib.write_bytes(path, data)
    return str(path)


def run_search(
    evaluate_fn: EvaluateFn,
    pool: np.ndarray | Callable[[], np.ndarray],
    spec: objective_lib.ObjectiveSpec,
    direction: objective_lib.Direction,
    cfg: SearchConfig,
    workdir: str | epath.PathLike,
    names: tuple[str, ...] | None = None,
) -> SearchResult:
  """Runs (or resumes) the iterative search in `workdir`.

  Args:
    evaluate_fn: alphas [M, K] -> {target: [M]} scores of the merged
      proxies (called per chunk of `cfg.chunk_size`).
    pool: the candidate pool [P, K] (pool.sample_pool), or a callable that
      builds it (not called when the workdir already holds one).
    spec: the objective (composite or a single target).
    direction: target name -> True when higher is better.
    cfg: search settings.
    workdir: the search directory (state, results, result.json, CSV); a
      local path or any epath one (gs://).
    names: candidate names in alpha's order.

  Returns:
    The SearchResult (also in workdir/result.json and proxies.csv).
  """
  return _Search(evaluate_fn, pool, spec, direction, cfg, workdir, names).run()
