"""The pipeline's stages, one module each: `run(spec, inputs) -> Result`.

A stage reads its typed inputs (the RunSpec, the workspace, the results of
the stages it requires) and returns a frozen result (stages/results.py).
Ordering, prerequisites, hashing, saving and loading results are the
pipeline's (demix_jax/pipeline.py), not the stages'.
"""

from demix_jax.stages import base
from demix_jax.stages import components
from demix_jax.stages import final
from demix_jax.stages import report
from demix_jax.stages import search
from demix_jax.stages import validate

MODULES = {
    m.NAME: m for m in (base, components, search, final, validate, report)
}
