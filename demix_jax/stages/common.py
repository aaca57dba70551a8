"""What every stage receives: the workspace and its prerequisites' results."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax

from demix_jax import storage
from demix_jax import workspace as workspace_lib
from demix_jax.stages import results as results_lib

# Seed offsets, one range per kind of run, so that no two runs of a
# pipeline share a data order or a step seed: a run trains with
# `seed + offset` and draws data with `data.shuffle_seed + offset`, where
# offset = the kind's base + the run's index (the base run: 0).
COMPONENT_SEED = 1  # + candidate index
FINAL_SEED = 100  # + final run index
# A final run's further seeds (`final.seeds` > 1): seed k (k = 1, 2, ...)
# of a mixture adds k times this to its offset.
FINAL_REPEAT_SEED = 1_000_000
REFERENCE_SEED = 1000  # + reference index (validate)
TWIN_SEED = 500_000  # + reference index (validate's noise-ceiling twins)
# The validation's reference mixtures are drawn with `seed +` this (the
# search's pool with `seed` itself).
REFERENCE_POOL_SEED = 7919


@dataclasses.dataclass(frozen=True)
class Inputs:
  """A stage's inputs: the shared workspace and the results it requires.

  `results` holds exactly the finished prerequisite stages the pipeline
  loaded (its record's `requires`), plus `optional` ones that exist (the report
  reads the final and validate results when they are there).
  """

  ws: workspace_lib.Workspace
  results: Mapping[str, results_lib.Result]
  # Identifies the config a run was trained under (checkpoint metadata).
  config_hash: str = ""

  def get(self, stage: str) -> Any:
    return self.results.get(stage)


def domain_scores(scores: Mapping[str, Any]) -> dict[str, Any]:
  """{"domain/general": x, ...} -> {"general": x, ...}."""
  return {
      k.split("/", 1)[1]: v
      for k, v in scores.items()
      if k.startswith("domain/")
  }


def steps_of(spec: Any, tokens: int) -> int:
  """Optimizer steps of a run of `tokens` (the trainer rounds up)."""
  per = spec.train.global_batch_size * spec.data.seq_len
  return max(1, -(-int(tokens) // per))


def write_json(path: Any, obj: Any) -> None:
  """A stage's own bookkeeping file (process 0 writes, atomically)."""
  if jax.process_index() == 0:
    storage.atomic_write_json(path, obj)


def write_result(path: Any, result: results_lib.Record, ws: Any) -> None:
  """A run's done.json, its paths relative to the workdir (`portable`)."""
  write_json(path, results_lib.portable(result.to_json(), ws.workdir))


def read_result(cls: Any, path: Any, ws: Any) -> Any:
  """A run's done.json as `cls`, its paths in this workdir (`localize`)."""
  d = results_lib.localize(storage.read_json(path), ws.workdir)
  return cls.from_json(d, str(path))
