"""Readers of the search, final and validate config sections."""

from __future__ import annotations

import math
import re
from typing import Any

from demix_jax import config_lib
from demix_jax import storage
from demix_jax.config_lib import ConfigError
from demix_jax.evals import scoring
from demix_jax.merging import methods as merge_methods
from demix_jax.search import gradient as gradient_lib
from demix_jax.search import objective as objective_lib
from demix_jax.search import pool as pool_lib
from demix_jax.search import rounds as rounds_lib
from demix_jax.search import surrogates
from demix_jax.spec import sections
from demix_jax.spec import transfer
from demix_jax.spec import types


def constraints(r: config_lib.Reader, candidates) -> dict[str, Any]:
  raw = r.mapping("search.constraints")
  out, lower = {}, 0.0
  for name, c in raw.items():
    f = f"search.constraints.{name}"
    if name not in candidates:
      raise ConfigError(f, "is not a candidate", f"use one of {candidates}")
    if isinstance(c, (list, tuple)):
      if len(c) != 2:
        raise ConfigError(f, f"{c!r} is not (lo, hi)", "give a pair or a float")
      lo, hi = (config_lib.number(f, v, 0.0, 1.0) for v in c)
      if lo > hi:
        raise ConfigError(f, f"lo={lo} > hi={hi}", "give lo <= hi")
      out[name] = (lo, hi)
    else:
      lo = config_lib.number(f, c, 0.0, 1.0)
      out[name] = lo
    lower += lo
  if lower > 1.0 + 1e-9:
    raise ConfigError(
        "search.constraints",
        f"the lower bounds sum to {lower:.4g} > 1, so no mixture satisfies"
        " them",
        "lower some of the bounds",
    )
  return out


def search(
    r: config_lib.Reader,
    seed: int,
    data: types.DataSpec,
    ev: types.EvalSpec,
    chunk: int,
) -> types.SearchSpec:
  rng = r.get("search.concentration_range")
  if (
      isinstance(rng, str)
      or not isinstance(rng, (list, tuple))
      or len(rng) != 2
  ):
    raise ConfigError(
        "search.concentration_range",
        f"expected (min, max), got {rng!r}",
        "give two positive numbers, e.g. (0.5, 5.0)",
    )
  lo, hi = rng
  for v in (lo, hi):
    config_lib.number("search.concentration_range", v, 0.0, open_low=True)
  if lo > hi:
    raise ConfigError(
        "search.concentration_range", f"({lo}, {hi}) has lo > hi", "lo <= hi"
    )
  pool = pool_lib.PoolConfig(
      size=r.int("search.pool_size", 8),
      sampler=r.choice("search.sampler", pool_lib.SAMPLERS),
      temperature=r.float("search.temperature", 0.0, open_low=True),
      concentration_range=(float(lo), float(hi)),
      concentration_count=r.int("search.concentration_count"),
      floor=r.float("search.floor", 0.0, 1.0, open_high=True),
      caps=r.choice("search.caps", pool_lib.CAPS),
  )
  n_init, n_rounds = r.int("search.n_init", 2), r.int("search.rounds")
  if n_init // 2 ** (n_rounds - 1) < 1:
    raise ConfigError(
        "search.rounds",
        f"round {n_rounds - 1} would have n_init / 2**r = 0 proxies",
        f"use at most {int(math.log2(n_init)) + 1} rounds or a larger n_init",
    )
  rounds = rounds_lib.SearchConfig(
      n_init=n_init,
      rounds=n_rounds,
      top_region=r.float("search.top_region", 0.0, open_low=True),
      final_topk=r.int("search.final_topk"),
      surrogate=r.choice("search.surrogate", surrogates.KINDS),
      exploration=r.float("search.exploration", 0.0),
      lgbm=surrogates.LGBMParams(
          learning_rate=r.float(
              "search.lgbm_learning_rate", 0.0, open_low=True
          ),
          num_iterations=r.int("search.lgbm_iterations"),
      ),
      chunk_size=chunk,
      seed=seed,
  )
  domains = tuple(t for t in ev.targets if t.startswith("domain/"))
  dw = r.mapping("search.domain_weights")
  for name, w in dw.items():
    if f"domain/{name}" not in domains:
      raise ConfigError(
          f"search.domain_weights.{name}",
          "is not a domain of eval.benchmarks",
          f"use one of {[d.split('/')[1] for d in domains]}",
      )
    config_lib.number(f"search.domain_weights.{name}", w, 0.0)
  obj = r.get("search.objective")
  if obj in ("normalized", "composite"):
    if not domains:
      raise ConfigError(
          "search.objective",
          f"{obj} needs domain scores, and eval.benchmarks has none",
          "add benchmarks or name a single target",
      )
    weights = {f"domain/{k}": float(v) for k, v in dw.items()}
    objective = sections.lib(
        "search.domain_weights",
        "give weights >= 0 with a positive sum",
        objective_lib.ObjectiveSpec,
        domains,
        obj,
        weights or None,
    )
  elif obj in ev.targets:
    objective = objective_lib.ObjectiveSpec((obj,), "target")
  else:
    raise ConfigError(
        "search.objective",
        f"{obj!r} is not a target",
        f"use 'normalized', 'composite' or one of {ev.targets}",
    )
  method = r.choice("search.method", types.SEARCH_METHODS)
  grad = None
  if r.bool("search.gradient.enabled"):
    grad = gradient_lib.GradientConfig(
        steps=r.int("search.gradient.steps"),
        learning_rate=r.float(
            "search.gradient.learning_rate", 0.0, open_low=True
        ),
        starts=r.int("search.gradient.starts"),
        seed=seed,
    )
    smooth = [
        t
        for t in objective.targets
        if not scoring.higher_is_better(t, ev.domain_metrics)
    ]
    if not smooth:
      raise ConfigError(
          "search.gradient.enabled",
          "the objective has no bits-per-byte or loss target to differentiate",
          "set it to False, or use a bpb objective",
      )
  elif method == "gradient":
    raise ConfigError(
        "search.method",
        "'gradient' needs search.gradient.enabled=True",
        "enable the gradient search or use 'surrogate'",
    )
  if grad is None:
    r.skip("search.gradient")  # off: its other keys are known, not used
  return types.SearchSpec(
      pool=pool,
      rounds=rounds,
      objective=objective,
      constraints=constraints(r, data.candidates),
      method=method,
      gradient=grad,
      barrier_points=r.int("search.barrier_points", 0),
      cap_run_tokens=r.int("search.cap_run_tokens", 0),
      prior_tokens=prior_tokens(r, data.candidates),
      baselines=baselines(r, pool.size),
  )


_BASELINE_KEYS = ("kind", "proxies", "rounds", "tokens_per_proxy")
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def baselines(
    r: config_lib.Reader, pool_size: int
) -> dict[str, types.ProxySearchSpec]:
  """`search.baselines`: {name: {kind, proxies, rounds, tokens_per_proxy}}.

  Optional (absent = no trained-proxy searches). Each name becomes a final
  run and a directory, so it must be a plain file name and not one of the
  final stage's own run names.
  """
  if r.optional("search.baselines") is None:
    return {}
  out = {}
  for name, m in r.mapping("search.baselines").items():
    f = f"search.baselines.{name}"
    if not _RUN_NAME.fullmatch(name):
      raise ConfigError(
          f,
          "is not a plain name (it names a final run and its directory)",
          "use letters, digits, '_' and '-'",
      )
    if name in ("demix",) + types.BASELINES:
      raise ConfigError(
          f, "is a reserved run name", "give the method another name"
      )
    if not isinstance(m, dict):
      raise ConfigError(
          f,
          f"expected a dict, got {m!r}",
          "give {'kind': 'regmix' or 'climb', 'proxies': n,"
          " 'tokens_per_proxy': t} (climb: and 'rounds')",
      )
    unknown = sorted(set(m) - set(_BASELINE_KEYS))
    if unknown:
      raise ConfigError(
          f"{f}.{unknown[0]}",
          "is not a field of a trained-proxy search",
          f"use {_BASELINE_KEYS}",
      )
    kind = r.choice(f"{f}.kind", types.PROXY_SEARCH_KINDS)
    proxies = r.int(f"{f}.proxies", surrogates.MIN_POINTS)
    if kind == "regmix":
      n_rounds = r.int(f"{f}.rounds") if "rounds" in m else 1
      if n_rounds != 1:
        raise ConfigError(
            f"{f}.rounds",
            f"RegMix is one-shot, got {n_rounds} rounds",
            "leave rounds out (or 1), or use kind 'climb'",
        )
    else:
      n_rounds = r.int(f"{f}.rounds", 2) if "rounds" in m else 3
      if proxies // 2 ** (n_rounds - 1) < 1:
        raise ConfigError(
            f"{f}.rounds",
            f"round {n_rounds - 1} would have proxies / 2**r = 0 proxies",
            f"use at most {int(math.log2(proxies)) + 1} rounds or more"
            " proxies",
        )
    total = sum(rounds_lib.round_sizes(proxies, n_rounds))
    if total > pool_size:
      raise ConfigError(
          f"{f}.proxies",
          f"{total} proxies need as many distinct pool mixtures, and"
          f" search.pool_size is {pool_size}",
          "use fewer proxies or a larger search.pool_size",
      )
    out[name] = types.ProxySearchSpec(
        kind=kind,
        proxies=proxies,
        rounds=n_rounds,
        tokens_per_proxy=r.int(f"{f}.tokens_per_proxy"),
    )
  return out


def prior_tokens(r: config_lib.Reader, candidates) -> dict[str, float]:
  out = {}
  for name, v in r.mapping("search.prior_tokens").items():
    f = f"search.prior_tokens.{name}"
    if name not in candidates:
      raise ConfigError(f, "is not a candidate", f"use one of {candidates}")
    out[name] = config_lib.number(f, v, 0.0, open_low=True)
  return out


def final(
    r: config_lib.Reader,
    data: types.DataSpec,
    methods: tuple[str, ...] = (),
) -> types.FinalSpec:
  """`final`; `methods` are the trained-proxy searches' run names."""
  fixed = {}
  for name in r.mapping("final.fixed_mixtures"):
    if name in methods:
      raise ConfigError(
          f"final.fixed_mixtures.{name}",
          "is also the name of a search.baselines method (a final run)",
          "give the mixture or the method another name",
      )
    if name in ("demix",) + types.BASELINES:
      raise ConfigError(
          f"final.fixed_mixtures.{name}",
          "is a reserved run name",
          "give the mixture another name",
      )
    fixed[name] = sections.weights(
        r,
        f"final.fixed_mixtures.{name}",
        list(data.sources),
        data.normalize_weights,
    )
  return types.FinalSpec(
      tokens=r.int("final.tokens"),
      baselines=r.names("final.baselines", types.BASELINES),
      fixed_mixtures=fixed,
      mixture_from=mixture_from(r),
      seeds=(
          r.int("final.seeds") if r.optional("final.seeds") is not None else 1
      ),
  )


def mixture_from(r: config_lib.Reader) -> str:
  """`final.mixture_from` (absent = "").

  A local file must exist now; its contents (and a gs:// file) are read
  and checked at preflight (`spec.transfer.read`, the final stage's check).
  """
  if r.optional(transfer.FIELD) is None:
    return ""
  ref = r.str(transfer.FIELD)
  path = transfer.mixture_path(ref) if ref else None
  if path is not None and storage.is_local(ref) and not path.exists():
    raise ConfigError(
        transfer.FIELD,
        f"{str(path)!r} does not exist",
        "give a finished run's directory or its report/mixture.json (the"
        " report stage writes it), or '' to use this run's search",
    )
  return ref


def validate(
    r: config_lib.Reader, budgets: types.BudgetSpec
) -> types.ValidateSpec:
  fractions = r.get("validate.proxy_fractions")
  if not isinstance(fractions, (list, tuple)):
    raise ConfigError(
        "validate.proxy_fractions", f"{fractions!r} is not a list", "a tuple"
    )
  for i, f in enumerate(fractions):
    config_lib.number(
        f"validate.proxy_fractions[{i}]", f, 0.0, 1.0, open_low=True
    )
  betas = r.get("validate.betas")
  if not isinstance(betas, (list, tuple)):
    raise ConfigError("validate.betas", f"{betas!r} is not a list", "a tuple")
  for i, b in enumerate(betas):
    config_lib.number(f"validate.betas[{i}]", b, 0.0, 1.0)
  ref = r.int("validate.reference_tokens", 0)
  n_refs = r.int("validate.num_references", 3)
  twins = r.int("validate.twins", 0)
  if twins and not 3 <= twins <= n_refs:
    raise ConfigError(
        "validate.twins",
        f"{twins} replicated references (of {n_refs})",
        f"use 0 (no noise ceiling) or 3 to validate.num_references={n_refs}",
    )
  return types.ValidateSpec(
      num_references=n_refs,
      twins=twins,
      sampler=r.choice("validate.sampler", ("search",) + pool_lib.SAMPLERS),
      reference_tokens=ref or budgets.component_tokens,
      proxy_fractions=tuple(float(f) for f in fractions),
      merge_methods=r.names(
          "validate.merge_methods", merge_methods.METHODS, empty=False
      ),
      betas=tuple(float(b) for b in betas),
  )
