"""Metrics from per-row NLL sums, domain aggregation, metric directions.

The evaluator returns, for each mixture, the summed NLL (nats) of every row's
scored tokens. From those:

* multiple choice ("mc" rows, one per choice): `acc` = the gold choice has
  the highest log-likelihood; `acc_norm` = highest log-likelihood per UTF-8
  byte of the continuation (OLMES's length normalisation; ties go to the
  first choice); `bpb` = bits per byte of the gold continuation,
  NLL / (ln 2 * bytes), averaged over items;
* gold-solution benchmarks ("bpb" rows): `bpb` averaged over items;
* held-out sequences: `loss` = total NLL / scored tokens (nats per token)
  and `bpb` = total NLL / (ln 2 * total bytes) of the source; `heldout/bpb`
  is the mean over sources;
* `domain/<d>` = mean over the domain's benchmarks of the metric chosen for
  the domain (paper Sec. 2.5: plain mean of its benchmarks).

Decision (recorded): tiny CPU models sit at chance on multiple-choice
accuracy, so the default metric of every domain is gold-continuation bits
per byte, a smooth signal; `domain_metrics` makes it a parameter (e.g.
{"general": "acc_norm"} for real models, as in the paper).

Every bpb and loss target is a fixed linear function of the row NLLs
(`linear_weights`), which is what makes the gradient objective exact.
`higher_is_better` is the one place a metric's direction is decided.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from demix_jax.evals import benchmarks as bench_lib
from demix_jax.evals import rows as rows_lib

DEFAULT_DOMAIN_METRICS: dict[str, str] = {
    "general": "bpb",
    "code": "bpb",
    "math": "bpb",
}
_HIGHER = {"acc": True, "acc_norm": True, "bpb": False, "loss": False}
_LN2 = math.log(2.0)


def _domain_metrics(domain_metrics: Mapping[str, str] | None):
  out = dict(DEFAULT_DOMAIN_METRICS)
  out.update(domain_metrics or {})
  for d, m in out.items():
    if m not in _HIGHER:
      raise ValueError(
          f"domain metric for {d!r} is {m!r}; use one of " f"{sorted(_HIGHER)}"
      )
  return out


def higher_is_better(
    name: str, domain_metrics: Mapping[str, str] | None = None
) -> bool:
  """Whether a larger value of target `name` is better.

  Args:
    name: "{benchmark}/{acc|acc_norm|bpb}", "heldout/{source}/{bpb|loss}",
      "heldout/bpb" or "domain/{domain}".
    domain_metrics: {domain: metric} as used to compute the domain scores
      (default DEFAULT_DOMAIN_METRICS: all bpb, lower is better).

  Returns:
    True for accuracies, False for bits per byte and losses.
  """
  parts = name.split("/")
  if parts[0] == "domain" and len(parts) == 2:
    metric = _domain_metrics(domain_metrics).get(parts[1])
    if metric is None:
      raise ValueError(f"unknown domain in target {name!r}")
    return _HIGHER[metric]
  if parts[-1] in _HIGHER:
    return _HIGHER[parts[-1]]
  raise ValueError(f"cannot tell the direction of target {name!r}")


def _choice_matrix(group: rows_lib.RowSet, offset: int):
  """[n_docs, max_choices] global row index (-1 = none) and gold choice."""
  n_docs = group.n_docs
  width = int(group.choice.max()) + 1
  idx = -np.ones((n_docs, width), np.int64)
  idx[group.doc, group.choice] = offset + np.arange(group.doc.size)
  gold = np.zeros(n_docs, np.int64)
  gold[group.doc[group.gold]] = group.choice[group.gold]
  return idx, gold


def _group_linear(
    suite: rows_lib.EvalSuite, group: rows_lib.RowSet, metric: str
) -> np.ndarray:
  """Row weights w with target = nll @ w for a group's bpb or loss."""
  w = np.zeros(suite.n_rows, np.float64)
  sl = suite.rows_of(group.name)
  if group.kind == "heldout":
    if metric == "bpb":
      w[sl] = 1.0 / (_LN2 * group.n_bytes.sum())
    elif metric == "loss":
      w[sl] = 1.0 / group.target_mask.sum()
    else:
      raise ValueError(f"held-out targets are bpb or loss, not {metric!r}")
    return w
  if metric != "bpb":
    raise ValueError(f"{group.name}/{metric} is not linear in the NLL")
  # Mean over items of the gold row's bits per byte.
  g = group.gold
  w_rows = np.zeros(group.doc.size)
  w_rows[g] = 1.0 / (_LN2 * group.n_bytes[g] * group.n_docs)
  w[sl] = w_rows
  return w


def target_names(
    suite: rows_lib.EvalSuite, domain_metrics: Mapping[str, str] | None = None
) -> list[str]:
  """Every target `score_rows` returns for this suite, in order."""
  return names_for_groups(
      [(g.name, g.kind) for g in suite.groups], domain_metrics
  )


def names_for_groups(
    groups: list[tuple[str, str]],
    domain_metrics: Mapping[str, str] | None = None,
) -> list[str]:
  """Target names from (group name, kind) pairs alone.

  Kinds are "mc", "bpb" and anything else for held-out sources. Needing no
  rows lets the run spec check `search.objective` before any data exists.
  """
  dm = _domain_metrics(domain_metrics)
  names, heldout, present = [], [], set()
  for name, kind in groups:
    if kind == "mc":
      names += [f"{name}/acc", f"{name}/acc_norm", f"{name}/bpb"]
    elif kind == "bpb":
      names.append(f"{name}/bpb")
    else:
      names += [f"{name}/loss", f"{name}/bpb"]
      heldout.append(name)
    present.add(name)
  if heldout:
    names.append("heldout/bpb")
  for d, members in bench_lib.DOMAINS.items():
    have = [b for b in members if b in present]
    if have:
      names.append(f"domain/{d}")
      for b in have:
        if f"{b}/{dm[d]}" not in names:
          raise ValueError(
              f"domain {d!r} metric {dm[d]!r} does not exist "
              f"for benchmark {b!r}"
          )
  return names


def linear_weights(
    suite: rows_lib.EvalSuite,
    target: str,
    domain_metrics: Mapping[str, str] | None = None,
) -> np.ndarray:
  """Row weights [R] such that target(mixture) = row_nll @ weights.

  Defined for every bpb and loss target and for domains whose metric is bpb
  (the differentiable objectives); accuracies raise ValueError.
  """
  dm = _domain_metrics(domain_metrics)
  parts = target.split("/")
  by_name = {g.name: g for g in suite.groups}
  if target == "heldout/bpb":
    srcs = [g for g in suite.groups if g.kind == "heldout"]
    if not srcs:
      raise ValueError("no held-out rows in the suite")
    return sum(_group_linear(suite, g, "bpb") for g in srcs) / len(srcs)
  if parts[0] == "domain" and len(parts) == 2:
    members = [b for b in bench_lib.DOMAINS.get(parts[1], ()) if b in by_name]
    if not members:
      raise ValueError(f"no benchmark of domain {parts[1]!r} in the suite")
    return sum(
        _group_linear(suite, by_name[b], dm[parts[1]]) for b in members
    ) / len(members)
  group_name, metric = "/".join(parts[:-1]), parts[-1]
  if group_name not in by_name:
    raise ValueError(f"unknown target {target!r}; groups: {sorted(by_name)}")
  return _group_linear(suite, by_name[group_name], metric)


def score_rows(
    nll: np.ndarray,
    suite: rows_lib.EvalSuite,
    domain_metrics: Mapping[str, str] | None = None,
) -> dict[str, np.ndarray]:
  """Every target for every mixture from the per-row NLL sums.

  Args:
    nll: [M, R] (or [R]) summed NLL in nats of each row's scored tokens.
    suite: the suite the rows come from.
    domain_metrics: {domain: metric} for the domain scores.

  Returns:
    {target name: float64 [M]} (scalars' arrays of shape [] for [R] input).
  """
  dm = _domain_metrics(domain_metrics)
  nll = np.asarray(nll, np.float64)
  squeeze = nll.ndim == 1
  nll = np.atleast_2d(nll)
  if nll.shape[1] != suite.n_rows:
    raise ValueError(
        f"nll has {nll.shape[1]} rows, suite has " f"{suite.n_rows}"
    )
  out: dict[str, np.ndarray] = {}
  for g, off in zip(suite.groups, suite.offsets):
    if g.kind == "mc":
      idx, gold = _choice_matrix(g, off)
      valid = idx >= 0
      ll = np.where(valid, -nll[:, np.maximum(idx, 0)], -np.inf)
      nbytes = np.zeros(suite.n_rows)
      nbytes[off : off + g.doc.size] = g.n_bytes
      per_byte = np.where(
          valid, ll / np.maximum(nbytes[np.maximum(idx, 0)], 1.0), -np.inf
      )
      out[f"{g.name}/acc"] = np.mean(np.argmax(ll, -1) == gold, axis=-1)
      out[f"{g.name}/acc_norm"] = np.mean(
          np.argmax(per_byte, -1) == gold, axis=-1
      )
      out[f"{g.name}/bpb"] = nll @ _group_linear(suite, g, "bpb")
    elif g.kind == "bpb":
      out[f"{g.name}/bpb"] = nll @ _group_linear(suite, g, "bpb")
    else:
      out[f"{g.name}/loss"] = nll @ _group_linear(suite, g, "loss")
      out[f"{g.name}/bpb"] = nll @ _group_linear(suite, g, "bpb")
  heldout = [g.name for g in suite.groups if g.kind == "heldout"]
  if heldout:
    out["heldout/bpb"] = np.mean([out[f"{h}/bpb"] for h in heldout], axis=0)
  present = {g.name for g in suite.groups}
  for d, members in bench_lib.DOMAINS.items():
    have = [b for b in members if b in present]
    if have:
      keys = [f"{b}/{dm[d]}" for b in have]
      missing = [k for k in keys if k not in out]
      if missing:
        raise ValueError(f"domain {d!r} metric {dm[d]!r} missing: {missing}")
      out[f"domain/{d}"] = np.mean([out[k] for k in keys], axis=0)
  if squeeze:
    out = {k: v[0] for k, v in out.items()}
  return out
