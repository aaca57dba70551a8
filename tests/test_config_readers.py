"""Every config field that resolves into the RunSpec has a reader.

`spec.resolve` turns configs/demo.py's ConfigDict into a RunSpec whose
sections are dataclasses defined in demix_jax/spec/. A field is read when
some module of demix_jax/ outside spec/ accesses it as an attribute
(`x.<field>`); a field nothing reads is a config knob that does nothing.
Fields that are known to be unread are listed in UNREAD with the place
that should read (or drop) them; the test fails both on a new unread field
and on a listed one that gained a reader (delete it from the list then).
"""

import ast
from collections.abc import Mapping
import dataclasses
import importlib
import pkgutil

from configs import demo
from configs import table3_small
import demix_jax.spec
from tests.kit import ROOT

PKG = ROOT / "demix_jax"
# Known gaps: the field, and what should happen to it (none today:
# report.formats and BudgetSpec.final_tokens, validated and never read,
# were removed).
UNREAD: dict[str, str] = {}


def _spec_dataclasses():
  mods = [demix_jax.spec] + [
      importlib.import_module(f"demix_jax.spec.{m.name}")
      for m in pkgutil.iter_modules(demix_jax.spec.__path__)
  ]
  return {
      v
      for m in mods
      for v in vars(m).values()
      if isinstance(v, type)
      and dataclasses.is_dataclass(v)
      and v.__module__.startswith("demix_jax.spec")
  }


def _attributes_read_outside_spec() -> set[str]:
  names = set()
  for path in PKG.rglob("*.py"):
    if (PKG / "spec") in path.parents:
      continue
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Attribute):
        names.add(node.attr)
  return names


def test_the_demo_config_resolves_into_these_sections():
  """The types checked below are the ones the demo config resolves into
  (and the Table 3 config, for its opt-in trained-proxy searches)."""
  todo = [
      demix_jax.spec.resolve(m.get_config("runlocal"), num_devices=1)
      for m in (demo, table3_small)
  ]
  reached = set()
  while todo:
    obj = todo.pop()
    if isinstance(obj, Mapping):
      todo += list(obj.values())
    elif dataclasses.is_dataclass(obj) and type(obj) not in reached:
      reached.add(type(obj))
      todo += [getattr(obj, f.name) for f in dataclasses.fields(obj)]
  spec_types = _spec_dataclasses()
  assert spec_types <= reached, sorted(t.__name__ for t in spec_types - reached)


def test_every_spec_field_has_a_reader_outside_spec():
  read = _attributes_read_outside_spec()
  unread = {
      f"{cls.__name__}.{f.name}"
      for cls in _spec_dataclasses()
      for f in dataclasses.fields(cls)
      if f.name not in read
  }
  assert unread == set(UNREAD), (
      f"read by nothing outside spec/: {sorted(unread - set(UNREAD))};"
      f" listed in UNREAD but now read: {sorted(set(UNREAD) - unread)}"
  )
