"""bench/device_check.sh in its CPU dry mode: every check runs and reports.

On a machine with an accelerator the same script runs at 1.7B shapes; here
its tiny-shape mode must produce every figure the README quotes from it.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dry_run_reports_every_check():
  env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      PYTHONPATH=str(ROOT),
      PYTHON=sys.executable,
  )
  p = subprocess.run(
      [str(ROOT / "bench" / "device_check.sh"), "--dry"],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      check=False,
  )
  assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
  out = json.loads(p.stdout.strip().splitlines()[-1])
  assert out["dry"] is True and out["backend"] == "cpu"
  assert out["measured_bf16_peak_flops"] > 0
  for name in ("train", "merge", "generate", "attention"):
    assert "error" not in out[name], (name, out[name])
  t = out["train"]
  assert t["loss_finite"] and t["tokens_per_s"] > 0
  assert 0 < t["mfu_vs_measured_peak"] < 2
  for name in ("merge", "generate"):
    r = out[name]
    assert math.isfinite(r["overhead_vs_premerged"])
    assert r["overhead_vs_premerged"] > 0
  a = out["attention"]
  # Splash (Pallas interpret mode) against XLA in bf16 on two packed
  # documents: equal to bf16 rounding of values of order 1.
  assert a["kernel"] == "splash"
  assert a["max_abs_diff"] < 3e-2
