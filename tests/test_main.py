"""CLI tests: the entry point runs, writes config.json and rejects bad input."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=300):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return subprocess.run(
      [sys.executable, "-m", "demix_jax.main", *args],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=timeout,
  )


def test_bad_override_fails_before_work(tmp_path):
  proc = _run(
      "--config=configs/demo.py:runlocal",
      f"--workdir={tmp_path}",
      "--config.nope=1",
  )
  assert proc.returncode != 0
  assert "nope" in proc.stderr
  assert not (tmp_path / "config.json").exists()


def test_negative_batch_names_field(tmp_path):
  proc = _run(
      "--config=configs/demo.py:runlocal",
      f"--workdir={tmp_path}",
      "--config.train.global_batch_size=-8",
  )
  assert proc.returncode == 2, proc.stderr
  assert "config.train.global_batch_size" in proc.stderr
  assert not (tmp_path / "config.json").exists()


def test_unknown_stage_rejected(tmp_path):
  proc = _run(
      "--config=configs/demo.py:runlocal",
      f"--workdir={tmp_path}",
      "--stages=bake",
  )
  assert proc.returncode == 2
  assert "bake" in proc.stderr


def test_writes_resolved_config(tmp_path):
  proc = _run(
      "--config=configs/demo.py:runlocal",
      f"--workdir={tmp_path}",
      "--config.seed=7",
      "--stages=report",
  )
  assert (tmp_path / "config.json").exists(), proc.stderr
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["seed"] == 7
  assert saved["model"]["d_model"] == 64
