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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
