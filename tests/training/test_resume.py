"""Kill-and-resume exactness with a real SIGKILL of a training process."""

import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from demix_jax.training import config as train_config
from demix_jax.training import optim
from demix_jax.training import synthetic
from demix_jax.training import trainer
from tests import kit
from tests.kit import ROOT

CFG = kit.tiny_model()
OPT = optim.OptimConfig(peak_lr=1e-2, warmup_steps=2)
STEPS = 10


def _tc():
  return train_config.TrainConfig(
      global_batch_size=4,
      seq_len=32,
      total_tokens=4 * 32 * STEPS,
      log_every_steps=5,
      checkpoint_every_steps=2,
      keep_last=2,
      peak_flops=1e10,
      mesh_axes={"data": 1, "fsdp": 1, "tensor": 1},
  )


# The child trains the same run; it prints each finished step and, when it
# completes, saves the final params.
CHILD = r"""
import sys, os
import jax
import numpy as np
sys.path.insert(0, os.getcwd())
from tests.training import conftest  # the shared compilation cache
from tests.training import test_resume as t
from demix_jax.training import synthetic, trainer
from tests import kit
workdir, out = sys.argv[1], sys.argv[2]
def cb(step, m):
  print("STEP", step, flush=True)
r = trainer.train(t.CFG, t.OPT, t._tc(), workdir,
                  synthetic.SyntheticIterator(4, 32, t.CFG.vocab_size),
                  devices=jax.devices()[:1], step_callback=cb)
print("RESTORED", r.restored_from, r.losses[0][0], flush=True)
np.savez(out, *[np.asarray(x) for x in jax.tree.leaves(r.params)])
"""


def _child(workdir, out):
  return subprocess.Popen(
      [sys.executable, "-c", CHILD, str(workdir), str(out)],
      cwd=ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL,
      text=True,
      env={**os.environ, "PYTHONPATH": str(ROOT)},
  )


@pytest.mark.slow
def test_sigkill_then_resume_reaches_same_params(tmp_path):
  ref = trainer.train(
      CFG,
      OPT,
      _tc(),
      tmp_path / "ref",
      synthetic.SyntheticIterator(4, 32, CFG.vocab_size),
      devices=jax.devices()[:1],
  )
  run = tmp_path / "run"
  p = _child(run, tmp_path / "unused.npz")
  killed_after = None
  for line in p.stdout:
    if line.startswith("STEP") and int(line.split()[1]) >= 7:
      os.kill(p.pid, signal.SIGKILL)
      killed_after = int(line.split()[1])
      break
  p.wait(timeout=120)
  assert killed_after is not None and p.returncode == -signal.SIGKILL
  assert not (tmp_path / "unused.npz").exists()
  p = _child(run, tmp_path / "final.npz")
  out, _ = p.communicate(timeout=300)
  assert p.returncode == 0, out
  restored = [x for x in out.splitlines() if x.startswith("RESTORED")][0]
  _, how, first_step = restored.split()
  assert how == "own" and 1 < int(first_step) <= killed_after + 1
  got = np.load(tmp_path / "final.npz")
  want = jax.tree.leaves(ref.params)
  assert len(got.files) == len(want)
  for i, w in enumerate(want):
    np.testing.assert_allclose(
        got[f"arr_{i}"], np.asarray(w), rtol=0, atol=1e-6
    )
