"""Diagnostics for the search report: how far components moved, and whether
the loss is convex enough between them for merged proxies to be trusted.

* `weight_deltas`: DeMix Eq. 4 per component,
  delta_i = sum|Theta_i - Theta_base| / (sum|Theta_i| + sum|Theta_base|),
  sums over every parameter entry (element-wise L1). The paper reports ~3%
  at 2B tokens and ~10% at 30B; merging relies on delta << 1.
* `loss_barriers`: for each pair of components (i, j), the target along the
  segment alpha(t) = (1 - t) e_i + t e_j, t in [0, 1] (the linear merge of
  the two), and the barrier max_t [L(t) - ((1 - t) L(0) + t L(1))] (Frankle
  et al. 2020, "Linear mode connectivity and the lottery ticket
  hypothesis"). A clearly positive barrier warns that merged proxies may not
  track trained models. For higher-is-better targets L = -score.

Both return plain dicts (JSON-ready) for the report.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from demix_jax.evals import scoring
from demix_jax.merging import engine as engine_lib
from demix_jax.merging import store as store_lib


def weight_deltas(store: store_lib.ComponentStore) -> dict[str, float]:
  """delta_i (paper Eq. 4) of every component against the base.

  Args:
    store: components with a base.

  Returns:
    {component name: delta}.
  """
  if store.base is None:
    raise ValueError("weight deltas need the base model (store base=)")

  @jax.jit
  def sums(stacked, base):
    num = jnp.zeros(store.k, jnp.float32)
    den = jnp.zeros(store.k, jnp.float32)
    base_l1 = jnp.zeros((), jnp.float32)
    for key in stacked:
      axis = 1 if key == store_lib.LAYERS else 0
      for x, b in zip(
          jax.tree.leaves(stacked[key]), jax.tree.leaves(base[key])
      ):
        x = jnp.moveaxis(x.astype(jnp.float32), axis, 0)
        b = b.astype(jnp.float32)
        flat = x.reshape(store.k, -1)
        num += jnp.sum(jnp.abs(flat - b.reshape(1, -1)), axis=1)
        den += jnp.sum(jnp.abs(flat), axis=1)
        base_l1 += jnp.sum(jnp.abs(b))
    return num, den + base_l1

  num, den = (
      np.asarray(v, np.float64) for v in sums(store.stacked, store.base)
  )
  return {n: float(a / b) for n, a, b in zip(store.names, num, den)}


def loss_barriers(
    evaluator: engine_lib.MixtureEvaluator,
    target: str | None = None,
    points: int = 5,
    warn_fraction: float = 0.01,
) -> dict[str, Any]:
  """Barrier of `target` along the segment between each component pair.

  All pairs' points are scored in one batched `evaluate` call.

  Args:
    evaluator: the mixture evaluator.
    target: a target name (default: "heldout/bpb" if present, else the
      first domain score, else the first target).
    points: interior points per segment (t = 1/(points+1), ...).
    warn_fraction: warn when a barrier exceeds this fraction of the mean
      endpoint value.

  Returns:
    {"target", "t", "pairs": {"a|b": {"values", "barrier"}}, "max_barrier",
     "warning" (str or None)}.
  """
  names = evaluator.store.names
  k = len(names)
  if k < 2:
    return {"target": target, "pairs": {}, "max_barrier": 0.0, "warning": None}
  if target is None:
    ts = evaluator.targets
    target = (
        "heldout/bpb"
        if "heldout/bpb" in ts
        else next((t for t in ts if t.startswith("domain/")), ts[0])
    )
  t = np.linspace(0.0, 1.0, points + 2)
  pairs = list(itertools.combinations(range(k), 2))
  alphas = []
  for i, j in pairs:
    for tt in t:
      a = np.zeros(k, np.float32)
      a[i] += 1.0 - tt
      a[j] += tt
      alphas.append(a)
  values = evaluator.evaluate(np.stack(alphas))[target].reshape(
      len(pairs), len(t)
  )
  sign = (
      -1.0
      if scoring.higher_is_better(target, evaluator.domain_metrics)
      else 1.0
  )
  out, worst = {}, -np.inf
  for (i, j), v in zip(pairs, values):
    loss = sign * v
    chord = (1.0 - t) * loss[0] + t * loss[-1]
    barrier = float(np.max(loss - chord))
    worst = max(worst, barrier)
    out[f"{names[i]}|{names[j]}"] = {
        "values": [float(x) for x in v],
        "barrier": barrier,
    }
  scale = float(np.mean(np.abs(values[:, [0, -1]])))
  warning = None
  if worst > warn_fraction * scale:
    warning = (
        f"loss barrier {worst:.4g} on {target} exceeds "
        f"{warn_fraction:.0%} of its endpoint value ({scale:.4g}): "
        "components are not linearly connected, merged proxies may "
        "be unreliable"
    )
  return {
      "target": target,
      "t": [float(x) for x in t],
      "pairs": out,
      "max_barrier": float(worst),
      "warning": warning,
  }
