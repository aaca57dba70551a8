"""Fixtures of the launch/ tests: a PATH of fake tools that record calls.

The fake `gcloud` answers from a script when FAKE_GCLOUD_SCRIPT names one:
a JSON list of rules {"match": [words], "exit": N, "stdout": "...",
"stderr": "...", "times": K}; a call takes the first rule whose words all
occur in its argv (one word may be a substring of an argument) and that has
times left (no "times": forever). Without a matching rule it prints nothing
and exits 0.
"""

import json
import os
import pathlib
import re
import shlex
import stat
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch"
EXAMPLE = LAUNCH / "tpu.env.example"

_FAKE_TOOL = f"""#!{sys.executable}
import json, os, shutil, sys
name = os.path.basename(sys.argv[0])
with open(os.environ["FAKE_CALLS"], "a") as f:
  f.write(json.dumps([name] + sys.argv[1:]) + "\\n")
if name == "ssh-add":
  sys.exit(int(os.environ.get("FAKE_SSH_ADD_RC", "0")))
# `gcloud ... scp SRC DEST` of a local file: keep a copy for the test.
if name == "gcloud" and "scp" in sys.argv:
  src = sys.argv[sys.argv.index("scp") + 1]
  if os.path.isfile(src):
    shutil.copy(src, os.environ["FAKE_SCP_DIR"])
if name == "tar" and os.environ.get("FAKE_TAR_REAL"):
  os.execv(os.environ["FAKE_TAR_REAL"], ["tar"] + sys.argv[1:])
script = os.environ.get("FAKE_GCLOUD_SCRIPT")
if name == "gcloud" and script and os.path.exists(script):
  with open(script) as f:
    rules = json.load(f)
  for rule in rules:
    left = rule.get("times", -1)
    if left == 0:
      continue
    if all(any(w in a for a in sys.argv[1:]) for w in rule["match"]):
      if left > 0:
        rule["times"] = left - 1
        with open(script, "w") as f:
          json.dump(rules, f)
      sys.stdout.write(rule.get("stdout", ""))
      sys.stderr.write(rule.get("stderr", ""))
      sys.exit(rule.get("exit", 0))
"""


def edit_env(text, **values):
  """Sets (or, with None, removes) VAR=... lines of an env file."""
  for name, value in values.items():
    line = "" if value is None else f"{name}={shlex.quote(value)}"
    text, n = re.subn(rf"^{name}=.*$", line, text, flags=re.M)
    if not n:
      text += f"\n{line}\n"
  return text


def flag_value(argv, name):
  values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
  assert len(values) == 1, (name, argv)
  return values[0]


@pytest.fixture
def sandbox(tmp_path):
  """A PATH with fake gcloud/tar/ssh-add that log their calls."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for tool in ("gcloud", "tar", "ssh-add"):
    path = bin_dir / tool
    path.write_text(_FAKE_TOOL)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
  scp_dir = tmp_path / "scp"
  scp_dir.mkdir()
  calls = tmp_path / "calls.jsonl"
  env = {
      "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
      "HOME": str(tmp_path),
      "TMPDIR": str(tmp_path),
      "FAKE_CALLS": str(calls),
      "FAKE_SCP_DIR": str(scp_dir),
      "TPU_ENV": str(EXAMPLE),
  }

  class Sandbox:
    pass

  box = Sandbox()
  box.tmp, box.env, box.calls, box.scp_dir = tmp_path, env, calls, scp_dir
  box.bin = bin_dir

  def run(script, *args, env_text=None, timeout=60, **extra_env):
    env = dict(box.env, **extra_env)
    if env_text is not None:
      env_file = tmp_path / "test.env"
      env_file.write_text(env_text)
      env["TPU_ENV"] = str(env_file)
    # From another directory: the scripts must not depend on the cwd.
    return subprocess.run(
        [str(LAUNCH / f"{script}.sh"), *args],
        cwd=tmp_path,
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )

  def recorded():
    if not box.calls.exists():
      return []
    return [json.loads(line) for line in box.calls.read_text().splitlines()]

  def gcloud_script(rules):
    path = tmp_path / "gcloud_script.json"
    path.write_text(json.dumps(rules))
    box.env["FAKE_GCLOUD_SCRIPT"] = str(path)

  def dry(script, *args, **kw):
    """Runs a script with --dry-run; returns its printed commands."""
    res = run(script, "--dry-run", *args, **kw)
    assert res.returncode == 0, res.stderr
    assert [c for c in recorded() if c[0] != "ssh-add"] == [], "ran a command"
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert lines, f"{script}.sh --dry-run printed no command"
    return [shlex.split(ln) for ln in lines]

  box.run, box.recorded, box.dry = run, recorded, dry
  box.edit, box.flag = edit_env, flag_value
  box.gcloud_script = gcloud_script
  return box
