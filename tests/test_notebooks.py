"""The Colab notebooks: committed clean, and runnable top to bottom.

The fast tests check what is committed: the three notebooks, no outputs or
execution counts (`notebooks/strip_outputs.py` strips them), an "Open in
Colab" badge and the runtime first, then an install cell that works in
Colab and in a local checkout. The slow test executes every notebook
headless with nbclient, in order, sharing one workdir root through
DEMIX_NOTEBOOK_WORKDIR so that notebook 02 reuses the components notebook
01 trained (each still runs standalone: missing stages are run there).

The API tests read the code cells as Python (`ast`) and hold them to the
public API: `import demix_jax as dx` and only names `dx` exports, imports
of demix_jax limited to the public library modules in `PUBLIC_MODULES`,
every attribute used on those modules defined at their top level, no
private name (`_x`) anywhere and no `sys.path` edits. `test_api_check_fails`
feeds the checker the mistakes it exists for, so it cannot pass vacuously.
"""

import ast
import importlib.util
import os
import sys
import time

import nbformat
import pytest

from tests import kit
from tests.kit import ROOT

NB_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = (
    "01_quickstart.ipynb",
    "02_mixture_landscape.ipynb",
    "03_your_data.ipynb",
)
COLAB = "https://colab.research.google.com/github/YOUR_ORG/demix_jax/blob/main"
CELL_TIMEOUT_S = 900
# The library modules a notebook may import besides `demix_jax as dx`:
# public functions of these are fair game (checked against their source).
PUBLIC_MODULES = (
    "demix_jax.pipeline",
    "demix_jax.models",
    "demix_jax.report.plots",
    "demix_jax.search.gradient",
    "demix_jax.search.surrogates",
    "demix_jax.search.table",
    "demix_jax.training.metrics",
)
# What a run of each notebook must print (beyond "no cell raised").
EXPECTED_OUTPUT = {
    "01_quickstart.ipynb": (
        "config.merge.method",  # dx.resolve refused the bad value
        "Found mixture (alpha -> source weights):",  # dx.print_result
        "search result reloaded: True",  # dx.load_result
    ),
    "02_mixture_landscape.ipynb": (
        "66 mixtures scored",
        "gradient-search mixture:",
        "from_run_dirs agrees with the workspace evaluator: True",
    ),
    "03_your_data.ipynb": (
        "train tokens per source:",
        "merged proxies; objective",
    ),
}


def _load(name):
  return nbformat.read(os.path.join(NB_DIR, name), as_version=4)


def _strip_outputs():
  spec = importlib.util.spec_from_file_location(
      "strip_outputs", os.path.join(NB_DIR, "strip_outputs.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _code(nb):
  return [c.source for c in nb.cells if c.cell_type == "code"]


def _private(name: str) -> bool:
  return name.startswith("_") and not (
      name.startswith("__") and name.endswith("__")
  )


def _module_names(module: str) -> set[str]:
  """Top-level names a library module defines, read from its source."""
  spec = importlib.util.find_spec(module)
  assert spec is not None and spec.origin, module
  with open(spec.origin) as f:
    tree = ast.parse(f.read())
  names = set()
  for node in tree.body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      names.add(node.name)
    elif isinstance(node, (ast.Assign, ast.AnnAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      names.update(t.id for t in targets if isinstance(t, ast.Name))
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      names.update((a.asname or a.name).split(".")[0] for a in node.names)
  return names


def _imports(tree, bound, problems):
  """Checks the imports; fills `bound` {local name: demix_jax module}."""
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      pairs = [(a.name, a.asname) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      if node.level or not node.module:
        problems.append("relative import")
        continue
      pairs = [(f"{node.module}.{a.name}", a.asname) for a in node.names]
    else:
      continue
    for full, asname in pairs:
      if any(_private(p) for p in full.split(".")):
        problems.append(f"imports the private name {full}")
      if full.split(".")[0] != "demix_jax":
        continue
      if full == "demix_jax":
        if asname != "dx":
          problems.append("import demix_jax as dx, not as " + str(asname))
        bound["dx"] = full
      elif full in PUBLIC_MODULES and (
          asname or isinstance(node, ast.ImportFrom)
      ):
        bound[asname or full.rsplit(".", 1)[1]] = full
      else:
        problems.append(f"imports {full}: use dx.* or one of PUBLIC_MODULES")


def api_problems(source: str) -> list[str]:
  """What in a notebook's code goes around the public API (empty = fine)."""
  import demix_jax  # pylint: disable=g-import-not-at-top  # lazy: cheap

  try:
    tree = ast.parse(source)
  except SyntaxError as e:  # IPython magics are not used in the notebooks
    return [f"not plain Python: {e}"]
  problems, bound = [], {}
  _imports(tree, bound, problems)
  module_names = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Attribute):
      if _private(node.attr):
        problems.append(f"private name .{node.attr}")
      if (
          isinstance(node.value, ast.Name)
          and node.value.id == "sys"
          and node.attr == "path"
      ):
        problems.append("sys.path manipulation")
      if isinstance(node.value, ast.Name) and node.value.id in bound:
        module = bound[node.value.id]
        if module == "demix_jax":
          if node.attr not in demix_jax.__all__:
            problems.append(f"dx.{node.attr} is not in dx.__all__")
        else:
          if module not in module_names:
            module_names[module] = _module_names(module)
          if node.attr not in module_names[module]:
            problems.append(f"{module}.{node.attr} does not exist")
    elif isinstance(node, ast.Call) and (
        isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "setattr")
    ):
      for arg in node.args[1:2]:
        if isinstance(arg, ast.Constant) and _private(str(arg.value)):
          problems.append(f"{node.func.id} of the private name {arg.value}")
    elif isinstance(node, ast.Constant) and node.value == "PYTHONPATH":
      problems.append("PYTHONPATH manipulation")
  return problems


def test_the_three_notebooks_are_committed():
  found = sorted(f for f in os.listdir(NB_DIR) if f.endswith(".ipynb"))
  assert found == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
  nb = _load(name)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert not cell.outputs, f"{name}: run notebooks/strip_outputs.py"
      assert cell.execution_count is None, name
  assert not _strip_outputs().needs_strip(os.path.join(NB_DIR, name))


def test_strip_outputs_removes_what_a_run_adds(tmp_path):
  nb = _load(NOTEBOOKS[0])
  cell = next(c for c in nb.cells if c.cell_type == "code")
  cell.execution_count = 3
  cell.outputs = [nbformat.v4.new_output("stream", text="hi\n")]
  cell.metadata["execution"] = {"iopub.status.idle": "2026-01-01"}
  path = str(tmp_path / "run.ipynb")
  nbformat.write(nb, path)
  strip = _strip_outputs()
  assert strip.main(["--check", path]) == 1
  assert strip.main([path]) == 0
  assert strip.main(["--check", path]) == 0
  assert nbformat.read(path, as_version=4) == _load(NOTEBOOKS[0])


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_badge_runtime_and_install_cell(name):
  nb = _load(name)
  first = nb.cells[0]
  assert first.cell_type == "markdown"
  assert first.source.startswith("[![Open In Colab]")
  assert "colab-badge.svg" in first.source
  assert f"{COLAB}/notebooks/{name}" in first.source
  assert "**Runtime:** CPU" in first.source
  install = _code(nb)[0]
  for needed in (
      'git", "clone',
      '-r", "requirements.txt',
      '--no-deps", "-r", "requirements-nodeps.txt',
      '--no-deps", "-e", "."',
      "importlib.metadata.version",
      "os.chdir(ROOT)",
  ):
    assert needed in install, (name, needed)
  assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_no_training_code_in_cells(name):
  # Notebooks call the library; they do not define models or train steps.
  src = "\n".join(_code(_load(name)))
  for banned in (
      "import optax",
      "import flax",
      "jax.grad(",
      "value_and_grad",
      "def train_step",
  ):
    assert banned not in src, (name, banned)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_uses_only_the_public_api(name):
  src = "\n".join(_code(_load(name)))
  assert "import demix_jax as dx" in src, name
  assert api_problems(src) == [], name


def test_public_modules_exist():
  for module in PUBLIC_MODULES:
    assert importlib.util.find_spec(module) is not None, module


@pytest.mark.parametrize(
    "bad",
    [
        "from demix_jax import context",
        "import demix_jax.context",
        "from demix_jax import stages",
        "from demix_jax.stages import search",
        "import demix_jax.stages.search as s",
        "from demix_jax import workspace",
        "import demix_jax",
        "import demix_jax as djx",
        "from demix_jax.search.table import _MISSING",
        "import demix_jax as dx\nctx = dx.RunContext(config, workdir)",
        "import demix_jax as dx\ndx._EXPORTS",
        "from demix_jax.search import table\ntable.read_proxies_csv(p)",
        "from demix_jax import pipeline\npipeline.validate_inputs(config)",
        "ev._chunk_fn(a)",
        "stages._read_proxies(p, names)",
        "getattr(ev, '_batches')",
        "import sys\nsys.path.insert(0, ROOT)",
        "import sys\nsys.path.append('..')",
        "os.environ['PYTHONPATH'] = ROOT",
        "from .context import RunContext",
    ],
)
def test_api_check_fails(bad):
  assert api_problems(bad), bad


def test_api_check_passes_public_use():
  good = (
      "import demix_jax as dx\n"
      "from demix_jax import pipeline\n"
      "from demix_jax.search import table\n"
      "spec = dx.resolve(dx.load_config('demo:runlocal'))\n"
      "ws = pipeline.preflight(spec, 'w')\n"
      "alphas, cols, rounds = table.read_proxies('p.csv', spec.candidates)\n"
      "print(jax.__version__)\n"
  )
  assert api_problems(good) == []


@pytest.fixture(scope="module")
def shared_workdir(tmp_path_factory, runlocal_run):
  """The notebooks' workdir root; its demo_runlocal workdir (notebooks 01
  and 02) starts as a copy of the session's finished runlocal pipeline, so
  their `dx.run` cells load the saved stages (a rerun, as the notebooks
  describe) instead of training them again."""
  root = tmp_path_factory.mktemp("notebooks")
  kit.copy_run(runlocal_run.workdir, root / "demo_runlocal")
  return root


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, shared_workdir, monkeypatch):
  from nbclient import NotebookClient  # pylint: disable=g-import-not-at-top

  # The kernel inherits this environment: one CPU device (as the CLI gets
  # by default) and the shared workdir root.
  monkeypatch.setenv("DEMIX_NOTEBOOK_WORKDIR", str(shared_workdir))
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
  nb = _load(name)
  # kernel "python3" with argv "python": jupyter_client starts it with
  # sys.executable, i.e. this virtual environment's interpreter.
  client = NotebookClient(
      nb,
      timeout=CELL_TIMEOUT_S,
      kernel_name="python3",
      resources={"metadata": {"path": NB_DIR}},
  )
  t0 = time.time()
  client.execute()  # raises CellExecutionError on any cell error
  print(f"{name}: {time.time() - t0:.0f} s")
  install_out = "".join(o.get("text", "") for o in nb.cells[2].outputs)
  assert f"python: {sys.executable}" in install_out
  assert f"repository: {ROOT}" in install_out
  images = sum(
      1
      for c in nb.cells
      if c.cell_type == "code"
      for o in c.outputs
      if "image/png" in o.get("data", {})
  )
  assert images >= 2, f"{name}: expected inline plots, got {images}"
  printed = "".join(
      o.get("text", "")
      for c in nb.cells
      if c.cell_type == "code"
      for o in c.outputs
  )
  for want in EXPECTED_OUTPUT[name]:
    assert want in printed, (name, want)
