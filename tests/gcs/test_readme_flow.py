"""README "Your own corpora" on the emulated bucket, killed and resumed.

The README's flow, with its own config file and commands: three JSONL
corpora and a byte-level BPE `tokenizer.json` in a bucket, `python -m
demix_jax.prepare --config=my_corpora.py`, then `python -m demix_jax.main
--config=my_corpora.py --workdir=gs://.../run`, everything (sources,
tokenizer, prepared shards and manifests, Orbax checkpoints, each stage's
done.json, the search's results.jsonl, the report) on gs:// paths. The
config is the README's code block as printed, with two substitutions: the
emulator's bucket for `gs://my-bucket`, and `runlocal,` at the head of
`local_jsonl`'s argument (the runlocal twin of the demo, as the config's
docstring suggests for a smoke run). The pipeline is SIGKILLed once, after
the components stage finished (in the search), and the README's command run
again finishes it: base and components are skipped, not retrained. One
shared run serves every test here.

Known gap (this test fails on it now and then): tensorstore's OCDBT
checkpoints against gcp-storage-emulator sometimes fail with "Malformed
StorageGeneration" when tensorstore reads back a manifest.ocdbt it wrote
(the emulator's object generations are not what tensorstore expects).
Seen during a plain save (components, second checkpoint) and when a step
is re-saved after a kill; the whole flow has also passed end to end.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

from etils import epath
import pytest

from demix_jax.data import bpe
from tests.gcs.conftest import fresh
from tests.prepare.conftest import make_docs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
README = os.path.join(ROOT, "README.md")
SOURCES = ("general", "math", "code")
DIRS = {"general": "web", "math": "math", "code": "code"}  # the README's
STAGES = ("base", "components", "search", "final", "report")


def readme_section() -> str:
  text = open(README, encoding="utf-8").read()
  start = text.index("## Your own corpora")
  end = text.find("\n## ", start + 1)
  return text[start : end if end > 0 else None]


def readme_blocks(lang: str) -> list[str]:
  return re.findall(rf"```{lang}\n(.*?)```", readme_section(), re.S)


def _config_text(bucket: str) -> str:
  (block,) = readme_blocks("python")
  assert 'B = "gs://my-bucket"' in block, block
  assert 'local_jsonl.get_config(\n      f"general=' in block, block
  block = block.replace("gs://my-bucket", bucket)
  return block.replace('f"general=', '"runlocal," f"general=', 1)


def _commands(config: str, bucket: str) -> tuple[list[str], list[str]]:
  """The README's in-process prepare and its pipeline command, as argv."""
  (block,) = readme_blocks("bash")
  lines = [ln.split("#")[0].strip() for ln in block.splitlines()]
  prepare = "python -m demix_jax.prepare --config=my_corpora.py"
  main = (
      "python -m demix_jax.main --config=my_corpora.py"
      " --workdir=gs://my-bucket/run"
  )
  assert prepare in lines and main in lines, block

  def argv(line):
    words = line.replace("my_corpora.py", config)
    words = words.replace("gs://my-bucket", bucket).split()
    return [sys.executable] + words[1:]

  return argv(prepare), argv(main)


def _env() -> dict:
  return dict(
      os.environ,
      PYTHONPATH=ROOT,
      XLA_FLAGS="--xla_force_host_platform_device_count=1",
      TF_CPP_MIN_LOG_LEVEL="2",
  )


def _upload_corpora(bucket: str) -> None:
  words = {
      "general": None,
      "math": "x y z 1 2 3 + - = sum integral proof lemma theorem".split(),
      "code": "def return class if else for in ( ) : self print".split(),
  }
  import random  # pylint: disable=g-import-not-at-top

  texts = []
  for i, name in enumerate(SOURCES):
    docs = make_docs(1200, 10 + i)
    if words[name]:
      rng = random.Random(i)
      docs = [d + " " + " ".join(rng.choices(words[name], k=30)) for d in docs]
    texts += docs
    for part in range(2):
      chunk = docs[part * 600 : (part + 1) * 600]
      epath.Path(f"{bucket}/{DIRS[name]}/part-{part}.jsonl").write_text(
          "".join(json.dumps({"text": t}) + "\n" for t in chunk)
      )
  epath.Path(f"{bucket}/tokenizer/tokenizer.json").write_bytes(
      bpe.train_bpe(texts, 512)
  )


def _wait_for(path: str, proc, deadline: float) -> None:
  while not fresh(path).exists():
    if proc.poll() is not None:
      log = proc.stdout.read()
      # The CLI's own error, not the shutdown noise of async clients.
      log = "\n".join(
          ln
          for ln in log.splitlines()
          if ("rror" in ln or "File" in ln)
          and "asyncio" not in ln
          and "Event loop is closed" not in ln
      )[-6000:]
      raise AssertionError(f"the pipeline ended before {path}:\n{log}")
    assert time.time() < deadline, f"{path} never appeared"
    time.sleep(0.5)


@pytest.fixture(scope="module")
def flow(bucket, tmp_path_factory):
  """Prepare, a pipeline killed after its components stage, the rerun."""
  _upload_corpora(bucket)
  config = tmp_path_factory.mktemp("cfg") / "my_corpora.py"
  config.write_text(_config_text(bucket))
  prepare, main = _commands(str(config), bucket)
  run = f"{bucket}/run"
  out = {}
  proc = subprocess.run(
      prepare, cwd=ROOT, env=_env(), capture_output=True, text=True,
      timeout=600,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-4000:]
  out["prepare"] = proc
  killed = subprocess.Popen(
      main, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True, start_new_session=True,
  )  # fmt: skip
  try:
    _wait_for(f"{run}/components/done.json", killed, time.time() + 1200)
    out["base_done"] = fresh(f"{run}/base/done.json").read_bytes()
  finally:
    if killed.poll() is None:
      os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
  out["killed_log"] = killed.stdout.read()
  out["report_before_kill"] = fresh(f"{run}/report/done.json").exists()
  proc = subprocess.run(
      main, cwd=ROOT, env=_env(), capture_output=True, text=True,
      timeout=1500,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]
  out["rerun"] = proc
  out["run"] = run
  return out


def _objects(uri: str) -> list[str]:
  import fsspec  # pylint: disable=g-import-not-at-top

  fs = fsspec.filesystem("gcs")
  fs.invalidate_cache()
  return [f"gs://{p}" for p in fs.find(uri)]


@pytest.mark.slow
def test_prepare_writes_shards_and_manifests_in_the_bucket(flow, bucket):
  for name in SOURCES:
    manifest = json.loads(
        fresh(f"{bucket}/prepared/{name}/manifest.json").read_text()
    )
    assert manifest["tokenizer_path"].startswith(bucket), manifest
    objs = _objects(f"{bucket}/prepared/{name}")
    shards = [o for o in objs if o.endswith(".arrayrecord")]
    assert any("/train-" in s for s in shards), objs
    assert any("/heldout-" in s for s in shards), objs
    assert not any(".tmp" in o for o in objs), objs


@pytest.mark.slow
def test_pipeline_writes_every_record_and_the_report_in_the_bucket(flow):
  run = flow["run"]
  for stage in STAGES:
    assert fresh(f"{run}/{stage}/done.json").exists(), stage
  objs = _objects(run)
  assert any(o.endswith("/results.jsonl") for o in objs), objs
  rows = [
      json.loads(x)
      for o in objs
      if o.endswith("/results.jsonl")
      for x in fresh(o).read_text().splitlines()
  ]
  assert rows, "results.jsonl is empty"
  # Orbax wrote the runs' checkpoints as objects (tensorstore).
  assert any(o.endswith("/_CHECKPOINT_METADATA") for o in objs), objs
  summary = json.loads(fresh(f"{run}/report/summary.json").read_text())
  alpha = summary["alpha"]
  assert set(alpha) == set(SOURCES)
  assert abs(sum(alpha.values()) - 1) < 1e-6
  assert fresh(f"{run}/report/report.md").read_text().strip()
  assert "Found mixture" in flow["rerun"].stdout
  # Nothing meant for the bucket landed in a local folder named "gs:".
  assert not os.path.exists(os.path.join(ROOT, "gs:"))


@pytest.mark.slow
def test_killed_pipeline_resumes_from_the_bucket(flow):
  run = flow["run"]
  assert not flow["report_before_kill"], flow["killed_log"][-2000:]
  assert "[base] complete, skipped" in flow["rerun"].stdout
  assert "[components] complete, skipped" in flow["rerun"].stdout
  # The base run's record is the one written before the kill.
  assert fresh(f"{run}/base/done.json").read_bytes() == flow["base_done"]
