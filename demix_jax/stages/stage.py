"""What a stage is: one `Stage` record, and the pipeline's order of them.

A record says everything the pipeline needs to run a stage without naming
it: the stages whose results it requires (and those it reads when they are
finished), the type of its result (saved as `workdir/<name>/done.json`),
the config fields that result depends on, and its `run(spec, inputs)`.
Each stage module defines its own record as `STAGE`;
`demix_jax.stages.registry` lists them in `ORDER`.

This module is a leaf (it imports only the result types) so that config
validation (`demix_jax.spec`) can read the stage names from `ORDER` without
importing the stages themselves.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from demix_jax.stages import results

# The pipeline's stages, in run order. A stage runs after every stage it
# requires; `registry.STAGES` holds their records in this order.
ORDER = (
    "prepare",
    "base",
    "components",
    "search",
    "baselines",
    "final",
    "validate",
    "report",
)

# The config fields a result depends on (dotted prefixes), by what the
# result is made of. Left out on purpose: train.log_every_steps,
# train.eval_every_steps, train.checkpoint_every_steps, train.keep_last,
# train.peak_flops, merge.chunk_size, mesh.*, report.*, stages: they change
# speed, logging or layout, never a result (the mesh only the order of
# float sums, see tests/training/test_mesh_equivalence.py).
# data.worker_count is hashed: Grain's worker processes each read a slice
# of the documents, so the stream differs from the in-process one
# (tests/data/test_workers.py).
TRAINING = (
    "seed",
    "model",
    "optim",
    "data.sources",
    "data.candidates",
    "data.general",
    "data.beta",
    "data.seq_len",
    "data.pretrain_mixture",
    "data.max_epochs",
    "data.on_overrun",
    "data.normalize_weights",
    "data.shuffle_seed",
    "data.worker_count",
    "data.tokenizer",
    "data.offline_max_docs",
    "train.global_batch_size",
    "train.grad_accum_steps",
    "train.eval_batches",
    "base.tokens",
    "base.init_from",
)
COMPONENTS = TRAINING + (
    "components.tokens",
    "components.budgets",
    "components.optim",
)
SCORING = COMPONENTS + (
    "components.use_budget",
    "eval",
    "merge.method",
    "merge.density",
    "merge.gamma",
    "merge.epsilon",
    "merge.lambda_",
    "merge.rescale",
)


@dataclasses.dataclass(frozen=True)
class Stage:
  """One pipeline stage.

  Attributes:
    name: its name in `stages` and its directory under the workdir.
    requires: stages whose results it needs; the pipeline refuses to start
      it until they have finished.
    result: the type of what `run` returns (its done.json).
    run: `run(spec, inputs) -> result`.
    optional: stages whose results it reads when they have finished.
    hashed: the config fields its result depends on; a finished result
      with the same hash is reused, another one refused. None: the stage
      is cheap and always reruns (its result is never reused).
    reads_data: whether it needs the data caches (tokenizer, token counts)
      built and checked before it starts.
    check: `check(spec, workdir)`, cheap checks of the stage's own inputs
      that preflight runs before any data is read or written (raises
      ConfigError); None: nothing to check.
    adapt: `adapt(spec, workdir) -> spec`, the spec every stage runs with
      when this stage is in the run or has finished (prepare points the
      sources at its shards); None: the spec as resolved.
    prepares_data: it writes the data later stages read, so the data
      caches are built after it (from what it wrote), not in preflight.
    needs: `needs(spec) -> stages`, the stages it requires under this spec
      when that depends on the config (with `final.mixture_from` the final
      stage needs no search, and the report needs the final runs instead);
      drawn from `requires` and `optional`. None: always `requires`.
  """

  name: str
  requires: tuple[str, ...]
  result: type[results.Result]
  run: Callable[[Any, Any], results.Result]
  optional: tuple[str, ...] = ()
  hashed: tuple[str, ...] | None = None
  reads_data: bool = True
  check: Callable[[Any, str], None] | None = None
  adapt: Callable[[Any, str], Any] | None = None
  prepares_data: bool = False
  needs: Callable[[Any], tuple[str, ...]] | None = None

  def required(self, spec: Any) -> tuple[str, ...]:
    """The stages this run of it requires (`needs`, else `requires`)."""
    if self.needs is None:
      return self.requires
    got = tuple(self.needs(spec))
    if not set(got) <= set(self.requires + self.optional):
      raise ValueError(
          f"stage {self.name!r}: needs() gave {got}, not drawn from"
          f" requires={self.requires} and optional={self.optional}"
      )
    return got

  def config_hash(self, spec: Any) -> str:
    """The hash of the spec's `hashed` fields ("" when never reused)."""
    return spec.fields_hash(self.hashed) if self.reused else ""

  @property
  def reused(self) -> bool:
    """Whether a finished result (same config) is kept instead of rerun."""
    return self.hashed is not None
