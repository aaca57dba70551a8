"""The shared test kit (tests/kit) does what the tests rely on."""

import json
import signal
import subprocess
import sys

import pytest

from demix_jax import models
from tests import kit


def test_tiny_model_is_the_micro_preset_with_overrides():
  assert kit.tiny_model() == models.get_preset("micro")
  cfg = kit.tiny_model(vocab_size=512, n_kv_heads=2)
  assert (cfg.vocab_size, cfg.n_kv_heads, cfg.d_model) == (512, 2, 32)


def test_root_is_the_repository():
  assert (kit.ROOT / "demix_jax" / "__init__.py").exists()
  assert (kit.ROOT / "tests" / "kit" / "__init__.py").exists()


def test_a_signal_is_named_and_sigterm_said_to_come_from_outside():
  proc = subprocess.run(
      [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), 15)"],
      capture_output=True,
      text=True,
  )
  assert proc.returncode == -signal.SIGTERM
  assert kit.outcome(proc).startswith("killed by SIGTERM from another")
  with pytest.raises(AssertionError, match="killed by SIGTERM"):
    kit.assert_ok(proc)
  ok = subprocess.run([sys.executable, "-c", "pass"], capture_output=True)
  assert kit.outcome(ok) == "exit code 0"


def test_the_hang_guard_fails_with_a_message():
  with pytest.raises(AssertionError, match="hang guard"):
    kit.run_cli(
        cmd=[sys.executable, "-c", "import time; time.sleep(60)"], timeout=1
    )


def test_copy_run_copies_the_parts_asked_for_unchanged(tmp_path):
  src = tmp_path / "src"
  (src / "base").mkdir(parents=True)
  (src / "search").mkdir()
  done = {"run_dir": "<workdir>/base/run"}
  (src / "base" / "done.json").write_text(json.dumps(done))
  (src / "search" / "done.json").write_text("{}")
  dst = kit.copy_run(src, tmp_path / "dst", parts=("base",))
  assert not (dst / "search").exists()
  assert json.loads((dst / "base" / "done.json").read_text()) == done
  assert json.loads((src / "base" / "done.json").read_text()) == done
