"""docs/paper_settings.md against the resolved paper configs.

Every row of the settings table names a RunSpec field, its value in the
paper and in each config; the configs are resolved here and compared, and
where the config deliberately differs from the paper the row's override is
applied and must restore the paper's value.
"""

import ast
import dataclasses
import pathlib
import re

import pytest

import demix_jax as dx

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "paper_settings.md"
CONFIGS = ("qwen3_1p7b", "qwen3_8b")
_LITERAL = re.compile(r"`([^`]*)`")
_OVERRIDE = re.compile(r"`--config\.([\w.]+)=([^`]+)`")


@dataclasses.dataclass(frozen=True)
class Row:
  setting: str
  field: str
  paper: tuple  # () not stated; one value for both configs; or (1.7B, 8B)
  here: dict  # config name -> value
  note: str


def _cells(line: str) -> list[str]:
  return [c.strip() for c in line.strip().strip("|").split("|")]


def _values(cell: str) -> tuple:
  return tuple(ast.literal_eval(v) for v in _LITERAL.findall(cell))


def rows() -> list[Row]:
  lines = DOC.read_text().splitlines()
  start = lines.index("## Settings")
  table = [line for line in lines[start:] if line.startswith("|")]
  header = _cells(table[0])
  assert header == [
      "Setting",
      "Paper / official code",
      "Source",
      "Field",
      "Paper",
      "1.7B",
      "8B",
      "Switch / note",
  ], header
  out = []
  for line in table[2:]:
    c = _cells(line)
    assert len(c) == len(header), line
    field = _LITERAL.findall(c[3])
    here = {}
    for name, cell in zip(CONFIGS, (c[5], c[6])):
      v = _values(cell)
      assert len(v) <= 1, line
      if v:
        here[name] = v[0]
    out.append(Row(c[0], field[0] if field else "", _values(c[4]), here, c[7]))
  return out


def _get(spec, dotted: str):
  node = spec
  for part in dotted.split("."):
    node = node[part] if isinstance(node, dict) else getattr(node, part)
  return node


def _plain(v):
  if isinstance(v, (list, tuple)):
    return tuple(_plain(x) for x in v)
  if isinstance(v, dict):
    return {k: _plain(x) for k, x in v.items()}
  return v


def _resolve(name: str, overrides=()):
  config = dx.load_config(name)
  for dotted, text in overrides:
    *parents, leaf = dotted.split(".")
    node = config
    for p in parents:
      node = node[p]
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    with node.unlocked() if hasattr(node, "unlocked") else _null():
      node[leaf] = value
  return dx.resolve(config)


class _null:

  def __enter__(self):
    return self

  def __exit__(self, *a):
    return False


@pytest.fixture(scope="module")
def specs():
  return {name: _resolve(name) for name in CONFIGS}


def test_table_has_the_paper_settings():
  names = {r.setting for r in rows()}
  for want in (
      "component peak LR",
      "component schedule",
      "general fraction beta",
      "prior",
      "caps",
      "component budgets",
      "final average",
      "LightGBM learning rate",
      "objective",
      "benchmarks",
      "final run",
      "reference runs",
  ):
    assert want in names, want


@pytest.mark.parametrize("row", rows(), ids=lambda r: r.setting)
def test_row_matches_the_configs(row, specs):
  if not row.field:
    assert row.note.startswith(
        "not a field"
    ), f"{row.setting}: a row without a field must say why"
    return
  assert set(row.here) == set(CONFIGS), f"{row.setting}: give both values"
  for i, name in enumerate(CONFIGS):
    got = _plain(_get(specs[name], row.field))
    assert got == _plain(row.here[name]), (
        f"{name}: {row.field} is {got!r}, docs/paper_settings.md says"
        f" {row.here[name]!r}"
    )
    if not row.paper:
      assert row.note, f"{row.setting}: not in the paper, say whose it is"
      continue
    paper = row.paper[0] if len(row.paper) == 1 else row.paper[i]
    if _plain(paper) == got:
      continue
    # A deliberate difference: the row's override restores the paper's.
    overrides = _OVERRIDE.findall(row.note)
    assert overrides, (
        f"{name}: {row.field} = {got!r} differs from the paper's"
        f" {paper!r} and the row gives no --config override"
    )
    restored = _plain(_get(_resolve(name, overrides), row.field))
    assert restored == _plain(paper), (name, row.field, restored, paper)


def test_component_lr_is_the_papers_not_the_demos():
  # The demo's components train at 3e-3 (its runs are short); the paper's
  # 52B-token components must not inherit that.
  for name in CONFIGS:
    spec = _resolve(name)
    assert spec.component_optim.peak_lr == pytest.approx(3e-4)
    assert spec.component_optim.min_lr_ratio == pytest.approx(0.2)
  assert _resolve("demo").component_optim.peak_lr == pytest.approx(3e-3)
