"""docs/interfaces.md lists exactly the fields the spec and result types have.

The types are read, not listed here: every dataclass defined in a module of
`demix_jax.spec` and in `demix_jax.stages.results` must appear in the page
as `Name(field, field: type, ...)` (RunSpec: one table row per field), and
the names written there must be its `dataclasses.fields`, no more and no
fewer. Result types inherit `Result`'s fields, which the page states once.
"""

import dataclasses
import importlib
import pkgutil
import re

import pytest

import demix_jax.spec
from demix_jax.stages import results
from tests.kit import ROOT

DOC = ROOT / "docs" / "interfaces.md"
_CLOSE = {"(": ")", "[": "]", "{": "}"}


def _dataclasses(module):
  return [
      v
      for v in vars(module).values()
      if isinstance(v, type)
      and dataclasses.is_dataclass(v)
      and v.__module__ == module.__name__
  ]


def spec_types():
  mods = [demix_jax.spec] + [
      importlib.import_module(f"demix_jax.spec.{m.name}")
      for m in pkgutil.iter_modules(demix_jax.spec.__path__)
  ]
  return sorted({t for m in mods for t in _dataclasses(m)}, key=str)


def result_types():
  return sorted(_dataclasses(results), key=str)


def documented_fields(text: str, name: str) -> list[str] | None:
  """The leading names of the top-level entries of `Name(...)` in text."""
  m = re.search(rf"(?<![\w.]){name}\(", text)
  if not m:
    return None
  stack, entry, entries = ["("], "", []
  for ch in text[m.end() :]:
    if ch in _CLOSE:
      stack.append(ch)
    elif stack and ch == _CLOSE[stack[-1]]:
      stack.pop()
      if not stack:
        break
    if ch == "," and len(stack) == 1:
      entries.append(entry)
      entry = ""
    else:
      entry += ch
  entries.append(entry)
  names = [re.match(r"\s*([A-Za-z_]\w*)", e) for e in entries]
  return [n.group(1) for n in names if n]


def runspec_rows(text: str) -> list[str]:
  """The field names in the first column of the RunSpec table."""
  section = text.split("## RunSpec", 1)[1].split("\n## ", 1)[0]
  out = []
  for line in section.splitlines():
    cells = line.split("|")
    if len(cells) > 2 and cells[1].strip() not in ("field", "---"):
      out += re.findall(r"`(\w+)`", cells[1])
  return out


def _own_fields(cls) -> set[str]:
  names = {f.name for f in dataclasses.fields(cls)}
  if issubclass(cls, results.Result) and cls is not results.Result:
    names -= {f.name for f in dataclasses.fields(results.Result)}
  return names


@pytest.mark.parametrize(
    "cls",
    [t for t in spec_types() if t.__name__ != "RunSpec"]
    + [t for t in result_types() if t is not results.Result],
    ids=lambda t: t.__name__,
)
def test_documented_fields_are_the_dataclass_fields(cls):
  text = DOC.read_text()
  got = documented_fields(text, cls.__name__)
  assert got is not None, f"{DOC.name} has no `{cls.__name__}(...)` entry"
  want = _own_fields(cls)
  assert len(got) == len(set(got)), (cls.__name__, got)
  missing, stale = sorted(want - set(got)), sorted(set(got) - want)
  assert (
      not missing and not stale
  ), f"{DOC.name}: {cls.__name__} lacks {missing}, lists unknown {stale}"


def test_runspec_table_rows_are_its_fields():
  rows = runspec_rows(DOC.read_text())
  want = {f.name for f in dataclasses.fields(demix_jax.spec.RunSpec)}
  assert sorted(rows) == sorted(want)


def test_every_result_has_the_base_fields_stated():
  text = DOC.read_text()
  line = re.search(r"Every result\s+has (.*?)\.", text, re.S)
  assert line, "the page does not say which fields every result has"
  stated = set(re.findall(r"`(\w+)`", line.group(1)))
  assert stated == {f.name for f in dataclasses.fields(results.Result)}


def test_the_parser_catches_a_missing_and_a_stale_field():
  text = "`TokenizerSpec(path, vocab_size: int, sample_chars, extra (x, y))`"
  assert documented_fields(text, "TokenizerSpec") == [
      "path",
      "vocab_size",
      "sample_chars",
      "extra",
  ]
  assert documented_fields("`DataSpec` only", "DataSpec") is None
  rows = "## RunSpec\n| field | t |\n|---|---|\n| `seed`, `stages` | x |\n"
  assert runspec_rows(rows) == ["seed", "stages"]
