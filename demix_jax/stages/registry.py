"""Every stage's record, in pipeline order (`stage.ORDER`)."""

from __future__ import annotations

from demix_jax.stages import base
from demix_jax.stages import baselines
from demix_jax.stages import components
from demix_jax.stages import final
from demix_jax.stages import prepare
from demix_jax.stages import report
from demix_jax.stages import search
from demix_jax.stages import stage as stage_lib
from demix_jax.stages import validate

_RECORDS = {
    m.STAGE.name: m.STAGE
    for m in (
        prepare,
        base,
        components,
        search,
        baselines,
        final,
        validate,
        report,
    )
}
if set(_RECORDS) != set(stage_lib.ORDER):
  raise ImportError(
      f"stage records {sorted(_RECORDS)} do not match stage.ORDER"
      f" {stage_lib.ORDER}: add the new stage's record here and its name"
      " there"
  )
STAGES: tuple[stage_lib.Stage, ...] = tuple(
    _RECORDS[n] for n in stage_lib.ORDER
)


def get(name: str) -> stage_lib.Stage:
  """The record of stage `name` (KeyError for an unknown name)."""
  return _RECORDS[name]
