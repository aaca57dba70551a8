"""Resumable score caches of the validation stage (workdir/validate/scores/).

* `reference_scores`: trains (or skips) every reference run and scores its
  checkpoints; written after each reference, so a kill loses at most the
  reference in progress. `kind="twin"` does the same for the noise-ceiling
  replicas (scores/twin.json, references/twin_NNNN/).
* `merged_scores`: merged-proxy scores per variant, keyed by a digest of the
  mixtures (recomputed if they change).
* `family`: one checkpoint fraction of the reference cache as {domain: [R]}.

NaN/inf are written as null so the files are strict JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Mapping

from etils import epath
import numpy as np

from demix_jax import storage

DONE = "DONE"


def fraction_key(f: float) -> str:
  return repr(float(f))


# JSON helpers: NaN/inf become null so files are strict JSON.


def jsonable(x: Any) -> Any:
  if isinstance(x, Mapping):
    return {str(k): jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple, np.ndarray)):
    return [jsonable(v) for v in x]
  if isinstance(x, (np.integer, int)) and not isinstance(x, bool):
    return int(x)
  if isinstance(x, (np.floating, float)):
    return float(x) if math.isfinite(x) else None
  return x


def as_float(x: Any) -> float:
  return float("nan") if x is None else float(x)


def read_json(path: epath.Path) -> Any:
  return storage.read_json(path) if path.exists() else None


def write_json(path: epath.Path, obj: Any) -> None:
  # Insertion order kept: the domains' order is the tables' column order.
  storage.atomic_write_json(path, jsonable(obj), sort_keys=False)


def digest(alphas: np.ndarray) -> str:
  return hashlib.sha256(np.round(alphas, 9).tobytes()).hexdigest()[:16]


def reference_scores(
    root,
    alphas,
    fracs,
    domains,
    train_reference,
    score_reference,
    write,
    log,
    kind="reference",
):
  """Trains (or skips) and scores every reference; returns the cache dict.

  `kind` "twin" does the same for the noise-ceiling replicas (their own
  cache file and run directories).
  """
  prefix = "ref" if kind == "reference" else kind
  path = root / "scores" / f"{kind}.json"
  cache = read_json(path) or {"scores": {}, "alphas": {}}
  for i, alpha in enumerate(alphas):
    key = str(i)
    if key in cache["alphas"] and not np.allclose(
        cache["alphas"][key], alpha, atol=1e-9
    ):
      raise ValueError(
          f"{kind} {i}: cached mixture {cache['alphas'][key]} differs from "
          f"the requested {alpha.tolist()} ({path}); the reference mixtures "
          "changed: use a new workdir or delete workdir/validate"
      )
    have = cache["scores"].get(key, {})
    # A score cached before a target was added (e.g. held-out bpb) is
    # rescored, not read back as NaN.
    for f in list(have):
      if any(d not in have[f] for d in domains):
        del have[f]
    if all(fraction_key(f) in have for f in fracs):
      log(f"validate: {kind} {i + 1}/{len(alphas)} cached")
      continue
    out_dir = root / "references" / f"{prefix}_{i:04d}"
    marker = out_dir / DONE
    if marker.exists():
      done = storage.read_json(marker)
      if not np.allclose(done["alpha"], alpha, atol=1e-9):
        raise ValueError(
            f"{out_dir} was trained on {done['alpha']}, not "
            f"{alpha.tolist()}: delete it or use a new workdir"
        )
      log(f"validate: {kind} {i + 1}/{len(alphas)} already trained")
    else:
      log(
          f"validate: training {kind} {i + 1}/{len(alphas)} "
          f"alpha={np.round(alpha, 3).tolist()}"
      )
      out_dir.mkdir(parents=True, exist_ok=True)
      train_reference(i, alpha, str(out_dir))
      if write:
        storage.atomic_write_text(marker, json.dumps({"alpha": alpha.tolist()}))
    for f in fracs:
      if fraction_key(f) not in have:
        got = score_reference(i, f)
        missing = [d for d in domains if d not in got]
        if missing:
          raise KeyError(f"score {kind} ({i}, {f}) lacks domains {missing}")
        have[fraction_key(f)] = {d: float(v) for d, v in got.items()}
    cache["scores"][key] = have
    cache["alphas"][key] = alpha.tolist()
    if write:
      write_json(path, cache)
  return cache


def merged_scores(root, alphas, variants, domains, score_merged, write, log):
  """Scores (or reads back) every merged variant.

  Returns:
    ({label: {domain: [R] scores}}, {label: diagnostics or None}); the
    diagnostics are what score_merged returned under "diagnostics" (the
    components' deltas and loss barriers), cached with the scores.
  """
  path = root / "scores" / "merged.json"
  cache = read_json(path) or {}
  want = digest(alphas)
  out, diags = {}, {}
  for v in variants:
    entry = cache.get(v.label)
    stale = entry is not None and any(
        d not in entry.get("scores", {}) for d in domains
    )
    if entry is None or stale or entry.get("alphas_digest") != want:
      log(f"validate: scoring merged proxies {v.label!r}")
      got = score_merged(alphas, v.label)
      scores = {}
      for d in domains:
        a = np.asarray(got[d], dtype=np.float64).ravel()
        if a.shape != (len(alphas),):
          raise ValueError(
              f"score_merged({v.label!r}) gave {a.size} scores "
              f"for {d!r}, expected {len(alphas)}"
          )
        scores[d] = a.tolist()
      entry = {
          "alphas_digest": want,
          "scores": scores,
          "diagnostics": got.get("diagnostics"),
      }
      cache[v.label] = entry
      if write:
        write_json(path, cache)
    else:
      log(f"validate: merged proxies {v.label!r} cached")
    out[v.label] = {
        d: np.array([as_float(x) for x in entry["scores"][d]]) for d in domains
    }
    diags[v.label] = entry.get("diagnostics")
  return out, diags


def family(cache, n, fraction, domains):
  return {
      d: np.array(
          [
              as_float(cache["scores"][str(i)][fraction_key(fraction)].get(d))
              for i in range(n)
          ]
      )
      for d in domains
  }
