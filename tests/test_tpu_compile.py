"""The paper's setting compiled by XLA:TPU for a real topology, and fitting.

`python -m demix_jax.aot --config=configs/qwen3_1p7b.py --topology=v5p-64`
(the command launch/compile_check.sh runs; here with the default backend
made to fail, so it provably never starts one) lowers the full-shape train step
(512 x 8192, splash attention, full remat, chunked loss), the
merge-and-evaluate step (7 components, the config's chunk, eval batch of
16 rows of 8192 tokens) and the merged proxies' decoding (8 mixtures per
call, 64 rows, 7168-token prompts, a KV cache for 1024 new tokens: merge,
prefill and one 64-token decode call) on abstract values and compiles them
with XLA:TPU for the 32 compile-only chips of a v5p-64 slice. The per-device figures
are `compiled.memory_analysis()`'s. Needs libtpu (requirements-tpu.txt,
which CI installs: `make tpu-extra`); skipped only where it is absent.
Measured times are in the README.

This is not a timing test: only memory and what the shardings imply are
checked.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from configs import qwen3_1p7b
from demix_jax import models
from demix_jax import spec as spec_lib
from tests.kit import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("libtpu") is None,
        reason="needs libtpu: pip install -r requirements-tpu.txt",
    ),
]


# The CLI with the default backend made to fail (any jax.devices(),
# jax.process_count() or eager op raises): the check must take the devices
# and hosts from the topology alone, as on worker 0 of a multi-host slice,
# where starting the TPU would wait for every host.
_NO_DEFAULT_BACKEND = """
import runpy, sys
from jax._src import xla_bridge

def refuse(*args, **kwargs):
  raise RuntimeError("the default backend was started")

xla_bridge.backends = refuse
sys.argv = ["demix_jax.aot"] + sys.argv[1:]
runpy.run_module("demix_jax.aot", run_name="__main__", alter_sys=True)
"""


def test_qwen3_1p7b_train_merge_and_generation_fit_v5p_64():
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # no fake CPU devices: the topology's
  env.pop("JAX_PLATFORMS", None)  # as a user runs it
  # Not on a TPU VM here: the variables are the check's to set.
  for k in ("TPU_ACCELERATOR_TYPE", "TPU_WORKER_HOSTNAMES"):
    env.pop(k, None)
  proc = subprocess.run(
      [
          sys.executable,
          "-c",
          _NO_DEFAULT_BACKEND,
          "--config=configs/qwen3_1p7b.py",
          "--topology=v5p-64",
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=1800,
  )
  assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
  # libtpu loaded quietly: none of its start-up errors off a TPU VM.
  for noise in ("unexpected worker hostname", "could not determine TPU"):
    assert noise not in proc.stderr, proc.stderr[-3000:]
  assert "topology v5p-64: 32 devices on 8 hosts" in proc.stderr
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["topology"] == "v5p-64"
  assert out["config"] == "configs/qwen3_1p7b.py"
  assert not out["cpu_indicative_only"]
  hbm = 95 * 2**30
  mesh = {"data": 2, "fsdp": 16, "tensor": 1}
  for name in ("train", "merge", "generate_merge", "prefill", "decode"):
    st = out["steps"][name]
    assert st["backend"] == "tpu" and st["mesh"] == mesh
    assert st["hbm_bytes"] == hbm
    assert st["fits"] and 0 < st["bytes_per_device"] <= 0.9 * hbm
    assert st["temp_bytes"] > 0 and st["flops"] > 0

  # What the shardings imply (the `embed` rule shards over fsdp = 16, the
  # rest replicates over data): train holds float32 params and two AdamW
  # moments, 3 x 4 N / 16 bytes, plus the batch; merge holds the 7 stacked
  # float32 components (the linear merge does not read the base, and jit
  # drops unused arguments), 7 x 4 N / 16, plus the rows.
  n = models.num_params(spec_lib.resolve(qwen3_1p7b.get_config()).model)
  train, merge = out["steps"]["train"], out["steps"]["merge"]
  assert 3 * 4 * n / 16 <= train["argument_bytes"] < 1.05 * 3 * 4 * n / 16
  assert 7 * 4 * n / 16 <= merge["argument_bytes"] < 1.05 * 7 * 4 * n / 16
  # The donated params and optimizer state are reused for the outputs.
  assert train["alias_bytes"] >= 3 * 4 * n / 16
  # 32 mixtures per call: the config's chunk of 8 rounded up to the 32
  # devices the `mixtures` rule shards over.
  assert merge["mixtures"] == 32

  # Generation: the store stays resident beside each program and counts
  # toward fitting; the KV cache (k and v, bf16, [28 layers, 8 mixtures,
  # 64 rows, 7168 + 1024 slots, 8 kv heads, 128]) is split over the 32
  # devices by rows, donated to the decode call and read once per token.
  m = spec_lib.resolve(qwen3_1p7b.get_config()).model
  cache = 2 * m.n_layers * 8 * 64 * (7168 + 1024) * m.n_kv_heads
  cache = cache * m.head_dim * 2 / 32
  dec = out["steps"]["decode"]
  assert dec["resident_bytes"] >= 8 * 4 * n / 16  # 7 components + base
  assert dec["alias_bytes"] >= cache and dec["read_bytes"] >= cache
  assert out["steps"]["prefill"]["output_bytes"] >= cache
  # HBM bound of one 64-token call at v5p's 2765 GB/s.
  assert dec["hbm_bound_s"] == 64 * dec["read_bytes"] / 2765e9
  assert dec["step_time_bound_s"] >= dec["hbm_bound_s"]
  # The cost plan from those bounds: every stage has a figure.
  plan = out["plan"]
  assert plan["chips"] == 32 and plan["stages"]["search"]["proxies"] == 112
  for st in list(plan["stages"].values()) + list(plan["table2"].values()):
    assert 0 < st["chip_hours_bound"] <= st["chip_hours_at_mfu"]
