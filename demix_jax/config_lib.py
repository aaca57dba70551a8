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
import difflib
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
  """Reads a plain config dict by dotted path; every error names the field.

  It remembers what was read, so that after a whole config was read
  `check_all_read` can refuse the keys nothing read: a misspelled optional
  field in a config file would otherwise be ignored without a word. A
  value read whole (by `get` or `mapping`) counts with everything under
  it: whoever reads a mapping checks its keys (the libraries' `from_dict`,
  source names, domain names).
  """

  def __init__(self, config: Mapping[str, Any]):
    self.config = config
    self._read: set[str] = set()

  def get(self, dotted: builtins.str) -> Any:
    node: Any = self.config
    parts = dotted.split(".")
    for i, part in enumerate(parts):
      if not isinstance(node, Mapping) or part not in node:
        near = _closest(part, node) if isinstance(node, Mapping) else None
        hint = ""
        if near is not None:
          hint = f" (the config has {'.'.join(parts[:i] + [near])!r})"
        raise ConfigError(dotted, f"is missing{hint}", f"add config.{dotted}")
      node = node[part]
    self._read.add(dotted)
    return node

  def optional(self, dotted: builtins.str) -> Any:
    """The value at `dotted`, or None if absent; the caller reads it next."""
    node: Any = self.config
    for part in dotted.split("."):
      if not isinstance(node, Mapping) or part not in node:
        return None
      node = node[part]
    return node

  def skip(self, dotted: builtins.str) -> None:
    """Counts a section that is switched off as read: its keys are known."""
    self._read.add(dotted)

  def _known(self) -> set[str]:
    """The paths read, and every section above one."""
    out = set(self._read)
    for p in self._read:
      parts = p.split(".")
      out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return out

  def unread(self) -> list[str]:
    """Dotted paths of the config that nothing has read, outermost first.

    A section nothing reads at all is one path (`searhc`, not each key
    under it), so that its name is what gets matched against known names.
    """
    out = []
    above = self._known() - self._read

    def walk(node: Mapping[str, Any], prefix: str) -> None:
      for key, value in node.items():
        path = f"{prefix}{key}"
        if path in self._read:
          continue
        if isinstance(value, Mapping) and value and path in above:
          walk(value, path + ".")
        else:
          out.append(path)

    walk(self.config, "")
    return out

  def check_all_read(self) -> None:
    """Raises ConfigError for the first key nothing read, with a near name.

    Call it after the whole config was read (demix_jax.spec.resolve does).
    """
    unread = self.unread()
    if not unread:
      return
    path = unread[0]
    parent, _, key = path.rpartition(".")
    known = self._known()
    siblings = {
        p.rpartition(".")[2] for p in known if p.rpartition(".")[0] == parent
    }
    near = difflib.get_close_matches(key, sorted(siblings), n=1, cutoff=0.6)
    guess: builtins.str | None
    if near:
      guess = f"{parent}.{near[0]}" if parent else near[0]
    else:
      whole = difflib.get_close_matches(path, sorted(known), n=1)
      guess = whole[0] if whole else None
    more = f" ({len(unread) - 1} more unknown)" if len(unread) > 1 else ""
    fix = "remove it"
    if guess:
      fix = f"did you mean config.{guess}? Rename it, or remove it"
    raise ConfigError(
        path, f"is not a known config field: nothing reads it{more}", fix
    )

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


def _closest(key: str, node: Mapping[str, Any]) -> str | None:
  """The key of `node` nearest to `key` (a likely typo), if any is near."""
  names = [str(k) for k in node if k != key]
  near = difflib.get_close_matches(key, names, n=1, cutoff=0.8)
  return near[0] if near else None


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
