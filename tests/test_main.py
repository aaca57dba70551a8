"""CLI tests: the entry point runs, writes config.json and rejects bad input."""

import json

import pytest

from tests import kit


def _run(*args):
  return kit.run_cli(*args)


# Bad flags, config files and overrides: exit 2, one line naming the
# problem and the fix, no traceback, nothing written.
_BAD_FLAGS = [
    (("--config.nope=1",), "names no config field (nope)"),
    (("--config.data.nope.x=1",), "names no config field (nope)"),
    (("--config.seed=abc",), "flag --config.seed=abc: invalid literal"),
    (("--bogus=3",), "Unknown command line flag 'bogus'"),
    (("extra",), "unexpected arguments ['extra']"),
]


@pytest.mark.parametrize("args,words", _BAD_FLAGS, ids=lambda x: str(x)[:30])
def test_bad_flags_exit_2_before_work(tmp_path, args, words):
  proc = _run(
      "--config=configs/demo.py:runlocal", f"--workdir={tmp_path}", *args
  )
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert words in proc.stderr
  assert "Fix:" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "config.json").exists()


def test_bad_config_file_or_argument_exits_2(tmp_path):
  bad = tmp_path / "bad_config.py"
  bad.write_text("def get_config():\n  return 1 / 0\n")
  for config, words in (
      ("configs/nope.py", "cannot load the config file"),
      ("configs/demo.py:runlocal,bogus", "unknown config argument 'bogus'"),
      (str(bad), f"ZeroDivisionError: division by zero at {bad}:2"),
  ):
    proc = _run(f"--config={config}", f"--workdir={tmp_path / 'wd'}")
    assert proc.returncode == 2, (config, proc.stderr[-3000:])
    assert words in proc.stderr, (config, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
  proc = _run("--config=configs/demo.py:runlocal")  # no --workdir
  assert proc.returncode == 2 and "--workdir" in proc.stderr
  assert not (tmp_path / "wd").exists()


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
  # The report needs a finished search: exit 3 naming it, after the
  # resolved config was written.
  assert proc.returncode == 3, proc.stderr[-3000:]
  assert "stage 'search' has not finished" in proc.stderr
  assert "--stages=search" in proc.stderr
  assert (tmp_path / "config.json").exists(), proc.stderr
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["seed"] == 7
  assert saved["model"]["d_model"] == 64
