"""The compile check: steps lower and compile on fake devices, never run.

The CLI runs in a subprocess because it must set the fake-device count
before JAX starts (this test process already has its own devices).
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _aot(*args, timeout=600):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # the CLI sets the device count itself
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run(
      [sys.executable, "-m", "demix_jax.aot", *args],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=timeout,
  )
  return proc


def _summary(proc):
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _check_positive(rep, mesh):
  assert rep["mesh"] == mesh
  assert rep["backend"] == "cpu"
  assert rep["argument_bytes"] > 0
  assert rep["temp_bytes"] > 0
  assert rep["total_bytes"] > 0
  assert rep["flops"] is None or rep["flops"] > 0


def test_parse_mesh():
  from demix_jax import aot  # pylint: disable=g-import-not-at-top

  assert aot.parse_mesh("data:8,fsdp:8") == {"data": 8, "fsdp": 8}
  assert list(aot.parse_mesh("fsdp:2, data:-1")) == ["fsdp", "data"]
  with pytest.raises(ValueError, match="name:size"):
    aot.parse_mesh("data8")


@pytest.mark.slow
def test_runlocal_steps_compile():
  s = _summary(
      _aot("--config=configs/demo.py:runlocal", "--devices=4", "--hbm_gb=16")
  )
  mesh = {"data": 4, "fsdp": 1, "tensor": 1}
  for name in ("train", "merge"):
    _check_positive(s[name], mesh)
    assert s[name]["fits"]
  # The train step donates params and optimizer state: they alias outputs.
  assert s["train"]["alias_bytes"] > 0
  assert s["cpu_indicative_only"]


@pytest.mark.slow
def test_qwen3_1p7b_train_step_compiles_on_a_small_mesh():
  # The real model at a tiny batch (4 x 128) on 4 fake devices, FSDP 4.
  s = _summary(
      _aot(
          "--config=configs/qwen3_1p7b.py",
          "--mesh=data:1,fsdp:4,tensor:1",
          "--devices=4",
          "--global_batch=4",
          "--seq_len=128",
          "--steps=train",
          "--hbm_gb=95",
      )
  )
  rep = s["train"]
  _check_positive(rep, {"data": 1, "fsdp": 4, "tensor": 1})
  # ~1.7B fp32 params + 2 Adam moments, a quarter per device (FSDP 4):
  # about 3 x 1.7e9 x 4 B / 4 = 5.1e9 B of arguments, minus nothing big.
  assert 4.0e9 < rep["argument_bytes"] < 6.5e9
  assert "merge" not in s


@pytest.mark.slow
def test_hbm_check_fails_a_too_small_device():
  proc = _aot(
      "--config=configs/demo.py:runlocal",
      "--devices=2",
      "--steps=train",
      "--hbm_gb=0.0001",
  )
  assert proc.returncode == 1
  assert "DOES NOT FIT" in proc.stdout
  assert (
      json.loads(proc.stdout.strip().splitlines()[-1])["train"]["fits"] is False
  )
