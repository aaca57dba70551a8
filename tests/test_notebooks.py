"""The Colab notebooks: committed clean, and runnable top to bottom.

The fast tests check what is committed: the three notebooks, no outputs or
execution counts (`notebooks/strip_outputs.py` strips them), an "Open in
Colab" badge and the runtime first, then an install cell that works in
Colab and in a local checkout. The slow test executes every notebook
headless with nbclient, in order, sharing one workdir root through
DEMIX_NOTEBOOK_WORKDIR so that notebook 02 reuses the components notebook
01 trained (each still runs standalone: missing stages are run there).
"""

import importlib.util
import os
import sys
import time

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = (
    "01_quickstart.ipynb",
    "02_mixture_landscape.ipynb",
    "03_your_data.ipynb",
)
COLAB = "https://colab.research.google.com/github/YOUR_ORG/demix_jax/blob/main"
CELL_TIMEOUT_S = 900


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
  assert "from demix_jax import pipeline" in src or "stages" in src


@pytest.fixture(scope="module")
def shared_workdir(tmp_path_factory):
  return tmp_path_factory.mktemp("notebooks")


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
