"""Where the repository is, and the unit tests' model config."""

import pathlib

from demix_jax import models

# The repository root (tests/kit/paths.py -> ../..).
ROOT = pathlib.Path(__file__).resolve().parents[2]


def tiny_model(**overrides) -> models.ModelConfig:
  """The `micro` preset (2 layers, d_model 32, vocab 64), fields replaced.

  Args:
    **overrides: ModelConfig fields to change, e.g. vocab_size=512.

  Returns:
    The ModelConfig.
  """
  return models.get_preset("micro", **overrides)
