"""Relative run directories work (Orbax itself rejects relative paths)."""

import os

from configs import demo
from demix_jax import spec as spec_lib
from demix_jax import workspace
from demix_jax.training import checkpointing


def test_checkpoint_dir_is_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = checkpointing.checkpoint_dir("workdir/demo/base/run")
  assert os.path.isabs(os.fspath(path))
  assert os.fspath(path) == str(tmp_path / "workdir/demo/base/run/checkpoints")
  remote = checkpointing.checkpoint_dir("gs://bucket/run")
  assert str(remote) == "gs://bucket/run/checkpoints"


def test_workspace_resolves_relative_workdir(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  spec = spec_lib.resolve(demo.get_config("runlocal"))
  ws = workspace.Workspace(spec, "workdir/demo")
  assert str(ws.workdir) == str(tmp_path / "workdir/demo")
