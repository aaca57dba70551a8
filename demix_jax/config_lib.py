"""Config helpers: argument parsing, validation and saving of resolved configs.

Configs live in `configs/<name>.py` and expose `get_config(arg=None)`. The
`arg` string comes after the colon in `--config=configs/demo.py:runlocal,k=v`
and is parsed by `parse_arg`. Library code never reads a ConfigDict; only
`main.py` and `pipeline.py` do, and they pass typed values down.

Validation lives in `demix_jax.spec.resolve`, which reads the whole config
once and raises `ConfigError` (defined here) with the dotted name of the
offending field and what to do.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import hashlib
import json
import math
from typing import Any, Mapping

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
    value: Any
    if "=" in part:
      key, text = part.split("=", 1)
      key, value = key.strip(), _literal(text.strip())
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


# ----------------------------------------------------------------------------
# Typed reads of a plain config dict (used by demix_jax.spec.resolve).
# ----------------------------------------------------------------------------


class Reader:
  """Reads a plain config dict by dotted path; every error names the field."""

  def __init__(self, config: Mapping[str, Any]):
    self.config = config

  def get(self, dotted: builtins.str) -> Any:
    node: Any = self.config
    for part in dotted.split("."):
      if not isinstance(node, Mapping) or part not in node:
        raise ConfigError(dotted, "is missing", f"add config.{dotted}")
      node = node[part]
    return node

  def int(self, dotted: builtins.str, minimum: int | None = 1) -> int:
    v = self.get(dotted)
    if isinstance(v, bool) or not isinstance(v, int):
      if isinstance(v, float) and v.is_integer():
        v = int(v)
      else:
        raise ConfigError(
            dotted, f"expected an integer, got {v!r}", "give an integer"
        )
    if minimum is not None and v < minimum:
      raise ConfigError(
          dotted, f"must be >= {minimum}, got {v}", f"use a value >= {minimum}"
      )
    return v

  def float(
      self,
      dotted: builtins.str,
      low: float = -math.inf,
      high: float = math.inf,
      *,
      open_low: builtins.bool = False,
      open_high: builtins.bool = False,
  ) -> float:
    v = self.get(dotted)
    return number(dotted, v, low, high, open_low, open_high)

  def bool(self, dotted: builtins.str) -> builtins.bool:
    v = self.get(dotted)
    if not isinstance(v, bool):
      raise ConfigError(dotted, f"expected True/False, got {v!r}", "use a bool")
    return v

  def str(self, dotted: builtins.str) -> builtins.str:
    v = self.get(dotted)
    if not isinstance(v, str):
      raise ConfigError(dotted, f"expected a string, got {v!r}", "use a str")
    return v

  def choice(
      self, dotted: builtins.str, choices: tuple[builtins.str, ...]
  ) -> builtins.str:
    v = self.get(dotted)
    if v not in choices:
      raise ConfigError(
          dotted, f"{v!r} is not one of {choices}", f"use one of {choices}"
      )
    return v

  def names(
      self,
      dotted: builtins.str,
      choices: tuple[builtins.str, ...],
      *,
      empty: builtins.bool = True,
  ) -> tuple[builtins.str, ...]:
    v = self.get(dotted)
    if isinstance(v, str) or not isinstance(v, (list, tuple)):
      raise ConfigError(
          dotted, f"expected a list of names, got {v!r}", "give a tuple"
      )
    for i, name in enumerate(v):
      if name not in choices:
        raise ConfigError(
            f"{dotted}[{i}]", f"{name!r} is not known", f"use one of {choices}"
        )
    if not empty and not v:
      raise ConfigError(dotted, "is empty", f"list some of {choices}")
    if len(set(v)) != len(v):
      raise ConfigError(dotted, "has duplicates", "list each name once")
    return tuple(v)

  def mapping(self, dotted: builtins.str) -> dict[builtins.str, Any]:
    v = self.get(dotted)
    if v is None:
      return {}
    if not isinstance(v, Mapping):
      raise ConfigError(dotted, f"expected a dict, got {v!r}", "give a dict")
    return dict(v)


def number(
    dotted, v, low=-math.inf, high=math.inf, open_low=False, open_high=False
) -> float:
  if isinstance(v, bool) or not isinstance(v, (int, float)):
    raise ConfigError(dotted, f"expected a number, got {v!r}", "give a number")
  lo_bad = v <= low if open_low else v < low
  hi_bad = v >= high if open_high else v > high
  if not math.isfinite(v) or lo_bad or hi_bad:
    lb, hb = "(" if open_low else "[", ")" if open_high else "]"
    rng = f"{lb}{low}, {high}{hb}"
    raise ConfigError(
        dotted, f"must be in {rng}, got {v}", f"use a value in {rng}"
    )
  return float(v)
