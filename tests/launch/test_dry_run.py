"""Tests of the Cloud TPU VM scripts in launch/, run locally.

Nothing here can reach Google Cloud. A fake `gcloud` (and `tar`) on PATH
records every call, so the tests check that --dry-run prints the commands and
runs none of them, that a real run executes exactly the printed commands, and
that the scripts run on the workers (launch/remote_*.sh) do their job with a
fake virtualenv python.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

from tests.kit import ROOT

LAUNCH = ROOT / "launch"
EXAMPLE = LAUNCH / "tpu.env.example"
SCRIPTS = (
    "create",
    "sync",
    "setup",
    "run",
    "logs",
    "delete",
    "compile_check",
    "babysit",
)
LIBTPU_URL = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"


def _env_values(env_file):
  """The variables of an env file, as bash sees them after sourcing it."""
  names = (
      "TPU_NAME",
      "ZONE",
      "ACCELERATOR_TYPE",
      "RUNTIME_VERSION",
      "CONFIG",
      "WORKDIR",
      "BUCKET",
      "JAX_TPU_VERSION",
      "REPO_DIR",
      "SPOT",
      "QUEUED",
  )
  script = f"source {shlex.quote(str(env_file))}; " + "; ".join(
      f'printf "%s\\n" "${n}"' for n in names
  )
  out = subprocess.run(
      ["bash", "-c", script],
      check=True,
      text=True,
      capture_output=True,
      env={"PATH": os.environ["PATH"]},
  )
  return dict(zip(names, out.stdout.split("\n")))


def _requirements_jax_pin():
  text = (ROOT / "requirements.txt").read_text()
  (pin,) = re.findall(r"^jax==(\S+)", text, flags=re.M)
  return pin


def _dry(box, script, *args, **kw):
  """Runs a script with --dry-run; returns its printed commands as argvs."""
  res = box.run(script, "--dry-run", *args, **kw)
  assert res.returncode == 0, res.stderr
  assert box.recorded() == [], "a command ran during --dry-run"
  lines = [line for line in res.stdout.splitlines() if line.strip()]
  assert lines, f"{script}.sh --dry-run printed no command"
  return [shlex.split(line) for line in lines]


def _gcloud(cmds):
  return [c for c in cmds if c[0] == "gcloud"]


def _flag(argv, name):
  values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
  assert len(values) == 1, (name, argv)
  return values[0]


def _edit(text, **values):
  """Sets (or, with None, removes) VAR=... lines of an env file."""
  for name, value in values.items():
    line = "" if value is None else f"{name}={shlex.quote(value)}"
    text, n = re.subn(rf"^{name}=.*$", line, text, flags=re.M)
    if not n:
      text += f"\n{line}\n"
  return text


EXAMPLE_VALUES = _env_values(EXAMPLE)


def test_example_env_pins_the_requirements_jax():
  assert EXAMPLE_VALUES["JAX_TPU_VERSION"] == _requirements_jax_pin()
  assert EXAMPLE_VALUES["BUCKET"].startswith("gs://")
  assert EXAMPLE_VALUES["WORKDIR"].startswith(EXAMPLE_VALUES["BUCKET"] + "/")
  assert EXAMPLE_VALUES["SPOT"] == "false"
  assert EXAMPLE_VALUES["QUEUED"] == "false"


@pytest.mark.parametrize("script", SCRIPTS)
def test_dry_run_prints_gcloud_commands_and_runs_nothing(sandbox, script):
  cmds = _gcloud(_dry(sandbox, script))
  assert cmds
  for argv in cmds:
    assert argv[:3] == ["gcloud", "compute", "tpus"]
    assert _flag(argv, "zone") == EXAMPLE_VALUES["ZONE"]
    assert not any(a.startswith("--project") for a in argv)  # PROJECT empty
    assert EXAMPLE_VALUES[
        "TPU_NAME"
    ] in argv or f"{EXAMPLE_VALUES['TPU_NAME']}:" in " ".join(argv)


def test_create_vm(sandbox):
  (argv,) = _dry(sandbox, "create")
  v = EXAMPLE_VALUES
  assert argv[:6] == [
      "gcloud",
      "compute",
      "tpus",
      "tpu-vm",
      "create",
      v["TPU_NAME"],
  ]
  assert _flag(argv, "accelerator-type") == v["ACCELERATOR_TYPE"]
  assert _flag(argv, "version") == v["RUNTIME_VERSION"]
  assert "--spot" not in argv


def test_create_spot_with_project_and_extra_flags(sandbox):
  text = _edit(EXAMPLE.read_text(), SPOT="true", PROJECT="my-proj")
  (argv,) = _dry(sandbox, "create", "--description=x y", env_text=text)
  assert "--spot" in argv
  assert _flag(argv, "project") == "my-proj"
  assert argv[-1] == "--description=x y"


def test_create_and_delete_queued_resource(sandbox):
  v = EXAMPLE_VALUES
  text = _edit(EXAMPLE.read_text(), QUEUED="true", SPOT="true")
  (argv,) = _dry(sandbox, "create", env_text=text)
  assert argv[:6] == [
      "gcloud",
      "compute",
      "tpus",
      "queued-resources",
      "create",
      v["TPU_NAME"],
  ]
  assert _flag(argv, "node-id") == v["TPU_NAME"]
  assert _flag(argv, "accelerator-type") == v["ACCELERATOR_TYPE"]
  assert _flag(argv, "runtime-version") == v["RUNTIME_VERSION"]
  assert "--spot" in argv
  (argv,) = _dry(sandbox, "delete", env_text=text)
  assert argv[:6] == [
      "gcloud",
      "compute",
      "tpus",
      "queued-resources",
      "delete",
      v["TPU_NAME"],
  ]
  assert "--force" in argv
  text = _edit(text, QUEUED_RESOURCE_ID="my-qr")
  (argv,) = _dry(sandbox, "create", env_text=text)
  assert argv[5] == "my-qr" and _flag(argv, "node-id") == v["TPU_NAME"]


def test_delete_vm(sandbox):
  (argv,) = _dry(sandbox, "delete", "--quiet")
  assert argv[:6] == [
      "gcloud",
      "compute",
      "tpus",
      "tpu-vm",
      "delete",
      EXAMPLE_VALUES["TPU_NAME"],
  ]
  assert argv[-1] == "--quiet"


def test_sync_copies_to_all_workers(sandbox):
  cmds = _dry(sandbox, "sync")
  check, tar, scp, ssh = cmds
  # First: no run may be live on any worker.
  assert check[3:5] == ["tpu-vm", "ssh"] and _flag(check, "worker") == "all"
  assert _flag(check, "command").startswith("! pgrep -af ")
  assert [c[0] for c in _dry(sandbox, "sync", "--force")] == ["tar"] + [
      "gcloud"
  ] * 2
  assert tar[0] == "tar"
  for item in (
      "demix_jax",
      "configs",
      "launch",
      "requirements.txt",
      "requirements-nodeps.txt",
      "pyproject.toml",
  ):
    assert item in tar
  assert scp[3:5] == ["tpu-vm", "scp"]
  assert scp[5] == tar[2]  # the tarball
  assert scp[6].startswith(EXAMPLE_VALUES["TPU_NAME"] + ":")
  assert ssh[3:5] == ["tpu-vm", "ssh"]
  for argv in (scp, ssh):
    assert _flag(argv, "worker") == "all"
  remote = _flag(ssh, "command")
  assert f"cd {EXAMPLE_VALUES['REPO_DIR']}" in remote
  assert "tar -xzf" in remote


def test_setup_installs_the_matching_jax_tpu_on_all_workers(sandbox):
  (argv,) = _dry(sandbox, "setup")
  assert argv[3:5] == ["tpu-vm", "ssh"]
  assert _flag(argv, "worker") == "all"
  remote = shlex.split(_flag(argv, "command"))
  i = remote.index("launch/remote_setup.sh")
  assert remote[i + 1 :] == [
      "python3.11",
      f"jax[tpu]=={_requirements_jax_pin()}",
      LIBTPU_URL,
      "keep",
  ]
  (argv,) = _dry(sandbox, "setup", "--fresh")
  assert shlex.split(_flag(argv, "command"))[-1] == "fresh"


def test_setup_refuses_a_jax_pin_that_differs_from_requirements(sandbox):
  text = _edit(EXAMPLE.read_text(), JAX_TPU_VERSION="0.4.1")
  res = sandbox.run("setup", "--dry-run", env_text=text)
  assert res.returncode != 0
  assert (
      "JAX_TPU_VERSION" in res.stderr and _requirements_jax_pin() in res.stderr
  )
  assert res.stdout == ""
  # Unset: it defaults to the requirements pin.
  (argv,) = _dry(sandbox, "setup", env_text=_edit(text, JAX_TPU_VERSION=None))
  assert f"jax[tpu]=={_requirements_jax_pin()}" in _flag(argv, "command")


def test_run_on_all_workers_passes_extra_args_through(sandbox):
  v = EXAMPLE_VALUES
  (argv,) = _dry(
      sandbox, "run", "--stages=base,components", "--config.note=it's a test"
  )
  assert argv[3:5] == ["tpu-vm", "ssh"]
  assert _flag(argv, "worker") == "all"
  remote = shlex.split(_flag(argv, "command"))
  assert remote[:3] == ["cd", v["REPO_DIR"], "&&"]
  i = remote.index("launch/remote_run.sh")
  assert remote[i + 1 :] == [
      f"--config={v['CONFIG']}",
      f"--workdir={v['WORKDIR']}",
      "--multihost=on",
      "--stages=base,components",
      "--config.note=it's a test",
  ]


def test_run_env_and_args_after_double_dash(sandbox):
  text = _edit(EXAMPLE.read_text(), RUN_ENV="A=1 B=x")
  (argv,) = _dry(sandbox, "run", "--", "--help", env_text=text)
  remote = shlex.split(_flag(argv, "command"))
  assert remote[3:6] == ["env", "A=1", "B=x"]
  assert remote[-1] == "--help"


def test_compile_check_on_worker_0(sandbox):
  (argv,) = _dry(sandbox, "compile_check", "--foo=1")
  assert _flag(argv, "worker") == "0"
  remote = shlex.split(_flag(argv, "command"))
  i = remote.index("-m")
  assert remote[i + 1 :] == [
      "demix_jax.aot",
      f"--config={EXAMPLE_VALUES['CONFIG']}",
      f"--topology={EXAMPLE_VALUES['ACCELERATOR_TYPE']}",
      "--foo=1",
  ]


@pytest.mark.parametrize(
    "args,worker", [((), "0"), (("3",), "3"), (("all",), "all")]
)
def test_logs(sandbox, args, worker):
  (argv,) = _dry(sandbox, "logs", *args)
  assert _flag(argv, "worker") == worker
  remote = _flag(argv, "command")
  assert remote.startswith("tail -n 100 -F ")
  assert "~/demix_logs/run.$(hostname).log" in remote
  (argv,) = _dry(sandbox, "logs", *args, "--lines=7", "--no-follow")
  assert _flag(argv, "command").startswith("tail -n 7 ~/")


@pytest.mark.parametrize(
    "script,var",
    [
        ("create", "TPU_NAME"),
        ("create", "ZONE"),
        ("create", "ACCELERATOR_TYPE"),
        ("create", "RUNTIME_VERSION"),
        ("sync", "TPU_NAME"),
        ("setup", "ZONE"),
        ("run", "CONFIG"),
        ("run", "WORKDIR"),
        ("compile_check", "CONFIG"),
        ("logs", "TPU_NAME"),
        ("delete", "ZONE"),
    ],
)
def test_missing_required_variable_fails_naming_it(sandbox, script, var):
  text = _edit(EXAMPLE.read_text(), **{var: None})
  res = sandbox.run(script, "--dry-run", env_text=text)
  assert res.returncode != 0
  assert var in res.stderr
  assert res.stdout == ""
  # Empty counts as missing too.
  res = sandbox.run(script, "--dry-run", env_text=_edit(text, **{var: ""}))
  assert res.returncode != 0 and var in res.stderr


def test_bad_boolean_and_missing_env_file(sandbox):
  res = sandbox.run(
      "create", "--dry-run", env_text=_edit(EXAMPLE.read_text(), SPOT="yes")
  )
  assert res.returncode != 0 and "SPOT" in res.stderr
  res = sandbox.run("create", "--dry-run", TPU_ENV=str(sandbox.tmp / "nope"))
  assert res.returncode != 0 and "tpu.env.example" in res.stderr
  assert sandbox.recorded() == []


@pytest.mark.parametrize(
    "script,args",
    [
        ("create", ()),
        ("delete", ("--quiet",)),
        ("setup", ()),
        ("run", ("--stages=base",)),
        ("logs", ("all",)),
        ("compile_check", ()),
    ],
)
def test_real_run_executes_exactly_the_printed_commands(sandbox, script, args):
  printed = _dry(sandbox, script, *args)
  res = sandbox.run(script, *args)
  assert res.returncode == 0, res.stderr
  assert sandbox.recorded() == printed


def test_real_sync_ships_the_code(sandbox):
  real_tar = shutil.which("tar")
  res = sandbox.run("sync", FAKE_TAR_REAL=real_tar)
  assert res.returncode == 0, res.stderr
  calls = sandbox.recorded()
  assert [c[0] for c in calls] == ["gcloud", "tar", "gcloud", "gcloud"]
  (tarball,) = sandbox.scp_dir.iterdir()
  with tarfile.open(tarball) as tf:
    names = set(tf.getnames())
  for needed in (
      "demix_jax/__init__.py",
      "demix_jax/main.py",
      "configs/demo.py",
      "launch/remote_setup.sh",
      "launch/remote_run.sh",
      "requirements.txt",
      "requirements-nodeps.txt",
      "pyproject.toml",
      "README.md",
  ):
    assert needed in names
  assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
  assert not [n for n in names if n.startswith(("tests", ".venv", ".git"))]
  # The local tarball is cleaned up.
  assert not list(sandbox.tmp.glob("demix_jax_code.*"))


# --- What runs on the workers ----------------------------------------------

_FAKE_PYTHON = f"""#!{sys.executable}
import json, os, sys, time
with open(os.environ["FAKE_PY_CALLS"], "a") as f:
  f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:3] == ["-m", "demix_jax.main"]:
  print("ARGS", json.dumps(sys.argv[3:]), flush=True)
"""


def _fake_repo(tmp_path):
  repo = tmp_path / "repo"
  (repo / "launch").mkdir(parents=True)
  for f in ("remote_setup.sh", "remote_run.sh"):
    shutil.copy(LAUNCH / f, repo / "launch" / f)
  for f in ("requirements.txt", "requirements-nodeps.txt", "pyproject.toml"):
    shutil.copy(ROOT / f, repo / f)
  python = repo / ".venv" / "bin" / "python"
  python.parent.mkdir(parents=True)
  python.write_text(_FAKE_PYTHON)
  python.chmod(0o755)
  calls = tmp_path / "py_calls.jsonl"
  env = {
      "PATH": os.environ["PATH"],
      "HOME": str(tmp_path),
      "FAKE_PY_CALLS": str(calls),
  }
  return repo, env, calls


def _calls(path):
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines()]


def test_remote_setup_installs_once_and_again_when_requirements_change(
    tmp_path,
):
  repo, env, calls = _fake_repo(tmp_path)
  jax_req = f"jax[tpu]=={_requirements_jax_pin()}"
  cmd = ["bash", "launch/remote_setup.sh", "python3.11", jax_req, LIBTPU_URL]

  def setup():
    res = subprocess.run(
        cmd, cwd=repo, env=env, text=True, capture_output=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    return res

  setup()
  installs = [c[3:] for c in _calls(calls) if c[:3] == ["-m", "pip", "install"]]
  assert installs == [
      ["--quiet", "--upgrade", "pip"],
      ["--quiet", "-r", "requirements.txt"],
      ["--quiet", "--no-deps", "-r", "requirements-nodeps.txt"],
      ["--quiet", jax_req, "-f", LIBTPU_URL],
      ["--quiet", "--no-deps", "-e", "."],
  ]
  assert _calls(calls)[-1][0] == "-c"  # the import check
  n = len(_calls(calls))
  res = setup()  # nothing changed: nothing installed
  assert len(_calls(calls)) == n and "up to date" in res.stdout
  with open(repo / "requirements.txt", "a") as f:
    f.write("extra-package==1.0\n")
  setup()
  assert len(_calls(calls)) == 2 * n


def test_remote_run_stops_a_stale_run_and_starts_detached(tmp_path):
  repo, env, calls = _fake_repo(tmp_path)
  marker = f"stale_demix_run_{os.getpid()}_{time.time_ns()}"
  stale = subprocess.Popen(
      [sys.executable, "-c", "import time; time.sleep(120)", marker]
  )
  try:
    env = dict(
        env,
        DEMIX_STALE_PATTERN=marker,
        LIBTPU_LOCKFILE=str(tmp_path / "libtpu_lockfile"),
    )
    (tmp_path / "libtpu_lockfile").write_text("")
    args = ["--config=configs/demo.py", "--workdir=gs://b/w", "--x=a b"]
    res = subprocess.run(
        ["bash", "launch/remote_run.sh", *args],
        cwd=repo,
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert stale.wait(timeout=10) is not None  # killed
    assert not (tmp_path / "libtpu_lockfile").exists()
    log = tmp_path / "demix_logs" / f"run.{os.uname().nodename}.log"
    for _ in range(100):
      if log.exists() and "ARGS" in log.read_text():
        break
      time.sleep(0.1)
    assert f"ARGS {json.dumps(args)}" in log.read_text()
  finally:
    if stale.poll() is None:
      stale.kill()
      stale.wait()


def test_remote_run_without_setup_fails(tmp_path):
  repo, env, _ = _fake_repo(tmp_path)
  shutil.rmtree(repo / ".venv")
  res = subprocess.run(
      ["bash", "launch/remote_run.sh", "--config=c.py"],
      cwd=repo,
      env=env,
      text=True,
      capture_output=True,
      timeout=60,
  )
  assert res.returncode != 0 and "launch/setup.sh" in res.stderr


# --- Hygiene ---------------------------------------------------------------


def test_scripts_are_executable_and_strict():
  for name in SCRIPTS:
    path = LAUNCH / f"{name}.sh"
    assert os.access(path, os.X_OK), path
    assert path.read_text().startswith("#!/usr/bin/env bash\n")
  assert "set -euo pipefail" in (LAUNCH / "common.sh").read_text()
  for name in ("remote_setup", "remote_run"):
    assert "set -euo pipefail" in (LAUNCH / f"{name}.sh").read_text()


def test_readme_uses_every_script():
  readme = (LAUNCH / "README.md").read_text()
  for name in SCRIPTS:
    assert f"launch/{name}.sh" in readme


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck not installed"
)
def test_shellcheck_clean():
  scripts = sorted(str(p) for p in LAUNCH.glob("*.sh"))
  res = subprocess.run(
      ["shellcheck", *scripts], cwd=ROOT, text=True, capture_output=True
  )
  assert res.returncode == 0, res.stdout
