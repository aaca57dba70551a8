"""Config helpers: argument parsing, validation and saving of resolved configs.

Configs live in `configs/<name>.py` and expose `get_config(arg=None)`. The
`arg` string comes after the colon in `--config=configs/demo.py:runlocal,k=v`
and is parsed by `parse_arg`. Library code never reads a ConfigDict; only
`main.py` and `pipeline.py` do, and they pass typed values down.

`validate(config)` is called before any expensive work. Each check raises
`ConfigError` with the dotted name of the offending field and what to do.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import math
from typing import Any

import ml_collections


class ConfigError(ValueError):
  """A config value is wrong. The message names the field and the fix."""

  def __init__(self, field: str, problem: str, fix: str):
    self.field = field
    super().__init__(f"config.{field}: {problem}. Fix: {fix}")


def _literal(value: str) -> Any:
  """Parses a `k=v` value: Python literal if possible, else the raw string."""
  try:
    return ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return value


def parse_arg(arg: str | None, **spec: Any) -> ml_collections.ConfigDict:
  """Parses `"runlocal,k=v,flag"` into a ConfigDict with defaults from `spec`.

  Bare words are booleans set to True. `k=v` values are Python literals when
  they parse as such (`steps=10` -> int 10), else strings. Keys not in `spec`
  are rejected so that a typo does not silently fall back to a default.

  Args:
    arg: the string after the colon in `--config=file.py:ARG`, or None.
    **spec: allowed keys and their default values.

  Returns:
    A ConfigDict with every key of `spec`, overridden from `arg`.
  """
  result = ml_collections.ConfigDict(dict(spec))
  if not arg:
    return result
  for part in arg.split(","):
    part = part.strip()
    if not part:
      continue
    if "=" in part:
      key, value = part.split("=", 1)
      key, value = key.strip(), _literal(value.strip())
    else:
      key, value = part, True
    if key not in spec:
      raise ConfigError(
          f"<arg>.{key}",
          f"unknown config argument {key!r}",
          f"use one of {sorted(spec)}",
      )
    default = spec[key]
    if isinstance(default, bool) and not isinstance(value, bool):
      raise ConfigError(
          f"<arg>.{key}", f"expected a boolean, got {value!r}", f"write {key}"
      )
    if isinstance(default, float) and isinstance(value, int):
      value = float(value)
    with result.unlocked():
      result[key] = value
  return result


def to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Returns a plain, JSON-serialisable dict of the config."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def config_hash(config: ml_collections.ConfigDict | dict[str, Any]) -> str:
  """A short stable hash of a config (or a sub-dict), for run metadata."""
  if isinstance(config, ml_collections.ConfigDict):
    config = to_dict(config)
  blob = json.dumps(config, sort_keys=True, default=str).encode()
  return hashlib.sha256(blob).hexdigest()[:16]


# ----------------------------------------------------------------------------
# Validation.
# ----------------------------------------------------------------------------


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
  node = config
  for part in dotted.split("."):
    if part not in node:
      raise ConfigError(dotted, "is missing", f"add config.{dotted}")
    node = node[part]
  return node


def _check_int(config, dotted: str, minimum: int = 1) -> int:
  value = _get(config, dotted)
  if isinstance(value, bool) or not isinstance(value, int):
    raise ConfigError(
        dotted, f"expected an integer, got {value!r}", "give an integer"
    )
  if value < minimum:
    raise ConfigError(
        dotted,
        f"must be >= {minimum}, got {value}",
        f"use a value >= {minimum}",
    )
  return value


def _check_float(
    config, dotted: str, low: float = -math.inf, high: float = math.inf
) -> float:
  value = _get(config, dotted)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ConfigError(
        dotted, f"expected a number, got {value!r}", "give a number"
    )
  if not math.isfinite(value) or not low <= value <= high:
    raise ConfigError(
        dotted,
        f"must be in [{low}, {high}], got {value}",
        f"use a value in [{low}, {high}]",
    )
  return float(value)


def _check_choice(config, dotted: str, choices: tuple[str, ...]) -> str:
  value = _get(config, dotted)
  if value not in choices:
    raise ConfigError(
        dotted, f"{value!r} is not one of {choices}", f"use one of {choices}"
    )
  return value


@dataclasses.dataclass(frozen=True)
class MeshSpec:
  """Resolved mesh: axis names and sizes (product = device count)."""

  axis_names: tuple[str, ...]
  shape: tuple[int, ...]


def resolve_mesh_shape(
    axes: dict[str, int], num_devices: int, field: str = "mesh.axes"
) -> MeshSpec:
  """Resolves one `-1` axis so the mesh covers exactly `num_devices`.

  Args:
    axes: ordered {axis_name: size}; at most one size may be -1 (infer).
    num_devices: the global device count.
    field: the config field name, for error messages.

  Returns:
    The resolved MeshSpec.
  """
  names = tuple(axes)
  sizes = [int(axes[n]) for n in names]
  if sum(s == -1 for s in sizes) > 1:
    raise ConfigError(
        field, "more than one axis is -1", "infer at most one axis"
    )
  for name, size in zip(names, sizes):
    if size == 0 or size < -1:
      raise ConfigError(
          f"{field}.{name}",
          f"size {size} is invalid",
          "use a positive size or -1",
      )
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ConfigError(
          field,
          f"fixed axes multiply to {known}, which does not divide the"
          f" {num_devices} devices",
          "choose axis sizes whose product divides the device count",
      )
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ConfigError(
        field,
        f"mesh {dict(zip(names, sizes))} has {math.prod(sizes)} devices but"
        f" {num_devices} are available",
        "set one axis to -1 or make the product equal the device count",
    )
  return MeshSpec(names, tuple(sizes))


def _check_weights(config, dotted: str, names: list[str]) -> None:
  weights = _get(config, dotted)
  if weights is None:
    return
  weights = dict(weights)
  for name, w in weights.items():
    if name not in names:
      raise ConfigError(
          f"{dotted}.{name}", f"unknown source {name!r}", f"use one of {names}"
      )
    if (
        isinstance(w, bool)
        or not isinstance(w, (int, float))
        or not math.isfinite(w)
        or w < 0
    ):
      raise ConfigError(
          f"{dotted}.{name}",
          f"weight {w!r} is not a finite non-negative number",
          "give weights >= 0",
      )
  if sum(weights.values()) <= 0:
    raise ConfigError(dotted, "all weights are zero", "give a positive weight")


def validate(
    config: ml_collections.ConfigDict, num_devices: int | None = None
) -> None:
  """Checks types, ranges and cross-field consistency of a pipeline config.

  Runs before any expensive work. Checks that need devices (mesh size, batch
  divisibility) run when `num_devices` is given.

  Args:
    config: the full pipeline config (see configs/demo.py for the schema).
    num_devices: the global device count, or None to skip device checks.

  Raises:
    ConfigError: naming the first offending field and the fix.
  """
  _check_int(config, "seed", minimum=0)
  # Model.
  for key in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads"):
    _check_int(config, f"model.{key}")
  _check_int(config, "model.head_dim")
  _check_int(config, "model.d_ff")
  if config.model.n_heads % config.model.n_kv_heads:
    raise ConfigError(
        "model.n_kv_heads",
        f"{config.model.n_kv_heads} does not divide n_heads="
        f"{config.model.n_heads}",
        "use a divisor of n_heads (grouped-query attention)",
    )
  _check_choice(config, "model.dtype", ("float32", "bfloat16"))
  _check_choice(config, "model.param_dtype", ("float32", "bfloat16"))
  # Data.
  sources = list(_get(config, "data.sources").keys())
  if not sources:
    raise ConfigError("data.sources", "no sources are defined", "add sources")
  _check_int(config, "data.seq_len", minimum=8)
  candidates = list(_get(config, "data.candidates"))
  if len(candidates) < 2:
    raise ConfigError(
        "data.candidates", "need at least 2 candidates", "list >= 2 sources"
    )
  for name in candidates:
    if name not in sources:
      raise ConfigError(
          "data.candidates",
          f"candidate {name!r} is not a source",
          f"use names from data.sources: {sources}",
      )
  if len(set(candidates)) != len(candidates):
    raise ConfigError("data.candidates", "has duplicates", "list each once")
  if config.data.general not in candidates:
    raise ConfigError(
        "data.general",
        f"{config.data.general!r} is not in data.candidates",
        "name the general-pool candidate",
    )
  _check_float(config, "data.beta", 0.0, 1.0)
  _check_float(config, "data.max_epochs", 0.0)
  _check_choice(config, "data.on_overrun", ("error", "warn"))
  # Training stages.
  _check_int(config, "train.global_batch_size")
  _check_int(config, "train.grad_accum_steps")
  if config.train.global_batch_size % config.train.grad_accum_steps:
    raise ConfigError(
        "train.grad_accum_steps",
        f"does not divide global_batch_size={config.train.global_batch_size}",
        "use a divisor of the global batch size",
    )
  _check_float(config, "optim.peak_lr", 0.0)
  _check_float(config, "optim.min_lr_ratio", 0.0, 1.0)
  _check_float(config, "optim.weight_decay", 0.0)
  _check_float(config, "optim.clip_norm", 0.0)
  _check_int(config, "optim.warmup_steps", minimum=0)
  for stage in ("base", "components", "final"):
    _check_int(config, f"{stage}.tokens")
  budgets = list(_get(config, "components.budgets"))
  for i, b in enumerate(budgets):
    if (
        not isinstance(b, (int, float))
        or b <= 0
        or b > config.components.tokens
    ):
      raise ConfigError(
          f"components.budgets[{i}]",
          f"{b!r} is not in (0, components.tokens={config.components.tokens}]",
          "list token budgets within the component run",
      )
  _check_weights(config, "data.pretrain_mixture", sources)
  # Search.
  _check_choice(config, "search.sampler", ("demix", "uniform"))
  _check_int(config, "search.pool_size", minimum=8)
  _check_int(config, "search.n_init", minimum=2)
  _check_int(config, "search.rounds", minimum=1)
  _check_choice(
      config, "search.surrogate", ("lightgbm", "ridge", "ensemble", "auto")
  )
  _check_choice(
      config,
      "merge.method",
      (
          "linear",
          "task_arithmetic",
          "ties",
          "dare_linear",
          "dare_ties",
          "breadcrumbs",
          "slerp",
          "multislerp",
      ),
  )
  _check_int(config, "merge.chunk_size")
  _check_choice(config, "search.method", ("surrogate", "gradient"))
  for name in config.search.domain_weights:
    if name not in ("general", "code", "math"):
      raise ConfigError(
          f"search.domain_weights.{name}",
          "unknown domain",
          "use general, code or math",
      )
  # Devices.
  if num_devices is not None:
    mesh = resolve_mesh_shape(dict(config.mesh.axes), num_devices)
    dp = 1
    for name, size in zip(mesh.axis_names, mesh.shape):
      if name in ("data", "fsdp"):
        dp *= size
    micro = config.train.global_batch_size // config.train.grad_accum_steps
    if micro % dp:
      raise ConfigError(
          "train.global_batch_size",
          f"micro-batch {micro} (global_batch_size / grad_accum_steps) is not"
          f" divisible by the {dp} data-parallel devices of mesh"
          f" {dict(zip(mesh.axis_names, mesh.shape))}",
          f"use a global batch that is a multiple of {dp * config.train.grad_accum_steps}",
      )
