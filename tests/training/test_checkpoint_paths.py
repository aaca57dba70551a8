"""Relative run directories work (Orbax itself rejects relative paths)."""

import os

from configs import demo
from demix_jax import context
from demix_jax.training import checkpointing


def test_checkpoint_dir_is_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = checkpointing.checkpoint_dir("workdir/demo/base/run")
  assert os.path.isabs(os.fspath(path))
  assert os.fspath(path) == str(tmp_path / "workdir/demo/base/run/checkpoints")
  remote = checkpointing.checkpoint_dir("gs://bucket/run")
  assert str(remote) == "gs://bucket/run/checkpoints"


def test_run_context_resolves_relative_workdir(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  ctx = context.RunContext(demo.get_config("runlocal"), "workdir/demo")
  assert str(ctx.workdir) == str(tmp_path / "workdir/demo")
