"""End to end: the runlocal pipeline, its report, and resume after a kill.

One uninterrupted run (base, components, search, final, report) in a temp
workdir; then a copy of its base and components is searched again in a
second workdir, killed with SIGKILL during the search and rerun: finished
stages are not redone and the found mixture equals the uninterrupted one.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from demix_jax.report import plots

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "--config=configs/demo.py:runlocal"


def _cmd(workdir, stages):
  return [
      sys.executable,
      "-m",
      "demix_jax.main",
      CONFIG,
      f"--workdir={workdir}",
      f"--stages={stages}",
  ]


def _env():
  return dict(
      os.environ,
      XLA_FLAGS="--xla_force_host_platform_device_count=1",
      TF_CPP_MIN_LOG_LEVEL="2",
  )


def _run(workdir, stages, timeout=900):
  proc = subprocess.run(
      _cmd(workdir, stages),
      cwd=ROOT,
      env=_env(),
      capture_output=True,
      text=True,
      timeout=timeout,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def _done(workdir, stage):
  return json.loads((workdir / stage / "done.json").read_text())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """The README's `make demo`, on the runlocal twin, with a relative WORKDIR."""
  workdir = tmp_path_factory.mktemp("full")
  relative = os.path.relpath(workdir, ROOT)
  proc = subprocess.run(
      [
          "make",
          "demo",
          "CONFIG=configs/demo.py:runlocal",
          f"WORKDIR={relative}",
      ],
      cwd=ROOT,
      env=_env(),
      capture_output=True,
      text=True,
      timeout=1200,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir, proc


@pytest.mark.slow
def test_pipeline_end_to_end(finished):
  workdir, proc = finished
  assert "Found mixture" in proc.stdout
  assert "Final runs" in proc.stdout
  summary = json.loads((workdir / "report" / "summary.json").read_text())
  for key in (
      "alpha",
      "source_weights",
      "predicted",
      "final",
      "baselines",
      "cost",
  ):
    assert key in summary, key
  alpha = np.array(list(summary["alpha"].values()))
  assert abs(alpha.sum() - 1) < 1e-6 and (alpha >= 0).all()
  assert abs(sum(summary["source_weights"].values()) - 1) < 1e-6
  assert "natural" in summary["baselines"]
  for target, value in summary["final"].items():
    assert np.isfinite(value), target
  assert summary["cost"]["base"]["tokens"] > 0
  for name in ("landscape", "surrogate", "rounds", "components", "final"):
    path = workdir / "report" / f"{name}.png"
    assert path.exists(), name
    assert plots.png_is_drawn(str(path)), name
  report = (workdir / "report" / "report.md").read_text()
  assert "Final runs vs baselines" in report and "landscape.png" in report
  # A rerun skips every finished stage (nothing is retrained).
  before = {
      s: (workdir / s / "done.json").stat().st_mtime_ns
      for s in ("base", "components", "search", "final")
  }
  proc = _run(workdir, "base,components,search,final")
  after = {s: (workdir / s / "done.json").stat().st_mtime_ns for s in before}
  assert before == after
  assert "complete, skipping" in proc.stderr


@pytest.mark.slow
def test_killed_search_resumes_to_same_result(finished, tmp_path):
  workdir, _ = finished
  resumed = tmp_path / "resumed"
  resumed.mkdir()
  for part in ("data", "base", "components"):
    shutil.copytree(workdir / part, resumed / part)
  base_mtime = (resumed / "base" / "done.json").stat().st_mtime_ns
  proc = subprocess.Popen(
      _cmd(resumed, "search"),
      cwd=ROOT,
      env=_env(),
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
  )
  results = resumed / "search" / "state"
  deadline = time.time() + 600
  killed = False
  while time.time() < deadline and proc.poll() is None:
    scored = list(results.glob("results*")) if results.exists() else []
    if scored and any(p.stat().st_size > 0 for p in scored):
      proc.send_signal(signal.SIGKILL)
      killed = True
      break
    time.sleep(0.2)
  proc.wait()
  assert killed, "the search finished before any proxy was scored"
  assert not (resumed / "search" / "done.json").exists()
  _run(resumed, "base,components,search")
  assert (resumed / "base" / "done.json").stat().st_mtime_ns == base_mtime
  a = _done(workdir, "search")["alpha"]
  b = _done(resumed, "search")["alpha"]
  assert a.keys() == b.keys()
  for k in a:
    assert abs(a[k] - b[k]) < 1e-9, (k, a[k], b[k])


def test_missing_inputs_name_the_stage(tmp_path):
  proc = subprocess.run(
      _cmd(tmp_path, "search"),
      cwd=ROOT,
      env=_env(),
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 3
  assert "components" in proc.stderr


@pytest.mark.slow
def test_reduced_validation_table(finished, tmp_path):
  """validate_small:runlocal (6 references, few steps) on the same base."""
  workdir, _ = finished
  for part in ("data", "base", "components"):
    shutil.copytree(workdir / part, tmp_path / part)
  cmd = [
      sys.executable,
      "-m",
      "demix_jax.main",
      "--config=configs/validate_small.py:runlocal",
      f"--workdir={tmp_path}",
      "--stages=validate",
  ]
  proc = subprocess.run(
      cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1200
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  table = json.loads((tmp_path / "validate" / "table.json").read_text())
  rows = table["rows"]
  families = {r["family"] for r in rows}
  assert families == {"merged", "trained"}
  assert len([r for r in rows if r["family"] == "trained"]) == 2
  for r in rows:
    assert r["total_tokens"] > 0
    for d, v in r["rho"].items():
      assert -1.0 - 1e-9 <= v <= 1.0 + 1e-9, (r["method"], d, v)
    assert 0.0 <= r["decision_accuracy"]["macro"] <= 1.0
    assert r["regret"]["macro"] >= 0.0
    assert r["recovery"]["macro"] > 0.0
  assert plots.png_is_drawn(str(tmp_path / "validate" / "rho_vs_tokens.png"))
