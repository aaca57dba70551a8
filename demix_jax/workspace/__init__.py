"""A run's workspace: its directory and the four parts every stage shares.

`Workspace(spec, workdir)` is built once per run (`pipeline.preflight`) and
handed to every stage. Its parts are split by what changes together:

- `data` (`workspace.data.DataCaches`): sources, tokenizer, token counts,
  held-out rows, the evaluation suite, cached under `workdir/data/`;
- `bounds` (`workspace.bounds.MixtureBounds`): candidates, the token-count
  prior, the natural mixture, epoch caps, alpha bounds, source weights;
- `engines` (`workspace.engines.Engines`): the mesh, the component stores
  and the merge evaluators, cached per set of components;
- `recipe` (`workspace.recipe.TrainingRecipe`): the one recipe for "train
  a run on these source weights" that every training run shares.

Each reads only the RunSpec (and the data caches).
"""

from __future__ import annotations

import os

from etils import epath

from demix_jax import spec as spec_lib
from demix_jax.workspace import bounds as bounds_lib
from demix_jax.workspace import data as data_lib
from demix_jax.workspace import engines as engines_lib
from demix_jax.workspace import recipe as recipe_lib


class Workspace:
  """The shared, lazily built side of one pipeline run."""

  def __init__(self, spec: spec_lib.RunSpec, workdir: str | os.PathLike):
    self.spec = spec
    workdir = os.fspath(workdir)
    # Orbax rejects relative paths, and results record run directories that
    # later stages open: make local workdirs absolute once, here.
    if workdir and "://" not in workdir:
      workdir = os.path.abspath(workdir)
    self.workdir = epath.Path(workdir)
    self.data = data_lib.DataCaches(spec, self.workdir / "data")
    self.bounds = bounds_lib.MixtureBounds(spec, self.data)
    self.engines = engines_lib.Engines(spec, self.data)
    self.recipe = recipe_lib.TrainingRecipe(spec, self.data)

  @property
  def candidates(self) -> tuple[str, ...]:
    """The order of alpha's entries (`data.candidates`)."""
    return self.spec.data.candidates
