"""launch/babysit.sh against a scripted fake gcloud; sync refusal; ssh flags.

The fake gcloud (conftest.py) answers describe, create and the workers'
status from a script, so the supervisor's loop meets failures in a set
order: creates that fail, a run that dies, a preempted queued resource.
"""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "launch" / "tpu.env.example"


def _status(*states):
  return "".join(f"demix-status w{i} {s}\n" for i, s in enumerate(states))


def _remote(call):
  return next((a for a in call if a.startswith("--command=")), "")


def _babysit(sandbox, *args, env_text=None):
  return sandbox.run(
      "babysit",
      "--poll=0",
      f"--log-dir={sandbox.tmp / 'logs'}",
      *args,
      env_text=env_text,
      timeout=300,
  )


def test_create_fails_twice_the_run_dies_once_then_finishes(sandbox):
  sandbox.gcloud_script([
      # Missing until the third create succeeds.
      {"match": ["describe"], "times": 3, "exit": 1,
       "stderr": "ERROR: (gcloud) NOT_FOUND: node demix-v5e-8\n"},
      {"match": ["tpu-vm", "create"], "times": 2, "exit": 1,
       "stderr": "ERROR: no capacity\n"},
      {"match": ["describe"], "times": 1, "stdout": "CREATING\n"},
      {"match": ["describe"], "stdout": "READY\n"},
      {"match": ["remote_status.sh"], "times": 1, "stdout": _status("none")},
      {"match": ["remote_status.sh"], "times": 1,
       "stdout": _status("killed")},
      {"match": ["remote_status.sh"], "times": 1,
       "stdout": _status("running")},
      {"match": ["remote_status.sh"], "stdout": _status("exited:0")},
  ])  # fmt: skip
  res = _babysit(sandbox, "--", "--stages=base")
  assert res.returncode == 0, res.stderr
  calls = [c for c in sandbox.recorded() if c[0] == "gcloud"]
  creates = [c for c in calls if c[3:5] == ["tpu-vm", "create"]]
  assert len(creates) == 3
  runs = [_remote(c) for c in calls if "launch/remote_run.sh" in _remote(c)]
  assert len(runs) == 2  # the first attempt, and again after it died
  assert "DEMIX_ATTEMPT=1" in runs[0] and "DEMIX_ATTEMPT=2" in runs[1]
  assert all("--stages=base" in r for r in runs)
  # The new slice got the code and a venv; the rerun on it needs neither.
  assert sum("remote_setup.sh" in _remote(c) for c in calls) == 1
  assert sum("tar -xzf" in _remote(c) for c in calls) == 1
  # The failures were counted: two creates and one dead run.
  assert "failure 3 of 5 tolerated: the run died (attempt 1)" in res.stderr
  assert "finished on every worker (attempt 2)" in res.stderr
  # Every attempt's logs are copied to their own directory.
  fetched = [c for c in calls if c[3:5] == ["tpu-vm", "scp"] and ":" in c[5]]
  assert {c[6] for c in fetched} == {
      f"{sandbox.tmp / 'logs'}/attempt-1/",
      f"{sandbox.tmp / 'logs'}/attempt-2/",
  }
  assert all(c[5].endswith(f"{c[6][-2]}.log") for c in fetched)
  assert (sandbox.tmp / "logs" / "attempt-2").is_dir()


def test_gives_up_after_the_allowed_failures(sandbox):
  sandbox.gcloud_script([
      {"match": ["describe"], "exit": 1, "stderr": "NOT_FOUND\n"},
      {"match": ["create"], "exit": 1, "stderr": "no capacity\n"},
  ])  # fmt: skip
  res = _babysit(sandbox, "--max-attempts=2")
  assert res.returncode == 1
  assert "giving up after 3 failures" in res.stderr
  creates = [c for c in sandbox.recorded() if "create" in c]
  assert len(creates) == 3


def test_preempted_queued_resource_is_recreated(sandbox):
  text = sandbox.edit(EXAMPLE.read_text(), QUEUED="true", SPOT="true")
  sandbox.gcloud_script([
      {"match": ["queued-resources", "describe"], "times": 1,
       "stdout": "SUSPENDED\n"},
      {"match": ["queued-resources", "describe"], "times": 1,
       "stdout": "WAITING_FOR_RESOURCES\n"},
      {"match": ["queued-resources", "describe"], "stdout": "ACTIVE\n"},
      {"match": ["remote_status.sh"], "times": 1, "stdout": _status("none")},
      {"match": ["remote_status.sh"], "stdout": _status("exited:0")},
  ])  # fmt: skip
  res = _babysit(sandbox, env_text=text)
  assert res.returncode == 0, res.stderr
  calls = [c[3:5] for c in sandbox.recorded() if c[0] == "gcloud"]
  i = calls.index(["queued-resources", "delete"])
  assert calls[i + 1] == ["queued-resources", "create"]  # with --spot
  assert "the slice is SUSPENDED" in res.stderr


def test_a_live_run_found_at_start_is_watched_not_restarted(sandbox):
  sandbox.gcloud_script([
      {"match": ["describe"], "stdout": "READY\n"},
      {"match": ["remote_status.sh"], "times": 2,
       "stdout": _status("running", "running")},
      {"match": ["remote_status.sh"],
       "stdout": _status("exited:0", "exited:0")},
  ])  # fmt: skip
  res = _babysit(sandbox)
  assert res.returncode == 0, res.stderr
  assert not [c for c in sandbox.recorded() if "remote_run.sh" in _remote(c)]
  assert "a run is live: watching it as attempt 1" in res.stderr


def test_sync_refuses_while_a_run_is_live(sandbox):
  sandbox.gcloud_script([
      {"match": ["pgrep"], "exit": 1,
       "stdout": "4242 .venv/bin/python -m demix_jax.main --config=c.py\n"},
  ])  # fmt: skip
  res = sandbox.run("sync")
  assert res.returncode != 0
  assert "a run is live" in res.stderr and "--force" in res.stderr
  assert [c[0] for c in sandbox.recorded()] == ["gcloud"]  # nothing copied
  res = sandbox.run("sync", "--force")
  assert res.returncode == 0, res.stderr


def test_multi_host_ssh_needs_an_agent(sandbox):
  text = sandbox.edit(EXAMPLE.read_text(), ACCELERATOR_TYPE="v5p-32")
  for rc, needle in ((2, "ssh-agent -s"), (1, "holds none")):
    res = sandbox.run("run", env_text=text, FAKE_SSH_ADD_RC=str(rc))
    assert res.returncode != 0 and needle in res.stderr
    assert "ssh-add ~/.ssh/google_compute_engine" in res.stderr
  assert [c[0] for c in sandbox.recorded()] == ["ssh-add", "ssh-add"]
  res = sandbox.run("run", env_text=text, FAKE_SSH_ADD_RC="0")
  assert res.returncode == 0, res.stderr
  # One host (the example's v5litepod-8): no agent needed.
  res = sandbox.run("run", FAKE_SSH_ADD_RC="2")
  assert res.returncode == 0, res.stderr


def test_extra_ssh_flags_reach_every_ssh_and_scp(sandbox):
  text = sandbox.edit(EXAMPLE.read_text(), SSH_FLAGS="--internal-ip")
  for script in ("sync", "run", "logs", "compile_check", "babysit"):
    for argv in sandbox.dry(script, env_text=text):
      if argv[0] != "gcloud":
        continue
      if argv[4] in ("ssh", "scp"):
        assert "--internal-ip" in argv, argv
      else:
        assert "--internal-ip" not in argv, argv  # describe, create, ...
  text = sandbox.edit(EXAMPLE.read_text(), SSH_FLAGS="--tunnel-through-iap")
  (argv,) = sandbox.dry("run", env_text=text)
  # gcloud has the IAP tunnel for TPU VMs in its alpha track only.
  assert argv[:5] == ["gcloud", "alpha", "compute", "tpus", "tpu-vm"]
  assert "--tunnel-through-iap" in argv
  text = sandbox.edit(EXAMPLE.read_text(), SSH_FLAGS="--zone=x")
  res = sandbox.run("run", "--dry-run", env_text=text)
  assert res.returncode != 0 and "SSH_FLAGS: '--zone=x'" in res.stderr
