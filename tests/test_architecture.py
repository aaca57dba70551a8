"""Architecture checks: no import cycles, no oversized modules, no reach-ins,
no alias re-exports, no references to files outside the repository.

The import graph is read from the source (ast), every `import` statement
counted, also those inside functions: a cycle through a lazy import is still
two modules that cannot be understood one after the other.
"""

import ast
import io
import pathlib
import re
import tokenize

import pytest

from tests.kit import ROOT

PKG = ROOT / "demix_jax"
MAX_LINES = 500


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in sorted(PKG.rglob("*.py")):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(parts)] = path
  return out


def import_graph() -> dict[str, set[str]]:
  mods = _modules()
  graph = {m: set() for m in mods}
  for mod, path in mods.items():
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
      targets = []
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        for a in node.names:
          sub = f"{node.module}.{a.name}"
          targets.append(sub if sub in mods else node.module)
      for t in targets:
        if t in mods and t != mod:
          graph[mod].add(t)
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """A cycle as a list of modules (first == last), or None."""
  state, stack = {}, []

  def visit(m):
    state[m] = 1
    stack.append(m)
    for n in sorted(graph[m]):
      if state.get(n) == 1:
        return stack[stack.index(n) :] + [n]
      if n not in state:
        found = visit(n)
        if found:
          return found
    stack.pop()
    state[m] = 2
    return None

  for m in sorted(graph):
    if m not in state:
      found = visit(m)
      if found:
        return found
  return None


def test_cycle_finder_finds_a_cycle():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  cycle = find_cycle(graph)
  assert cycle is not None and cycle[0] == cycle[-1]
  assert set(cycle) == {"a", "b", "c"}
  assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
  cycle = find_cycle(import_graph())
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_library_does_not_import_the_edge():
  """Only the edge (main, pipeline, stages, workspace, spec) reads configs."""
  edge = {"demix_jax.main", "demix_jax.pipeline", "demix_jax.workspace"}
  edge |= {"demix_jax.guards", "demix_jax.aot.__main__", "demix_jax.export"}
  edge |= {
      m
      for m in import_graph()
      if m.startswith(("demix_jax.stages", "demix_jax.workspace"))
  }
  for mod, deps in import_graph().items():
    if mod in edge or mod.startswith("demix_jax.spec"):
      continue
    bad = sorted(d for d in deps if d in edge or d.startswith("demix_jax.spec"))
    assert not bad, f"{mod} imports the pipeline edge {bad}"


@pytest.mark.parametrize(
    "path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_module_size(path):
  n = len(path.read_text().splitlines())
  assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines"


def test_no_private_members_across_modules():
  """`obj._name` on another module's object (self/cls excepted)."""
  offenders = []
  for path in sorted(PKG.rglob("*.py")):
    tree = ast.parse(path.read_text())
    local_names = {
        n.name
        for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
    }
    for node in ast.walk(tree):
      if not isinstance(node, ast.Attribute):
        continue
      attr = node.attr
      if not attr.startswith("_") or attr.startswith("__"):
        continue
      base = node.value
      if isinstance(base, ast.Name) and base.id in ("self", "cls", "super"):
        continue
      if attr in local_names:
        continue
      offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} .{attr}")
  # os._exit is the standard library's documented immediate exit, not a
  # private member (main.py leaves through it after an error message).
  allowed = {"._exit"}
  offenders = [o for o in offenders if o.rsplit(" ", 1)[1] not in allowed]
  assert not offenders, "\n".join(offenders)


# ------------------------------------------------------------ alias layers
# An alias re-export: a module-level name bound to an object that another
# demix_jax module defines, kept so that callers can reach it through this
# module. Precisely, in module A, a name N bound either by an assignment
# whose value is nothing but that object (`N = other_module.N`,
# `N = imported_name`) or by `from demix_jax.x import N` (N not a module),
# where N is not used in A itself, or where another file of the repository
# (demix_jax/, tests/, bench/) reaches N through A (`from A import N`,
# `a.N` with `a` bound to A). A shorthand used only inside A is not one.
# Package __init__ files are exempt: they are a package's face (the curated
# `dx` namespace resolves its names lazily from strings and has no alias).
# Modules allowed to re-export another module's names (none).
ALIAS_ALLOWED: set[str] = set()


def _module_names(tree: ast.Module, mods) -> tuple[dict[str, str], dict]:
  """{local name: demix_jax module it is bound to}, {from-imported name:
  (module, line)} of a file's top-level imports."""
  modules, names = {}, {}
  for node in tree.body:
    if isinstance(node, ast.Import):
      for a in node.names:
        if a.name.startswith("demix_jax") and a.asname:
          modules[a.asname] = a.name
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
        "demix_jax"
    ):
      for a in node.names:
        full = f"{node.module}.{a.name}"
        if full in mods:
          modules[a.asname or a.name] = full
        else:
          names[a.asname or a.name] = (node.module, node.lineno)
  return modules, names


def alias_candidates(source: str, mods) -> dict[str, tuple[int, str, bool]]:
  """{name: (line, what, used here)} of a module's possible aliases."""
  tree = ast.parse(source)
  modules, names = _module_names(tree, mods)
  used = {
      n.id
      for n in ast.walk(tree)
      if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
  }
  out = {}
  for name, (module, line) in names.items():
    out[name] = (line, f"from {module} import {name}", name in used)
  for node in tree.body:
    if not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
      continue
    value = node.value
    root = value
    while isinstance(root, ast.Attribute):
      root = root.value
    if not isinstance(root, ast.Name) or not (
        (isinstance(value, ast.Attribute) and root.id in modules)
        or (isinstance(value, ast.Name) and root.id in names)
    ):
      continue
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    for t in targets:
      if isinstance(t, ast.Name):
        what = f"{t.id} = {ast.unparse(value)}"
        out[t.id] = (node.lineno, what, t.id in used)
  return out


def reached_through(source: str, mods) -> set[tuple[str, str]]:
  """(module, name) pairs a file reaches as `module.name` or imports."""
  tree = ast.parse(source)
  modules, names = _module_names(tree, mods)
  out = {(module, name) for name, (module, _) in names.items()}
  for node in ast.walk(tree):
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
      if node.value.id in modules:
        out.add((modules[node.value.id], node.attr))
  return out


def alias_reexports(sources: dict[str, str]) -> list[str]:
  """`path:line what` of every alias re-export among {path: source}."""
  mods = {
      ".".join(pathlib.PurePath(p).with_suffix("").parts): p for p in sources
  }
  reached = set()
  for src in sources.values():
    reached |= reached_through(src, mods)
  found = []
  for module, path in mods.items():
    if not module.startswith("demix_jax.") or path.endswith("__init__.py"):
      continue
    for name, (line, what, used) in alias_candidates(
        sources[path], mods
    ).items():
      if not used or (module, name) in reached:
        found.append(f"{path}:{line} {what}")
  return sorted(found)


def test_alias_finder_finds_aliases():
  lib = (
      "from demix_jax.training import step as step_lib\n"
      "from demix_jax.training.config import TrainConfig\n"
      "from demix_jax.merging.nll import row_nll\n"
      "from typing import Any\n"
      "batch_loss = step_lib.batch_loss\n"
      "Config = TrainConfig\n"
      "Params = Any\n"
      "SIZES = tuple(step_lib.BATCH_KEYS)\n"
      "short = step_lib.state_layout\n"
      "def f(x: Config):\n"
      "  return batch_loss(x), short(x)\n"
  )
  user = (
      "from demix_jax.training import trainer\n"
      "from demix_jax.training.trainer import Config\n"
      "trainer.batch_loss(1)\n"
  )
  sources = {
      "demix_jax/training/trainer.py": lib,
      "demix_jax/training/step.py": "",
      "demix_jax/training/config.py": "",
      "demix_jax/merging/nll.py": "",
      "tests/test_x.py": user,
  }
  got = alias_reexports(sources)
  # Reached from elsewhere, or not used here; `short` is a local shorthand.
  assert got == [
      "demix_jax/training/trainer.py:3 from demix_jax.merging.nll import"
      " row_nll",
      "demix_jax/training/trainer.py:5 batch_loss = step_lib.batch_loss",
      "demix_jax/training/trainer.py:6 Config = TrainConfig",
  ], got


def _sources(*tops: str) -> dict[str, str]:
  return {
      str(p.relative_to(ROOT)): p.read_text()
      for top in tops
      for p in sorted((ROOT / top).rglob("*.py"))
  }


def test_no_alias_reexports():
  found = alias_reexports(_sources("demix_jax", "tests", "bench"))
  offenders = [f for f in found if f.split(":")[0] not in ALIAS_ALLOWED]
  assert not offenders, "import these from where they are defined:\n" + (
      "\n".join(offenders)
  )


# ----------------------------------------------- files outside the repository
# Comments and docstrings may cite only what a user of the repository has:
# a Markdown file they name must exist in it (by path from the root, or by
# a file name the repository has), and none may point outside it.
SCANNED = ("demix_jax", "configs", "tests", "bench")
# Markdown files the pipeline writes (named in docstrings as outputs).
WRITTEN = {"report.md", "table.md", "study.md", "sweep.md"}
_MD = re.compile(r"(?<![\w/.-])((?:\.\./)*[\w.-]+(?:/[\w.-]+)*\.md)\b")
# A path that climbs out of the repository: a parent step, then a name.
_OUTSIDE = re.compile(r"(?<![\w.])\.\./[A-Za-z_][\w.-]*")


def _comments_and_docstrings(source: str) -> list[tuple[int, str]]:
  out = []
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type == tokenize.COMMENT:
      out.append((tok.start[0], tok.string))
  for node in ast.walk(ast.parse(source)):
    if isinstance(
        node,
        (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef),
    ):
      doc = ast.get_docstring(node, clean=False)
      if doc:
        line = node.body[0].lineno
        out.append((line, doc))
  return out


def outside_references(source: str, repo_files: set[str]) -> list[str]:
  """`line reference` for every file outside the repo a comment names."""
  names = {f.rsplit("/", 1)[-1] for f in repo_files}
  found = []
  for line, text in _comments_and_docstrings(source):
    for m in _OUTSIDE.finditer(text):
      found.append(f"{line} {m.group(0)}")
    for m in _MD.finditer(text):
      ref = m.group(1)
      if ref.startswith("../") or not (
          ref in repo_files or ref in names or ref in WRITTEN
      ):
        found.append(f"{line} {ref}")
  return found


def _repo_files() -> set[str]:
  skip = (".git", ".venv", "node_modules")
  return {
      str(p.relative_to(ROOT))
      for p in ROOT.rglob("*")
      if p.is_file() and not any(s in p.parts for s in skip)
  }


def test_reference_finder_finds_outside_files():
  repo = {"README.md", "docs/interfaces.md"}
  src = (
      '"""See README.md and docs/interfaces.md; private_notes.md P1."""\n'
      "# notes/digest.md 2.7, and ../elsewhere/DESIGN.md\n"
      "x = 'private_notes.md in a plain string is not a comment'\n"
      "def f():\n"
      '  """Writes report.md; notes in interfaces.md."""\n'
  )
  got = outside_references(src, repo)
  assert got == [
      "2 ../elsewhere",
      "2 notes/digest.md",
      "2 ../elsewhere/DESIGN.md",
      "1 private_notes.md",
  ], got


@pytest.mark.parametrize("top", SCANNED)
def test_no_references_to_files_outside_the_repo(top):
  repo = _repo_files()
  offenders = []
  for path in sorted((ROOT / top).rglob("*.py")):
    offenders += [
        f"{path.relative_to(ROOT)}:{r}"
        for r in outside_references(path.read_text(), repo)
    ]
  assert not offenders, (
      "cite files of this repository (facts the code needs go in docs/):\n"
      + "\n".join(offenders)
  )
