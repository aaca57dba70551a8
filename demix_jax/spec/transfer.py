"""`final.mixture_from`: the found mixture of another run (Table 6 transfer).

The paper trains the mixtures found with 1.7B components at 8B (its Table
6) instead of searching again with 8B components. A run does the same when
`final.mixture_from` names a finished run's `report/mixture.json` (or the
run directory holding it, local or gs://): its `final` stage trains that
mixture at this run's model size, and the run needs no search of its own.

`read(spec)` reads and checks the file (preflight calls it, through the
final stage's `check`, before anything trains): readable JSON, the source
names of its `source_weights` equal to this run's candidates, weights
finite, non-negative and summing to 1. Every problem is a ConfigError on
`final.mixture_from`, so the CLI exits 2 naming the field and the fix.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

from etils import epath

from demix_jax.config_lib import ConfigError
from demix_jax.stages import results

FIELD = "final.mixture_from"
# What the report stage writes (stages/report.py, `write_mixture`).
FILE = ("report", "mixture.json")
# Sum of the source weights: 1 within this (they are rounded floats of a
# JSON file, normalised when the source run wrote them).
SUM_TOLERANCE = 1e-6


def mixture_path(ref: str) -> epath.Path:
  """The mixture.json a `final.mixture_from` value names."""
  p = epath.Path(ref)
  return p if ref.endswith(".json") else p.joinpath(*FILE)


def _error(problem: str, fix: str) -> ConfigError:
  return ConfigError(FIELD, problem, fix)


def _weights(blob: Mapping[str, Any], path: str) -> dict[str, float]:
  w = blob.get("source_weights")
  if not isinstance(w, Mapping) or not w:
    raise _error(
        f"{path} has no 'source_weights' object",
        "point it at the report/mixture.json a demix_jax report wrote",
    )
  out = {}
  for name, v in w.items():
    if isinstance(v, bool) or not isinstance(v, (int, float)):
      raise _error(
          f"{path}: source_weights.{name} = {v!r} is not a number",
          "use the file the report wrote, unedited",
      )
    if not math.isfinite(v) or v < 0:
      raise _error(
          f"{path}: source_weights.{name} = {v!r} is not a finite weight"
          " >= 0",
          "use the file the report wrote, unedited",
      )
    out[str(name)] = float(v)
  total = math.fsum(out.values())
  if abs(total - 1.0) > SUM_TOLERANCE:
    raise _error(
        f"{path}: the source weights sum to {total:.9g}, not 1 (within"
        f" {SUM_TOLERANCE:g})",
        "use the file the report wrote, or normalise the weights",
    )
  return out


def _search_hash(path: epath.Path) -> str:
  """The source run's search/done.json config hash, "" when absent."""
  if path.name != FILE[1] or path.parent.name != FILE[0]:
    return ""
  done = path.parent.parent / "search" / "done.json"
  try:
    blob = json.loads(done.read_bytes().decode("utf-8"))
  except (OSError, ValueError):
    return ""
  h = blob.get("config_hash") if isinstance(blob, Mapping) else None
  return h if isinstance(h, str) else ""


def read(spec: Any) -> results.MixtureOrigin | None:
  """The checked mixture `spec.final.mixture_from` names; None when unset.

  Args:
    spec: the resolved RunSpec.

  Returns:
    Where the mixture came from and its weights, or None for "" (this run's search).

  Raises:
    ConfigError: on `final.mixture_from`, naming what is wrong and the fix.
  """
  ref = spec.final.mixture_from
  if not ref:
    return None
  path = mixture_path(ref)
  try:
    data = path.read_bytes()
  except Exception as e:  # pylint: disable=broad-except  # any backend's error
    raise _error(
        f"cannot read {path} ({type(e).__name__}: {e})",
        "give a finished run's directory or its report/mixture.json (the"
        " report stage writes it), or '' to use this run's search",
    ) from e
  try:
    blob = json.loads(data.decode("utf-8"))
  except ValueError as e:
    raise _error(
        f"{path} is not JSON ({type(e).__name__}: {e})",
        "point it at the report/mixture.json a demix_jax report wrote",
    ) from e
  if not isinstance(blob, Mapping):
    raise _error(
        f"{path} holds a {type(blob).__name__}, not a JSON object",
        "point it at the report/mixture.json a demix_jax report wrote",
    )
  weights = _weights(blob, str(path))
  want = tuple(spec.data.candidates)
  missing = [c for c in want if c not in weights]
  extra = sorted(set(weights) - set(want))
  if missing or extra:
    parts = []
    if missing:
      parts.append(f"missing candidates {missing}")
    if extra:
      parts.append(f"sources {extra} that are not candidates here")
    raise _error(
        f"the mixture in {path} does not match data.candidates {list(want)}:"
        f" {'; '.join(parts)}",
        "transfer a mixture found over the same candidates (rename the"
        " sources in data.sources to match), or use '' to search here",
    )
  alpha = blob.get("alpha")
  return results.MixtureOrigin(
      path=str(path),
      source_weights={c: weights[c] for c in want},
      alpha={
          str(k): float(v)
          for k, v in (alpha.items() if isinstance(alpha, Mapping) else ())
          if isinstance(v, (int, float)) and not isinstance(v, bool)
      },
      search_config_hash=_search_hash(path),
  )
