"""Every gcloud command the scripts print, through the real gcloud's parser.

Where gcloud is installed, each distinct command shape of the --dry-run
output (every script, VM and queued resource, spot, a project, extra ssh
flags) runs under the real CLI with a throwaway configuration directory and
no credentials. gcloud parses the whole command line first and exits 2 on a
parse error ("unrecognized arguments", "argument --x: invalid ..."); a
command that parses goes on to look for an account and stops there with an
auth error, before any request. So a flag that is wrong or was removed from
gcloud fails this test, and nothing touches the network (the metadata
server probe is off; each call has a timeout).
"""

import concurrent.futures
import os
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "launch" / "tpu.env.example"
GCLOUD = shutil.which("gcloud")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(GCLOUD is None, reason="gcloud is not installed"),
]

_PARSE_ERROR = re.compile(
    r"unrecognized arguments|argument [^:]+: (invalid|expected)|Invalid choice"
    r"|must be specified|is not a valid|not one of"
)
_AUTH_ERROR = re.compile(r"active account|auth login|credentials", re.I)


def _parse(argv, tmp_path):
  """(exit code, stderr) of gcloud with argv, without credentials."""
  config = tmp_path / f"gcloud-config-{abs(hash(tuple(argv)))}"
  config.mkdir()
  env = {
      "PATH": os.environ["PATH"],
      "HOME": str(tmp_path),
      "CLOUDSDK_CONFIG": str(config),
      "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
      "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
      "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1",
      "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
      "CLOUDSDK_CORE_PROJECT": "demix-parse-check",
  }
  res = subprocess.run(
      [GCLOUD, *argv[1:], "--verbosity=error"],
      env=env,
      text=True,
      capture_output=True,
      timeout=120,
  )
  return res.returncode, res.stderr


def _shape(argv):
  """The command path and the flag names (values do not change parsing)."""
  words = [a for a in argv[1:] if not a.startswith("-")]
  flags = sorted(a.split("=", 1)[0] for a in argv if a.startswith("--"))
  return tuple(words[:5]), tuple(flags)


def _printed_commands(sandbox):
  text = EXAMPLE.read_text()
  variants = [
      text,
      sandbox.edit(text, QUEUED="true", SPOT="true", PROJECT="my-proj"),
      sandbox.edit(text, SSH_FLAGS="--internal-ip"),
      sandbox.edit(
          text,
          SSH_FLAGS="--tunnel-through-iap --strict-host-key-checking=no",
      ),
  ]
  scripts = {
      "create": [()],
      "delete": [("--quiet",)],
      "sync": [()],
      "setup": [()],
      "run": [("--stages=base",)],
      "logs": [("all",)],
      "compile_check": [()],
      "babysit": [()],
  }
  seen, out = set(), []
  for env_text in variants:
    for script, arg_sets in scripts.items():
      for args in arg_sets:
        for argv in sandbox.dry(script, *args, env_text=env_text):
          if argv[0] == "gcloud" and _shape(argv) not in seen:
            seen.add(_shape(argv))
            out.append(argv)
  return out


def test_every_printed_command_parses_under_the_real_gcloud(sandbox, tmp_path):
  commands = _printed_commands(sandbox)
  subcommands = {_shape(c)[0] for c in commands}
  assert len(commands) >= 10 and len(subcommands) >= 7, commands
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    results = list(pool.map(lambda c: _parse(c, tmp_path), commands))
  for argv, (code, err) in zip(commands, results):
    assert code != 2 and not _PARSE_ERROR.search(err), (argv, err)
    # It parsed and stopped at the missing account, before any request.
    assert code != 0 and _AUTH_ERROR.search(err), (argv, code, err)


def test_a_wrong_flag_is_told_from_an_auth_error(sandbox, tmp_path):
  (argv,) = sandbox.dry("create")
  code, err = _parse([*argv, "--no-such-flag"], tmp_path)
  assert code == 2 and _PARSE_ERROR.search(err), err
  # A flag the GA track lacks (IAP is alpha-only for TPU VMs).
  (ssh,) = sandbox.dry("logs")
  code, err = _parse([*ssh, "--tunnel-through-iap"], tmp_path)
  assert code == 2 and _PARSE_ERROR.search(err), err
