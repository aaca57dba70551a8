"""What runs on the workers: stale-run cleanup, RUN_ENV, fresh-VM setup.

launch/remote_run.sh, remote_setup.sh and remote_status.sh run here in a
fake repo with a fake virtualenv python; accelerator devices, sudo, rm and
apt-get are stood in for by temporary files and recording fakes.
"""

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch"
EXAMPLE = LAUNCH / "tpu.env.example"

# Prints its arguments and the environment variable the RUN_ENV test sets.
_FAKE_PYTHON = f"""#!{sys.executable}
import json, os, sys, time
if sys.argv[1:3] == ["-m", "demix_jax.main"]:
  print("ARGS", json.dumps(sys.argv[3:]), flush=True)
  print("ENV", json.dumps(os.environ.get("LIBTPU_INIT_ARGS")), flush=True)
  sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""


def _repo(tmp_path):
  repo = tmp_path / "repo"
  (repo / "launch").mkdir(parents=True)
  for f in ("remote_setup.sh", "remote_run.sh", "remote_status.sh"):
    shutil.copy(LAUNCH / f, repo / "launch" / f)
  for f in ("requirements.txt", "requirements-nodeps.txt", "pyproject.toml"):
    shutil.copy(ROOT / f, repo / f)
  python = repo / ".venv" / "bin" / "python"
  python.parent.mkdir(parents=True)
  python.write_text(_FAKE_PYTHON)
  python.chmod(0o755)
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  env = {
      "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
      "HOME": str(tmp_path),
      "LIBTPU_LOCKFILE": str(tmp_path / "libtpu_lockfile"),
      "DEMIX_ACCEL_DEVICES": "",
      "CALLS": str(tmp_path / "calls.log"),
      # remote_run.sh's default pattern would SIGTERM every demix_jax.main
      # of this user on the machine (other tests' pipelines included): a
      # marker that matches no real process.
      "DEMIX_STALE_PATTERN": f"[d]emix-launch-test-{os.getpid()}-nomatch",
  }
  return repo, env, bin_dir


def _tool(bin_dir, name, body):
  """A bash fake on PATH that logs `name args` to $CALLS, then runs body."""
  path = bin_dir / name
  path.write_text(f'#!/usr/bin/env bash\necho "{name} $*" >>"$CALLS"\n{body}\n')
  path.chmod(0o755)


def _calls(env):
  path = pathlib.Path(env["CALLS"])
  return path.read_text().splitlines() if path.exists() else []


def _run(repo, env, *args, script="remote_run.sh"):
  return subprocess.run(
      ["bash", f"launch/{script}", *args],
      cwd=repo,
      env=env,
      text=True,
      capture_output=True,
      timeout=90,
  )


def _log(tmp_path, attempt=1):
  host = os.uname().nodename
  log = tmp_path / "demix_logs" / f"run.{host}.attempt-{attempt}.log"
  for _ in range(200):
    if log.exists() and "ENV" in log.read_text():
      return log.read_text()
    time.sleep(0.05)
  raise AssertionError(f"no run output in {log}")


def _status(repo, env):
  res = _run(repo, env, script="remote_status.sh")
  assert res.returncode == 0, res.stderr
  return res.stdout.split()[-1]


def test_cleanup_kills_whatever_holds_the_accelerator(tmp_path):
  """Not only this user's demix_jax: any process with the device open."""
  repo, env, _ = _repo(tmp_path)
  device = tmp_path / "accel0"
  device.write_text("")
  holder = subprocess.Popen(
      [
          sys.executable,
          "-c",
          "import sys, time; f = open(sys.argv[1]); time.sleep(120)",
          str(device),
      ]
  )
  try:
    for _ in range(100):  # until it has the file open
      if any(
          os.path.realpath(f"/proc/{holder.pid}/fd/{fd}") == str(device)
          for fd in os.listdir(f"/proc/{holder.pid}/fd")
      ):
        break
      time.sleep(0.05)
    env["DEMIX_ACCEL_DEVICES"] = str(device)
    res = _run(repo, env, "--config=c.py")
    assert res.returncode == 0, res.stderr
    assert holder.wait(timeout=20) is not None  # stopped
    assert f"stopping pid {holder.pid}, which holds the accelerator" in (
        res.stderr
    )
    _log(tmp_path)
  finally:
    if holder.poll() is None:
      holder.kill()
      holder.wait()


def test_a_lock_file_of_another_user_is_removed_with_sudo(tmp_path):
  repo, env, bin_dir = _repo(tmp_path)
  lock = tmp_path / "libtpu_lockfile"
  lock.write_text("")
  # Not root, and plain rm may not remove another user's file in /tmp.
  _tool(bin_dir, "id", '[[ $1 == -u ]] && echo 1000 || /usr/bin/id "$@"')
  _tool(
      bin_dir,
      "rm",
      'for a; do [[ $a == *libtpu_lockfile ]] && exit 1; done; exec /bin/rm "$@"',
  )
  _tool(
      bin_dir,
      "sudo",
      "[[ $1 == -n ]] && shift; [[ $1 == rm ]] && shift "
      '&& exec /bin/rm "$@"; exec "$@"',
  )
  res = _run(repo, env, "--config=c.py")
  assert res.returncode == 0, res.stderr
  assert not lock.exists()
  assert f"sudo -n rm -f {lock}" in _calls(env)
  _log(tmp_path)


def test_a_lock_file_that_cannot_be_removed_does_not_stop_the_worker(
    tmp_path,
):
  repo, env, bin_dir = _repo(tmp_path)
  lock = tmp_path / "libtpu_lockfile"
  lock.write_text("")
  _tool(
      bin_dir,
      "rm",
      "for a; do [[ $a == *libtpu_lockfile ]] && exit 1; done"
      '; exec /bin/rm "$@"',
  )
  res = _run(repo, env, "--config=c.py")
  assert res.returncode == 0, res.stderr  # set -e did not stop it
  assert f"warning: cannot remove {lock}" in res.stderr
  assert "ARGS" in _log(tmp_path)


def test_status_files_and_attempt_numbered_logs(tmp_path):
  repo, env, _ = _repo(tmp_path)
  assert _status(repo, env) == "none"
  res = _run(repo, dict(env, FAKE_EXIT="3"), "--x=1")
  assert res.returncode == 0, res.stderr
  _log(tmp_path)
  for _ in range(100):
    if _status(repo, env) != "running":
      break
    time.sleep(0.1)
  assert _status(repo, env) == "exited:3"
  res = _run(repo, dict(env, DEMIX_ATTEMPT="2"), "--x=2")
  assert res.returncode == 0, res.stderr
  assert '["--x=2"]' in _log(tmp_path, attempt=2)
  assert '["--x=1"]' in _log(tmp_path, attempt=1)  # kept
  link = tmp_path / "demix_logs" / f"run.{os.uname().nodename}.log"
  assert os.readlink(link) == link.name.replace(".log", ".attempt-2.log")
  for _ in range(100):
    if _status(repo, env) == "exited:0":
      break
    time.sleep(0.1)
  assert _status(repo, env) == "exited:0"
  (tmp_path / "demix_logs" / "run.exit").unlink()  # as if killed
  assert _status(repo, env) == "killed"


def test_run_env_values_with_spaces_and_quotes_arrive_intact(sandbox):
  """run.sh's remote command, run by a shell as ssh would, on a worker."""
  value = "--a=true --b='it''s'"
  text = sandbox.edit(
      EXAMPLE.read_text(),
      RUN_ENV=f"LIBTPU_INIT_ARGS={shlex.quote(value)} OTHER=1",
  )
  (argv,) = sandbox.dry("run", env_text=text)
  remote = sandbox.flag(argv, "command")
  repo, env, _ = _repo(sandbox.tmp)
  home = repo.parent
  (home / "demix_jax").symlink_to(repo)  # REPO_DIR of the example env
  res = subprocess.run(
      ["bash", "-c", remote],
      cwd=home,
      env=env,
      text=True,
      capture_output=True,
      timeout=90,
  )
  assert res.returncode == 0, res.stderr
  assert f"ENV {json.dumps(value)}" in _log(sandbox.tmp)


def test_run_env_that_is_not_name_value_is_refused(sandbox):
  text = sandbox.edit(EXAMPLE.read_text(), RUN_ENV="A=1 oops")
  res = sandbox.run("run", "--dry-run", env_text=text)
  assert res.returncode != 0 and "RUN_ENV: 'oops' is not NAME=VALUE" in (
      res.stderr
  )
  text = sandbox.edit(EXAMPLE.read_text(), RUN_ENV="A='unclosed")
  res = sandbox.run("run", "--dry-run", env_text=text)
  assert res.returncode != 0 and "RUN_ENV" in res.stderr
  assert res.stdout == ""


@pytest.fixture
def fresh_vm(tmp_path):
  """A worker without .venv whose python3.11 lacks a working venv module
  until apt-get installs python3.11-venv (and without bwrap)."""
  repo, env, bin_dir = _repo(tmp_path)
  shutil.rmtree(repo / ".venv")
  installed = tmp_path / "installed"
  fake_python = tmp_path / "fake_python"
  fake_python.write_text(_FAKE_PYTHON)
  fake_python.chmod(0o755)
  # `-m venv --help` works without python3.11-venv; creating one does not.
  _tool(
      bin_dir,
      "python3.11",
      f"""if [[ $1 == -m && $2 == venv ]]; then
  [[ $3 == --help ]] && exit 0
  grep -q python3.11-venv {installed} 2>/dev/null || exit 1
  mkdir -p "$3/bin" && cp {fake_python} "$3/bin/python" && exit 0
fi
exec {sys.executable} "$@\"""",
  )
  _tool(bin_dir, "sudo", 'exec env "$@"')  # sudo VAR=value cmd
  _tool(bin_dir, "apt-get", f'echo "$*" >>{installed}')
  # No bwrap on this PATH: only the fakes and the basics the script needs.
  keep = tmp_path / "sysbin"
  keep.mkdir()
  for tool in (
      "bash",
      "cat",
      "sha256sum",
      "cut",
      "mktemp",
      "rm",
      "mkdir",
      "cp",
      "grep",
      "hostname",
      "env",
      "dirname",
  ):
    src = shutil.which(tool)
    if src:
      os.symlink(src, keep / tool)
  env["PATH"] = f"{bin_dir}{os.pathsep}{keep}"
  return repo, env, installed


def test_fresh_vm_setup_installs_venv_and_bubblewrap_with_a_lock_timeout(
    fresh_vm,
):
  repo, env, installed = fresh_vm
  res = _run(
      repo, env, "python3.11", "jax[tpu]==0", "URL", script="remote_setup.sh"
  )
  assert res.returncode == 0, res.stderr
  lines = installed.read_text().splitlines()
  assert all("-o DPkg::Lock::Timeout=600" in ln for ln in lines), lines
  (install,) = [ln for ln in lines if " install " in ln]
  assert install.split()[-3:] == ["python3.11", "python3.11-venv", "bubblewrap"]
  assert (repo / ".venv" / "bin" / "python").exists()
