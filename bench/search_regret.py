r"""Regret of surrogate search vs gradient search vs random search.

A synthetic mixture problem with a known optimum stands in for the merged
proxies: K candidates (K = 3, 5, 7), three "domains" whose loss is
-log(0.05 + W_d . alpha) (diminishing returns from the sources that help the
domain) plus a scarcity penalty 0.1 * sum(alpha_i^2 / p_i) for small
sources, averaged over domains. This is smooth and convex, so its optimum f*
on the bounded simplex is found to high precision by long mirror descent.
Bounds: DeMix-style caps min(4 p_i, 1) from a random token prior.

Every method gets the same number of objective evaluations (112 = 64 + 32 +
16, DeMix's default budget) and sees a noisy proxy:
  random     best observed of 112 pool mixtures.
  surrogate  demix_jax.search.rounds (LightGBM 'auto', top 5% region, mean
             of the top-128 pool mixtures), pool of 50k DeMix draws.
  surrogate_gp  the same with the Gaussian-process surrogate.
  gradient   demix_jax.search.gradient, 4 starts x 28 evaluations
             (value+gradient; on a real model a gradient costs ~2-3 forward
             passes, so this favours it in wall time).
  surrogate+refine  the surrogate's alpha* refined by 28 more gradient
             evaluations (reported apart: 140 evaluations).
Noise: iid N(0, sigma) per evaluation for the surrogate and random searches;
a fixed smooth field of the same size for the gradient search (a
differentiable proxy has no iid noise; its bias is a smooth function of
alpha). Regret = f(alpha_found) - f*, on the noiseless f.

Command (CPU, ~3-4 min on 2 busy cores):
  python bench/search_regret.py [--seeds 5] [--noise 0.01]
The last line is one JSON object: median regret per method and per K.
"""

import argparse
import json
import logging
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from demix_jax.search import gradient  # noqa: E402
from demix_jax.search import objective  # noqa: E402
from demix_jax.search import pool  # noqa: E402
from demix_jax.search import rounds  # noqa: E402

BUDGET = 112
DOMAINS = 3


class Problem:
  """A smooth convex mixture problem with a known optimum."""

  def __init__(self, k: int, seed: int, noise: float):
    rng = np.random.default_rng(seed)
    self.k = k
    self.noise = noise
    tokens = rng.lognormal(0.0, 1.0, k)
    tokens[0] = tokens.sum()  # a big general pool, like DeMix's
    self.prior = pool.prior_from_tokens(tokens, 0.7)
    self.bounds = pool.Bounds(np.zeros(k), pool.epoch_caps(tokens))
    self.p = tokens / tokens.sum()
    w = rng.uniform(0.05, 0.3, (DOMAINS, k))
    for d in range(DOMAINS):  # each domain has a source that serves it
      w[d, 1 + d % (k - 1)] += 1.0
    w[:, 0] += 0.3  # general data helps everything a little
    self.w = w
    self.phase = rng.uniform(0, 2 * np.pi, k)
    self.rng = np.random.default_rng(seed + 1000)
    self.f_star = self._solve()

  def f_np(self, a: np.ndarray) -> np.ndarray:
    a = np.atleast_2d(a)
    dom = -np.log(0.05 + a @ self.w.T).mean(axis=1)
    return dom + 0.1 * (a**2 / self.p).sum(axis=1)

  def f_jax(self, a):
    dom = -jnp.mean(jnp.log(0.05 + jnp.asarray(self.w, jnp.float32) @ a))
    return dom + 0.1 * jnp.sum(a**2 / jnp.asarray(self.p, jnp.float32))

  def proxy_jax(self, a):
    # Smooth bias of std ~noise: what a differentiable proxy looks like.
    field = jnp.sum(jnp.sin(9.0 * a + jnp.asarray(self.phase, jnp.float32)))
    return self.f_jax(a) + self.noise * field / np.sqrt(self.k / 2)

  def evaluate(self, alphas: np.ndarray) -> dict[str, np.ndarray]:
    f = self.f_np(alphas)
    return {"loss": f + self.noise * self.rng.standard_normal(len(f))}

  def _solve(self) -> float:
    cfg = gradient.GradientConfig(steps=1500, starts=6, seed=1)
    res = gradient.gradient_search(self.f_jax, self.bounds, cfg)
    best = float(self.f_np(res.alpha)[0])
    # Sanity: no point of a large random pool beats it.
    check = pool.sample_pool(
        pool.PoolConfig(size=50_000, sampler="uniform", resolution=None),
        np.random.default_rng(0),
        self.bounds,
    )
    assert self.f_np(check).min() >= best - 1e-6, "optimum not found"
    return best


def run_methods(prob: Problem, seed: int, workroot: str) -> dict[str, float]:
  out = {}
  cand = pool.sample_pool(
      pool.PoolConfig(size=50_000),
      np.random.default_rng(seed),
      prob.bounds,
      prob.prior,
  )
  # Random search: the best observed of BUDGET pool mixtures.
  idx = np.random.default_rng(seed + 7).choice(len(cand), BUDGET, False)
  obs = prob.evaluate(cand[idx])["loss"]
  out["random"] = prob.f_np(cand[idx[np.argmin(obs)]])[0] - prob.f_star
  # Surrogate search (DeMix rounds).
  spec = objective.ObjectiveSpec(("loss",), kind="target")
  cfg = rounds.SearchConfig(
      n_init=64,
      rounds=3,
      top_region=0.05,
      final_topk=128,
      surrogate="auto",
      seed=seed,
  )
  res = rounds.run_search(
      prob.evaluate,
      cand,
      spec,
      lambda name: False,
      cfg,
      tempfile.mkdtemp(dir=workroot),
  )
  assert res.n_evaluated == BUDGET
  out["surrogate"] = prob.f_np(res.alpha)[0] - prob.f_star
  cfg_gp = rounds.SearchConfig(
      n_init=64,
      rounds=3,
      top_region=0.05,
      final_topk=128,
      surrogate="gp",
      seed=seed,
  )
  res_gp = rounds.run_search(
      prob.evaluate,
      cand,
      spec,
      lambda name: False,
      cfg_gp,
      tempfile.mkdtemp(dir=workroot),
  )
  out["surrogate_gp"] = prob.f_np(res_gp.alpha)[0] - prob.f_star
  # Gradient search, same number of evaluations.
  gcfg = gradient.GradientConfig(steps=27, starts=4, seed=seed)
  g = gradient.gradient_search(prob.proxy_jax, prob.bounds, gcfg)
  assert g.evaluations == BUDGET
  out["gradient"] = prob.f_np(g.alpha)[0] - prob.f_star
  # Refinement of the surrogate's alpha* (28 extra evaluations).
  r = gradient.gradient_search(
      prob.proxy_jax,
      prob.bounds,
      gradient.GradientConfig(steps=27, starts=1, seed=seed),
      init=res.alpha,
  )
  out["surrogate+refine"] = prob.f_np(r.alpha)[0] - prob.f_star
  return {m: float(v) for m, v in out.items()}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--seeds", type=int, default=5)
  ap.add_argument("--noise", type=float, default=0.01)
  ap.add_argument("--ks", default="3,5,7")
  args = ap.parse_args()
  logging.basicConfig(level=logging.WARNING)
  jax.config.update("jax_platforms", "cpu")
  ks = [int(k) for k in args.ks.split(",")]
  t0 = time.time()
  table = {}
  with tempfile.TemporaryDirectory() as root:
    for k in ks:
      rows = []
      for s in range(args.seeds):
        prob = Problem(k, seed=100 * k + s, noise=args.noise)
        rows.append(run_methods(prob, s, root))
        print(
            f"K={k} seed={s} f*={prob.f_star:.4f} "
            + " ".join(f"{m}={v:.2e}" for m, v in rows[-1].items()),
            flush=True,
        )
      table[k] = {m: float(np.median([r[m] for r in rows])) for m in rows[0]}
  methods = list(next(iter(table.values())))
  print(f"{'K':>3} " + " ".join(f"{m:>17}" for m in methods))
  for k, row in table.items():
    print(f"{k:>3} " + " ".join(f"{row[m]:>17.2e}" for m in methods))
  overall = {m: float(np.median([table[k][m] for k in table])) for m in methods}
  print(
      json.dumps(
          {
              "bench": "search_regret",
              "budget": BUDGET,
              "noise": args.noise,
              "seeds": args.seeds,
              "median_regret_by_k": {str(k): v for k, v in table.items()},
              "median_regret": overall,
              "extra_evals": {"surrogate+refine": 28},
              "seconds": round(time.time() - t0, 1),
          }
      )
  )


if __name__ == "__main__":
  main()
