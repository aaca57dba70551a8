"""demix_jax: data-mixture search for LLM pre-training by model merging.

DeMix (arXiv 2602.00747) in JAX: train one component model per candidate
dataset, build the proxy for any mixture as a weighted merge of the
components, score many merged proxies on device, search with a surrogate,
and train on the mixture found.

The curated namespace (`import demix_jax as dx`):

  dx.load_config("demo:runlocal")       a ConfigDict from configs/
  dx.resolve(config) -> dx.RunSpec      typed, validated; errors name fields
  dx.run(config, workdir, stages=...)   the pipeline; {stage: result}
  dx.from_run_dirs(base_dir, {name: run_dir}, tokenizer=)
                                        score mixtures of your checkpoints
  dx.ComponentStore, dx.MergeSpec, dx.ModelConfig, dx.ConfigError

Names resolve on first use, so `import demix_jax` stays cheap (no JAX,
TensorFlow or Orbax until something needs them).
"""

from __future__ import annotations

import importlib
from typing import Any

from demix_jax import gcs_emulator

__version__ = "0.1.0"

# Public name -> (module, attribute).
_EXPORTS = {
    "ConfigError": ("demix_jax.config_lib", "ConfigError"),
    "RunSpec": ("demix_jax.spec", "RunSpec"),
    "resolve": ("demix_jax.spec", "resolve"),
    "run": ("demix_jax.pipeline", "run"),
    "load_result": ("demix_jax.pipeline", "load_result"),
    "preflight": ("demix_jax.pipeline", "preflight"),
    "quiet_logging": ("demix_jax.logs", "quiet_logging"),
    "Workspace": ("demix_jax.workspace", "Workspace"),
    "MixtureEvaluator": ("demix_jax.merging.engine", "MixtureEvaluator"),
    "Evaluator": ("demix_jax.merging.evaluator", "Evaluator"),
    "from_run_dirs": ("demix_jax.merging.runs", "from_run_dirs"),
    "ComponentStore": ("demix_jax.merging.store", "ComponentStore"),
    "MergeSpec": ("demix_jax.merging.methods", "MergeSpec"),
    "ModelConfig": ("demix_jax.models", "ModelConfig"),
    "print_result": ("demix_jax.stages.report", "print_result"),
}

# Before any gs:// I/O: a named GCS emulator serves every client.
gcs_emulator.route_to_emulator()

__all__ = sorted(_EXPORTS) + ["load_config", "__version__"]


def load_config(name: str):
  """A pipeline config by name: "demo", "demo:runlocal", "qwen3_1p7b", ...

  The text after the colon is the config's argument string (e.g.
  "runlocal,seed=3"). Configs are the `configs` package of this repository.

  Args:
    name: module name under configs/ (or a path like "configs/demo.py"),
      optionally followed by ":arg".

  Returns:
    The ConfigDict `get_config(arg)` returns.
  """
  module, _, arg = name.partition(":")
  module = module.removesuffix(".py").replace("/", ".")
  if not module.startswith("configs."):
    module = f"configs.{module}"
  return importlib.import_module(module).get_config(arg or None)


def __getattr__(name: str) -> Any:
  if name in _EXPORTS:
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'demix_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
  return __all__
