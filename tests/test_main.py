"""CLI tests: the entry point runs, writes config.json and rejects bad input."""

import json
import os

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


@pytest.mark.parametrize(
    "flag,words",
    [
        ("--stages=", "--stages= lists no stage"),
        ("--stages=,,", "--stages=,, lists no stage or an empty name"),
        ("--stages=bake", "unknown stage 'bake'"),
    ],
)
def test_bad_stages_flag_exits_2_before_work(tmp_path, flag, words):
  proc = _run(
      "--config=configs/demo.py:runlocal", f"--workdir={tmp_path}", flag
  )
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert words in proc.stderr and "Fix:" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not tmp_path.exists() or not os.listdir(tmp_path)


def test_stages_flag_values():
  from demix_jax import main  # pylint: disable=g-import-not-at-top

  assert main.stages_flag(None) is None
  assert main.stages_flag(["search", "base"]) == ("search", "base")
  for bad in ([], [""], ["base", ""]):
    with pytest.raises(ValueError, match="lists no stage or an empty name"):
      main.stages_flag(bad)


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


def test_unknown_key_in_config_file_exits_2(tmp_path):
  config = tmp_path / "typo_config.py"
  config.write_text(
      "from configs import demo\n\n\n"
      "def get_config(arg=None):\n"
      "  c = demo.get_config('runlocal')\n"
      "  c.train.log_evry_steps = 5\n"
      "  return c\n"
  )
  proc = _run(f"--config={config}", f"--workdir={tmp_path / 'wd'}")
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert (
      "config.train.log_evry_steps: is not a known config field" in proc.stderr
  )
  assert "did you mean config.train.log_every_steps?" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "wd").exists()


@pytest.mark.slow  # two CLI runs
def test_bad_init_from_exits_2_before_data_preparation(tmp_path):
  empty_run = tmp_path / "run"
  (empty_run / "checkpoints").mkdir(parents=True)
  hf_dir = tmp_path / "hf"
  hf_dir.mkdir()
  (hf_dir / "config.json").write_text('{"model_type": "qwen3", ')
  for start, words in (
      (empty_run, "checkpoints holds no checkpoint"),
      (hf_dir, "config.json is not valid JSON (line 1"),
  ):
    workdir = tmp_path / f"wd_{start.name}"
    proc = _run(
        "--config=configs/demo.py:runlocal",
        f"--workdir={workdir}",
        f"--config.base.init_from={start}",
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "error: config.base.init_from: " in proc.stderr, proc.stderr
    assert words in proc.stderr and "Fix:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not workdir.exists()  # no data prepared, no base/run
