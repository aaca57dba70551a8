"""The backend check: a TPU VM whose TPU is busy must not run on the CPU.

Temporary directories stand in for /dev and /proc: a fake accelerator
device file, and fake processes whose fd links point at it.
"""

import os
import subprocess
import sys

import pytest

from demix_jax import backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def vm(tmp_path):
  """A fake TPU VM: /dev/accel0 and a /proc with two processes."""
  dev = tmp_path / "dev"
  dev.mkdir()
  (dev / "accel0").write_text("")
  (dev / "null").write_text("")
  proc = tmp_path / "proc"

  def process(pid, cmdline, *targets):
    d = proc / str(pid)
    (d / "fd").mkdir(parents=True)
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in cmdline))
    for i, t in enumerate(targets):
      os.symlink(t, d / "fd" / str(i))

  process(100, ["bash"], str(dev / "null"))
  (proc / "self").mkdir()  # not a pid: ignored
  return dev, proc, process


def _check(dev, proc, env, got, lockfile="/nonexistent/lock"):
  return backend.check_platform(
      lambda: got,
      env=env,
      dev_dir=str(dev),
      proc_dir=str(proc),
      lockfile=str(lockfile),
      exclude_pid=-1,
  )


def test_busy_tpu_names_the_holder(vm, tmp_path):
  dev, proc, process = vm
  process(
      4242, ["python3", "-m", "demix_jax.main", "--x=1"], str(dev / "accel0")
  )
  msg = _check(dev, proc, {}, "cpu")
  assert "Cloud TPU VM" in msg and str(dev / "accel0") in msg
  assert "JAX started on 'cpu', not 'tpu'" in msg
  assert "pid 4242" in msg and "python3 -m demix_jax.main --x=1" in msg
  assert "pid 100" not in msg  # /dev/null is not the TPU
  assert "JAX_PLATFORMS=cpu" in msg  # the opt-out is named
  # The same VM with the TPU started: nothing to say.
  assert _check(dev, proc, {}, "tpu") is None


def test_lock_file_and_stale_pid_are_reported(vm, tmp_path):
  dev, proc, _ = vm
  lock = tmp_path / "libtpu_lockfile"
  lock.write_text("999999")
  msg = _check(dev, proc, {}, "cpu", lockfile=lock)
  assert f"the lock file {lock} exists" in msg
  assert "pid 999999, which is gone (a stale lock)" in msg
  assert f"sudo rm -f {lock}" in msg
  assert "no process has" in msg


def test_tpu_vm_detected_from_env_and_vfio(tmp_path):
  dev = tmp_path / "dev"
  (dev / "vfio").mkdir(parents=True)
  assert backend.tpu_vm_signs({}, str(dev)) == []
  (dev / "vfio" / "vfio").write_text("")  # the control file: not a TPU
  assert backend.tpu_vm_signs({}, str(dev)) == []
  (dev / "vfio" / "0").write_text("")
  assert backend.tpu_vm_signs({}, str(dev)) == [str(dev / "vfio" / "0")]
  env = {"TPU_ACCELERATOR_TYPE": "v5p-8"}
  assert backend.tpu_vm_signs(env, str(tmp_path / "none")) == [
      "TPU_ACCELERATOR_TYPE=v5p-8"
  ]


def test_off_a_tpu_vm_anything_goes_unless_jax_platforms_names_one(tmp_path):
  dev, proc = tmp_path / "dev", tmp_path / "proc"
  dev.mkdir()
  proc.mkdir()

  def never():
    raise AssertionError("the backend was queried where nothing is expected")

  assert (
      backend.check_platform(
          never, env={}, dev_dir=str(dev), proc_dir=str(proc)
      )
      is None
  )
  # JAX_PLATFORMS is the user's choice, on or off a TPU VM.
  env = {"JAX_PLATFORMS": "cuda,cpu"}
  assert _check(dev, proc, env, "gpu") is None
  msg = _check(dev, proc, env, "cpu")
  assert "JAX_PLATFORMS=cuda,cpu" in msg and "not 'gpu'" in msg


def test_jax_platforms_cpu_runs_on_the_cpu_on_purpose(vm):
  dev, proc, _ = vm
  assert _check(dev, proc, {"JAX_PLATFORMS": "cpu"}, "cpu") is None


def test_unreadable_processes_point_at_lsof(vm, monkeypatch):
  dev, proc, _ = vm
  real = os.listdir

  def listdir(path):
    if str(path).endswith(os.path.join("100", "fd")):
      raise PermissionError(path)
    return real(path)

  monkeypatch.setattr(os, "listdir", listdir)
  msg = _check(dev, proc, {}, "cpu")
  assert "1 processes of other users could not be inspected" in msg
  assert "sudo lsof -w" in msg


def test_main_exits_2_on_a_tpu_vm_that_fell_back_to_cpu(tmp_path):
  """demix_jax.main itself: TPU VM env, CPU backend, exit 2 before work."""
  env = dict(os.environ)
  env.pop("JAX_PLATFORMS", None)  # as on a TPU VM: JAX picks
  env["TPU_ACCELERATOR_TYPE"] = "v5p-8"  # looks like a TPU VM
  env["TPU_WORKER_HOSTNAMES"] = "localhost"
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "demix_jax.main",
          "--config=configs/demo.py:runlocal",
          f"--workdir={tmp_path / 'w'}",
          "--multihost=off",
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "JAX started on 'cpu', not 'tpu'" in proc.stderr
  assert "TPU_ACCELERATOR_TYPE=v5p-8" in proc.stderr
  assert not (tmp_path / "w").exists()  # nothing was started
