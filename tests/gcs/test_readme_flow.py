"""README "Your own corpora" as written, on the emulated bucket; killed too.

The section's emulator commands are run as printed, in order: the
`python -m demix_jax.gcs_emulator_server --bucket=my-bucket` server (the
module fixture starts the same server in this process, on a free port:
`STORAGE_EMULATOR_HOST` names that port instead of 9023), the upload of
`data/` (three JSONL corpora and a byte-level BPE `tokenizer.json` written
here, in a temporary directory that is the upload's working directory),
`python -m demix_jax.prepare --config=my_corpora.py:runlocal` and the
pipeline command, whose `my_corpora.py` is the section's config block
verbatim. Everything (sources, tokenizer, prepared shards and manifests,
Orbax checkpoints, each stage's done.json, the search's results.jsonl, the
report) is on gs:// paths.

Then the same pipeline command into a second workdir is SIGKILLed in its
components stage, right after a component's first checkpoint is committed,
and run again (with `--verbosity=0` for its restore lines): it skips the
base, resumes the killed component from that checkpoint and ends with the
uninterrupted run's records, search results and scores. The subprocesses
share a JAX compilation cache (a temporary directory), so the second
workdir's runs compile nothing the first compiled.
"""

import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from demix_jax import gcs_emulator
from demix_jax.data import bpe
from tests import kit
from tests.gcs.conftest import BUCKET
from tests.gcs.conftest import fresh
from tests.prepare.conftest import make_docs

ROOT = str(kit.ROOT)
SOURCES = ("general", "math", "code")
DIRS = {"general": "web", "math": "math", "code": "code"}  # the README's
STAGES = ("base", "components", "search", "final", "report")
WORDS = {
    "math": "x y z 1 2 3 + - = sum integral proof lemma theorem".split(),
    "code": "def return class if else for in ( ) : self print".split(),
}


def readme_section() -> str:
  text = (kit.ROOT / "README.md").read_text(encoding="utf-8")
  start = text.index("## Your own corpora")
  end = text.find("\n## ", start + 1)
  return text[start : end if end > 0 else None]


def readme_blocks(lang: str) -> list[str]:
  return re.findall(rf"```{lang}\n(.*?)```", readme_section(), re.S)


def emulator_lines() -> list[str]:
  (block,) = [b for b in readme_blocks("bash") if "gcs_emulator_server" in b]
  return [ln.strip() for ln in block.splitlines() if ln.strip()]


def test_readme_emulator_commands_are_the_ones_run_here():
  serve, export, upload, prepare, main = emulator_lines()
  assert serve == (
      "python -m demix_jax.gcs_emulator_server --port=9023"
      f" --bucket={BUCKET} &"
  )
  assert export == f"export {gcs_emulator.HOST_ENV}=http://127.0.0.1:9023"
  assert upload.startswith("python -c ") and f"'{BUCKET}/'" in upload
  assert (
      prepare == "python -m demix_jax.prepare --config=my_corpora.py:runlocal"
  )
  assert main == (
      "python -m demix_jax.main --config=my_corpora.py:runlocal"
      f" --workdir=gs://{BUCKET}/run"
  )
  (config,) = readme_blocks("python")
  assert f'B = "gs://{BUCKET}"' in config, config


def _argv(line: str, config: str) -> list[str]:
  words = shlex.split(line.replace("my_corpora.py", config))
  assert words[0] == "python", line
  return [sys.executable] + words[1:]


def _env(cache: str) -> dict:
  return kit.cli_env(
      PYTHONPATH=ROOT,
      JAX_COMPILATION_CACHE_DIR=cache,
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
  )


def _write_data(root) -> None:
  """data/{web,math,code}/part-*.jsonl and data/tokenizer/tokenizer.json."""
  texts = []
  for i, name in enumerate(SOURCES):
    docs = make_docs(1200, 10 + i)
    if name in WORDS:
      rng = random.Random(i)
      docs = [d + " " + " ".join(rng.choices(WORDS[name], k=30)) for d in docs]
    texts += docs
    (root / "data" / DIRS[name]).mkdir(parents=True)
    for part in range(2):
      rows = docs[part * 600 : (part + 1) * 600]
      (root / "data" / DIRS[name] / f"part-{part}.jsonl").write_text(
          "".join(json.dumps({"text": t}) + "\n" for t in rows)
      )
  (root / "data" / "tokenizer").mkdir()
  (root / "data" / "tokenizer" / "tokenizer.json").write_bytes(
      bpe.train_bpe(texts, 512)
  )


def _run(argv, env, cwd=ROOT) -> subprocess.CompletedProcess:
  proc = subprocess.run(
      argv, cwd=cwd, env=env, capture_output=True, text=True,
      timeout=kit.HANG_GUARD_S,
  )  # fmt: skip
  assert proc.returncode == 0, (
      argv[1:3],
      kit.outcome(proc),
      proc.stderr[-4000:],
      proc.stdout[-2000:],
  )
  return proc


def _glob(pattern: str) -> list[str]:
  import fsspec  # pylint: disable=g-import-not-at-top

  fs = fsspec.filesystem("gcs")
  fs.invalidate_cache()
  return [f"gs://{p}" for p in fs.glob(pattern.removeprefix("gs://"))]


def _objects(uri: str) -> list[str]:
  import fsspec  # pylint: disable=g-import-not-at-top

  fs = fsspec.filesystem("gcs")
  fs.invalidate_cache()
  return [f"gs://{p}" for p in fs.find(uri.removeprefix("gs://"))]


def _done(run: str, stage: str) -> dict:
  return json.loads(fresh(f"{run}/{stage}/done.json").read_text())


def _unfinished_components(run: str) -> dict[str, int]:
  """Components with a committed checkpoint and no done.json -> its step."""
  out = {}
  for commit in _glob(f"{run}/components/*/checkpoints/*/commit_success.txt"):
    run_dir, step = commit.rsplit("/checkpoints/", 1)
    if not fresh(f"{run_dir}/done.json").exists():
      out[run_dir] = max(out.get(run_dir, 0), int(step.split("/")[0]))
  return out


def _kill_in_components(argv, env, run: str, log) -> dict[str, int]:
  """The pipeline, SIGKILLed once a component has committed a checkpoint.

  Its output goes to the file `log` (a pipe nobody reads while this waits
  would fill and stall it).
  """
  with open(log, "w") as out:
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
  pattern = f"{run}/components/*/checkpoints/*/commit_success.txt"
  deadline = time.time() + kit.HANG_GUARD_S
  try:
    while not _glob(pattern):
      if proc.poll() is not None:
        raise AssertionError(
            f"the pipeline ended ({kit.outcome(proc)}) before a component"
            f" checkpoint:\n{log.read_text()[-4000:]}"
        )
      assert time.time() < deadline, "no component checkpoint appeared"
      time.sleep(0.05)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  return _unfinished_components(run)


@pytest.fixture(scope="module")
def flow(bucket, tmp_path_factory):
  """The README's commands as written, then a killed run and its rerun."""
  tmp = tmp_path_factory.mktemp("flow")
  _write_data(tmp)
  config = tmp / "my_corpora.py"
  (block,) = readme_blocks("python")
  config.write_text(block)
  env = _env(str(tmp / "jax_cache"))
  _, _, upload, prepare, main = emulator_lines()
  out = {"ref": f"{bucket}/run", "run": f"{bucket}/killed"}
  _run(_argv(upload, str(config)), env, cwd=tmp)
  out["prepare"] = _run(_argv(prepare, str(config)), env)
  out["ref_proc"] = _run(_argv(main, str(config)), env)
  killed = [
      a.replace(out["ref"], out["run"]) for a in _argv(main, str(config))
  ] + ["--verbosity=0"]
  log = tmp / "killed.log"
  out["unfinished"] = _kill_in_components(killed, env, out["run"], log)
  out["killed_log"] = log.read_text()
  out["stage_at_kill"] = next(
      (s for s in STAGES if not fresh(f"{out['run']}/{s}/done.json").exists()),
      "after",
  )
  out["base_done"] = fresh(f"{out['run']}/base/done.json").read_bytes()
  out["rerun"] = _run(killed, env)
  return out


@pytest.mark.slow
def test_prepare_writes_shards_and_manifests_in_the_bucket(flow, bucket):
  del flow
  for name in SOURCES:
    manifest = json.loads(
        fresh(f"{bucket}/prepared/{name}/manifest.json").read_text()
    )
    assert manifest["tokenizer_path"] == (
        f"{bucket}/tokenizer/tokenizer.json"
    ), manifest
    objs = _objects(f"{bucket}/prepared/{name}")
    shards = [o for o in objs if o.endswith(".arrayrecord")]
    assert any("/train-" in s for s in shards), objs
    assert any("/heldout-" in s for s in shards), objs
    assert not any(".tmp" in o for o in objs), objs


@pytest.mark.slow
def test_pipeline_writes_every_record_and_the_report_in_the_bucket(flow):
  run = flow["ref"]
  for stage in STAGES:
    assert fresh(f"{run}/{stage}/done.json").exists(), stage
  objs = _objects(run)
  rows = [
      json.loads(x)
      for x in (
          fresh(f"{run}/search/state/results.jsonl").read_text().splitlines()
      )
  ]
  assert len(rows) == _done(run, "search")["n_proxies"] > 0
  # Orbax wrote the runs' OCDBT checkpoints as objects (tensorstore).
  for part in ("base/run", "components", "final"):
    assert any(
        f"/{part}/" in o and o.endswith("/params/manifest.ocdbt") for o in objs
    ), part
  summary = json.loads(fresh(f"{run}/report/summary.json").read_text())
  assert set(summary["alpha"]) == set(SOURCES)
  assert abs(sum(summary["alpha"].values()) - 1) < 1e-6
  assert (
      "Final runs vs baselines" in fresh(f"{run}/report/report.md").read_text()
  )
  assert any(o.endswith("/report/landscape.png") for o in objs), objs
  assert "Found mixture" in flow["ref_proc"].stdout
  # Nothing meant for the bucket landed in a local folder named "gs:".
  assert not os.path.exists(os.path.join(ROOT, "gs:"))


def _numbers(d):
  """A done.json without what names its workdir or the clock."""
  if isinstance(d, dict):
    return {
        k: _numbers(v)
        for k, v in d.items()
        if k not in ("run_dir", "proxies_csv", "budget_checkpoints")
        and not k.endswith("seconds")
    }
  if isinstance(d, list):
    return [_numbers(v) for v in d]
  if isinstance(d, str):
    return d.replace(f"{BUCKET}/killed", f"{BUCKET}/run")
  return d


@pytest.mark.slow
def test_killed_pipeline_resumes_to_the_uninterrupted_result(flow):
  ref, run = flow["ref"], flow["run"]
  log = flow["rerun"].stdout + flow["rerun"].stderr
  assert flow["stage_at_kill"] == "components", flow["killed_log"][-3000:]
  assert flow["unfinished"], flow["killed_log"][-3000:]
  assert "[base] complete, skipped" in flow["rerun"].stdout
  assert fresh(f"{run}/base/done.json").read_bytes() == flow["base_done"]
  for run_dir, step in flow["unfinished"].items():
    assert f"restored step {step} from own" in log, (run_dir, log[-3000:])
  for stage in ("base", "components", "search", "final"):
    assert _numbers(_done(run, stage)) == _numbers(_done(ref, stage)), stage
  a, b = _done(ref, "search"), _done(run, "search")
  assert a["alpha"] == b["alpha"] and a["merged_scores"] == b["merged_scores"]
  for name, final in _done(ref, "final")["runs"].items():
    assert _done(run, "final")["runs"][name]["scores"] == final["scores"]
  rows = {
      w: fresh(f"{w}/search/state/results.jsonl").read_text().splitlines()
      for w in (ref, run)
  }
  assert rows[run] == rows[ref]
  summaries = [
      json.loads(fresh(f"{w}/report/summary.json").read_text())
      for w in (ref, run)
  ]
  assert summaries[0]["alpha"] == summaries[1]["alpha"]
  assert summaries[0]["final"] == summaries[1]["final"]
