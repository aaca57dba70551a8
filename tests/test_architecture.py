"""Architecture checks: no import cycles, no oversized modules, no reach-ins.

The import graph is read from the source (ast), every `import` statement
counted, also those inside functions: a cycle through a lazy import is still
two modules that cannot be understood one after the other.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
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
