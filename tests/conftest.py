"""Test setup: 4 fake CPU devices, set before JAX starts its backend.

With more fake devices than cores, XLA:CPU collectives can deadlock when
steps are dispatched back to back (docs/platform_notes.md, cpu-deadlock);
the trainer blocks on every step on CPU, and tests keep meshes small.
"""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
# CPU only, also where libtpu is installed (CI installs requirements-tpu.txt
# for tests/test_tpu_compile.py): without it every process would first try
# to start a TPU backend, printing libtpu's warnings into the stderr the
# tests read. The TPU compile test drops it for its own subprocess.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keep TF (pulled in by seqio / clu writers) off any accelerator.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

# The repository root on sys.path, so that `tests.kit` (and demix_jax from
# this checkout) import; tests read the root as tests.kit.ROOT.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

import pytest  # noqa: E402  (after the environment above)

from tests import kit  # noqa: E402


@pytest.fixture
def cli():
  """Runs the CLI in a subprocess: `cli("--config=...", "--workdir=...")`
  (see tests.kit.run_cli for the options)."""
  return kit.run_cli


@pytest.fixture(scope="session")
def runlocal_run(tmp_path_factory) -> kit.TrainedRun:
  """One finished runlocal pipeline (`make demo` on the tiny twin) per
  test session, trained the first time a test asks for it. Read it only;
  a test that writes into a workdir works on a `kit.copy_run` of it."""
  return kit.train_runlocal(tmp_path_factory.mktemp("runlocal"))
