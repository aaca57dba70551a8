"""Surrogates: mixture alpha [K] -> predicted score, one regressor per target.

- `LightGBMSurrogate`: the paper's predictor (gbdt, regression, 300
  iterations, seed 42; learning rate 0.02 in the paper, 0.01 in the code).
  LightGBM's default min_data_in_leaf = 20 forbids every split below 40
  points, so the leaf and bin minimums shrink with the data (unchanged at
  RegMix's 512 points).
- `RidgeSurrogate`: closed-form ridge in NumPy (the code's Ridge(alpha=0.5)
  with an intercept, like sklearn's), for small data.
- `GPSurrogate`: a NumPy Gaussian process (RBF kernel, noise and length scale
  by marginal likelihood on a grid) with a predictive std.
- `EnsembleSurrogate`: a bootstrap ensemble of LightGBM models; mean and std
  over members.

`make_surrogate("auto", n)` picks Ridge below `AUTO_RIDGE_BELOW` points.
`out_of_fold` is the one cross-validation loop; `cross_validate` reports fit
quality as the Spearman of its held-out predictions.
Rows with a NaN target are dropped for that target with a warning.
"""

from collections.abc import Callable, Mapping
import dataclasses
import logging

import lightgbm as lgb
import numpy as np

from demix_jax import stats

_LOG = logging.getLogger(__name__)

# Below this many evaluated proxies 'auto' uses Ridge: the official code
# switches to Ridge for its smallest budget (16 points), and a 300-tree GBDT
# on < 32 points splits on a handful of samples per leaf and ranks worse than
# a linear model on smooth mixture responses.
AUTO_RIDGE_BELOW = 32
# A regressor on fewer points than this is not a surrogate.
MIN_POINTS = 4


@dataclasses.dataclass(frozen=True)
class LGBMParams:
  """LightGBM settings (defaults: the paper's; the code used lr 0.01)."""

  learning_rate: float = 0.02
  num_iterations: int = 300
  seed: int = 42
  # One thread: on a few hundred rows OpenMP's spin-waits cost more than
  # they save, most of all on a busy host.
  num_threads: int = 1
  min_data_in_leaf: int | None = None  # None: min(20, max(2, n // 10))
  extra: Mapping[str, float | int | str] = dataclasses.field(
      default_factory=dict
  )

  def params(self, n: int) -> dict:
    leaf = self.min_data_in_leaf or min(20, max(2, n // 10))
    p = {
        "boosting_type": "gbdt",
        "objective": "regression",
        "learning_rate": self.learning_rate,
        "seed": self.seed,
        "num_threads": self.num_threads,
        "verbosity": -1,
        "deterministic": True,
        "force_row_wise": True,
        "min_data_in_leaf": leaf,
        "min_data_in_bin": min(3, leaf),
    }
    p.update(self.extra)
    return p


def _finite_rows(x: np.ndarray, y: np.ndarray, target: str) -> tuple:
  ok = np.isfinite(y)
  if not ok.all():
    _LOG.warning(
        "surrogate: target %s: %d of %d rows have NaN/inf scores "
        "(diverged proxies) and are left out of the fit",
        target,
        int((~ok).sum()),
        len(y),
    )
  if ok.sum() < MIN_POINTS:
    raise ValueError(
        f"surrogate: target {target} has {int(ok.sum())} finite scores; "
        f"need at least {MIN_POINTS} evaluated proxies to fit a surrogate "
        "(raise search.n_init)"
    )
  return x[ok], y[ok]


class Surrogate:
  """Base: fit per target, predict a dict of [M] arrays."""

  has_std = False

  def fit(self, x: np.ndarray, y: Mapping[str, np.ndarray]) -> "Surrogate":
    x = np.asarray(x, np.float64)
    self.targets = tuple(y)
    self.models = {}
    for t in self.targets:
      xt, yt = _finite_rows(x, np.asarray(y[t], np.float64), t)
      self.models[t] = self._fit_one(xt, yt)
    return self

  def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
    x = np.asarray(x, np.float64)
    return {t: self._predict_one(self.models[t], x)[0] for t in self.targets}

  def predict_with_std(
      self, x: np.ndarray
  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Mean and std per target (std is 0 for models without uncertainty)."""
    x = np.asarray(x, np.float64)
    mean, std = {}, {}
    for t in self.targets:
      mean[t], std[t] = self._predict_one(self.models[t], x)
    return mean, std

  def _fit_one(self, x, y):
    raise NotImplementedError

  def _predict_one(self, model, x) -> tuple[np.ndarray, np.ndarray]:
    raise NotImplementedError


class LightGBMSurrogate(Surrogate):
  """One LightGBM regressor per target."""

  def __init__(self, params: LGBMParams = LGBMParams()):
    self.params = params

  def _fit_one(self, x, y):
    p = self.params.params(len(y))
    data = lgb.Dataset(
        x, y, params={"min_data_in_bin": p["min_data_in_bin"], "verbosity": -1}
    )
    return lgb.train(p, data, num_boost_round=self.params.num_iterations)

  def _predict_one(self, model, x):
    m = model.predict(x, num_threads=self.params.num_threads)
    return m, np.zeros_like(m)


class RidgeSurrogate(Surrogate):
  """Ridge regression with an unpenalised intercept (closed form)."""

  def __init__(self, alpha: float = 0.5):
    self.alpha = alpha

  def _fit_one(self, x, y):
    xm, ym = x.mean(axis=0), y.mean()
    xc = x - xm
    a = xc.T @ xc + self.alpha * np.eye(x.shape[1])
    w = np.linalg.solve(a, xc.T @ (y - ym))
    return w, ym - xm @ w

  def _predict_one(self, model, x):
    w, b = model
    m = x @ w + b
    return m, np.zeros_like(m)


class GPSurrogate(Surrogate):
  """GP regression, RBF kernel on alpha, hyperparameters by max likelihood.

  Targets are standardised; the length scale and noise are chosen on a small
  grid by the log marginal likelihood (cheap for the few hundred proxies a
  search evaluates).
  """

  has_std = True
  length_scales = (0.05, 0.1, 0.2, 0.35, 0.6, 1.0, 2.0)
  noises = (1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5)

  def _fit_one(self, x, y):
    mu, sd = y.mean(), y.std() or 1.0
    z = (y - mu) / sd
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    best = None
    for ell in self.length_scales:
      kern = np.exp(-0.5 * d2 / ell**2)
      for nz in self.noises:
        try:
          chol = np.linalg.cholesky(kern + nz * np.eye(len(z)))
        except np.linalg.LinAlgError:
          continue
        a = np.linalg.solve(chol.T, np.linalg.solve(chol, z))
        ll = -0.5 * z @ a - np.log(np.diag(chol)).sum()
        if best is None or ll > best[0]:
          best = (ll, ell, nz, chol, a)
    _, ell, nz, chol, a = best
    return dict(x=x, ell=ell, noise=nz, chol=chol, a=a, mu=mu, sd=sd)

  def _predict_one(self, m, x):
    means, stds = [], []
    for lo in range(0, len(x), 8192):  # bounded memory on a 200k pool
      xb = x[lo : lo + 8192]
      d2 = ((xb[:, None, :] - m["x"][None, :, :]) ** 2).sum(-1)
      ks = np.exp(-0.5 * d2 / m["ell"] ** 2)
      means.append(ks @ m["a"])
      v = np.linalg.solve(m["chol"], ks.T)
      stds.append(np.sqrt(np.clip(1.0 - (v * v).sum(0), 0.0, None)))
    return (
        np.concatenate(means) * m["sd"] + m["mu"],
        np.concatenate(stds) * m["sd"],
    )


class EnsembleSurrogate(Surrogate):
  """Bootstrap ensemble of LightGBM regressors: mean and std over members."""

  has_std = True

  def __init__(
      self, params: LGBMParams = LGBMParams(), members: int = 8, seed: int = 0
  ):
    self.params = params
    self.members = members
    self.seed = seed

  def _fit_one(self, x, y):
    rng = np.random.default_rng(self.seed)
    out = []
    for i in range(self.members):
      idx = rng.integers(0, len(y), len(y))
      p = dataclasses.replace(self.params, seed=self.params.seed + i)
      out.append(LightGBMSurrogate(p)._fit_one(x[idx], y[idx]))
    return out

  def _predict_one(self, model, x):
    preds = np.stack(
        [m.predict(x, num_threads=self.params.num_threads) for m in model]
    )
    return preds.mean(0), preds.std(0)


# The surrogate names `make_surrogate` builds ("auto" picks by data size).
KINDS = ("lightgbm", "ridge", "gp", "ensemble", "auto")


def resolve_kind(kind: str, n_points: int) -> str:
  """The surrogate `kind` stands for with `n_points` training points.

  "auto" is Ridge below AUTO_RIDGE_BELOW points (a tree ensemble on a few
  dozen points mostly memorises), LightGBM from there on.
  """
  if kind == "auto":
    return "ridge" if n_points < AUTO_RIDGE_BELOW else "lightgbm"
  return kind


def make_surrogate(
    kind: str,
    n_points: int,
    params: LGBMParams = LGBMParams(),
    ridge_alpha: float = 0.5,
) -> Surrogate:
  """Builds a surrogate by name: lightgbm | ridge | gp | ensemble | auto."""
  kind = resolve_kind(kind, n_points)
  if kind == "lightgbm":
    return LightGBMSurrogate(params)
  if kind == "ridge":
    return RidgeSurrogate(ridge_alpha)
  if kind == "gp":
    return GPSurrogate()
  if kind == "ensemble":
    return EnsembleSurrogate(params)
  raise ValueError(f"unknown surrogate {kind!r}; use one of {KINDS}")


# The one Spearman of the package: NaN where undefined (see demix_jax.stats).
spearman = stats.spearman


SurrogateFactory = Callable[[int], Surrogate]


def fold_ids(n: int, folds: int, seed: int = 0) -> np.ndarray:
  """Fold of each of n points: `default_rng(seed).permutation(n) % folds`."""
  return np.random.default_rng(seed).permutation(n) % folds


def _factory(
    kind: str | SurrogateFactory, params: LGBMParams, ridge_alpha: float
) -> SurrogateFactory:
  if callable(kind):
    return kind
  return lambda n: make_surrogate(kind, n, params, ridge_alpha)


def out_of_fold(
    kind: str | SurrogateFactory,
    x: np.ndarray,
    y: np.ndarray | Mapping[str, np.ndarray],
    folds: int = 5,
    seed: int = 0,
    *,
    params: LGBMParams = LGBMParams(),
    ridge_alpha: float = 0.5,
) -> np.ndarray | dict[str, np.ndarray]:
  """Held-out-fold predictions: each point predicted by a model without it.

  The one cross-validation loop of the package (`cross_validate`, the
  report's predicted-vs-observed plot). Folds are `fold_ids(n, folds,
  seed)`; a fold whose training part has fewer than MIN_POINTS finite
  targets is left NaN. The surrogate is built per fold, for the fold's
  training size (so 'auto' sees the size it is fitted on).

  Args:
    kind: a surrogate name (make_surrogate, with `params` and
      `ridge_alpha`) or a factory n_train -> fresh Surrogate.
    x: [N, K] mixtures.
    y: [N] observed values, or {target: [N]} (NaN = missing).
    folds: number of folds (capped at N; fewer than 2: all NaN).
    seed: fold assignment seed.
    params: LightGBM settings when `kind` is a name.
    ridge_alpha: ridge penalty when `kind` is a name.

  Returns:
    [N] predictions for an array `y`, {target: [N]} for a mapping.
  """
  factory = _factory(kind, params, ridge_alpha)
  x = np.asarray(x, np.float64)
  ys = dict(y) if isinstance(y, Mapping) else {"y": y}
  n = len(x)
  folds = min(folds, n)
  out = {t: np.full(n, np.nan) for t in ys}
  if folds < 2:
    return out if isinstance(y, Mapping) else out["y"]
  fold = fold_ids(n, folds, seed)
  for t, yt in ys.items():
    yt = np.asarray(yt, np.float64)
    for f in range(folds):
      tr = (fold != f) & np.isfinite(yt)
      if tr.sum() < MIN_POINTS:
        continue
      model = factory(int(tr.sum())).fit(x[tr], {t: yt[tr]})
      out[t][fold == f] = model.predict(x[fold == f])[t]
  return out if isinstance(y, Mapping) else out["y"]


def cross_validate(
    kind: str | SurrogateFactory,
    x: np.ndarray,
    y: Mapping[str, np.ndarray],
    folds: int = 5,
    seed: int = 0,
    *,
    params: LGBMParams = LGBMParams(),
    ridge_alpha: float = 0.5,
) -> dict[str, float]:
  """Out-of-fold Spearman per target (see `out_of_fold`).

  The held-out predictions of all folds are pooled and ranked against the
  truth in one Spearman per target (per-fold Spearman on 3-20 points is
  too noisy to read).

  Args:
    kind: a surrogate name or a factory n_train -> fresh Surrogate.
    x: [N, K] mixtures; y: {target: [N]}.
    folds: number of folds (capped at N).
    seed: fold assignment seed.
    params: LightGBM settings when `kind` is a name.
    ridge_alpha: ridge penalty when `kind` is a name.

  Returns:
    {target: rho}; NaN when there are too few points to cross-validate.
  """
  pred = out_of_fold(
      kind, x, y, folds, seed, params=params, ridge_alpha=ridge_alpha
  )
  return {t: spearman(pred[t], y[t]) for t in y}
