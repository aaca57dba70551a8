"""A prepare killed mid-run on gs:// resumes to the same objects.

Sources, tokenizer and output all in the emulated bucket: prepare is
SIGKILLed after committing a few work units (its stall hook holds it
there), no manifest and no temporary object is visible, and the rerun
writes only the remaining units and ends with exactly the objects a clean
prepare writes.
"""

import json
import os
import signal
import subprocess
import sys
import time

from etils import epath
import pytest

from demix_jax.data import bpe
from demix_jax.prepare import beam_pipeline
from tests.gcs.conftest import fresh
from tests.prepare.conftest import make_docs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
UNIT_MB = (8 << 10) / (1 << 20)
STALL = 3


def _cmd(config: str, out: str) -> list[str]:
  return [
      sys.executable,
      "-m",
      "demix_jax.prepare",
      f"--config={config}",
      f"--out_dir={out}",
      f"--unit_mb={UNIT_MB}",
  ]


def _tree(uri: str) -> dict[str, bytes]:
  import fsspec  # pylint: disable=g-import-not-at-top

  fs = fsspec.filesystem("gcs")
  fs.invalidate_cache()
  return {
      p.split(uri.removeprefix("gs://"), 1)[1]: fs.cat(p) for p in fs.find(uri)
  }


@pytest.mark.slow  # two CLI runs of Beam and a clean one
def test_killed_prepare_on_gs_resumes_to_the_same_objects(bucket, tmp_path):
  docs = make_docs(600, 4)
  web = f"{bucket}/prep/web/part-0.jsonl"
  epath.Path(web).write_text(
      "".join(json.dumps({"text": t}) + "\n" for t in docs)
  )
  tok = f"{bucket}/prep/tokenizer.json"
  epath.Path(tok).write_bytes(bpe.train_bpe(docs, 400))
  sources = {"web": {"kind": "jsonl", "paths": [f"{bucket}/prep/web/*.jsonl"]}}
  config = tmp_path / "cfg.py"
  config.write_text(
      "import ml_collections\n"
      "def get_config():\n"
      "  c = ml_collections.ConfigDict()\n"
      f"  c.data = ml_collections.ConfigDict({{'sources': {sources!r},"
      f" 'tokenizer': {{'path': {tok!r}}}}})\n"
      "  return c\n"
  )
  env = dict(os.environ, PYTHONPATH=ROOT)
  out = f"{bucket}/prep/killed"
  proc = subprocess.Popen(
      _cmd(str(config), out),
      env=dict(env, **{beam_pipeline.STALL_ENV: str(STALL)}),
      stderr=subprocess.PIPE,
      text=True,
      start_new_session=True,
  )
  deadline = time.time() + 180
  try:
    while True:
      units = fresh(f"{out}/web/units")
      done = units.glob("unit-*.json") if units.exists() else []
      if len(list(done)) >= STALL:
        break
      assert proc.poll() is None, proc.stderr.read()[-3000:]
      assert time.time() < deadline, sorted(_tree(out))
      time.sleep(0.5)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  before = _tree(out)
  assert "/web/manifest.json" not in before, sorted(before)
  assert not any(".tmp" in k for k in before), sorted(before)
  rerun = subprocess.run(
      _cmd(str(config), out), env=env, capture_output=True, text=True,
      timeout=300,
  )  # fmt: skip
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  after = _tree(out)
  n_units = len([k for k in after if k.startswith("/web/units/unit-")])
  assert n_units > STALL
  assert rerun.stderr.count(" committed, ") == n_units - STALL
  # Nothing committed before the kill was rewritten differently.
  assert all(after[k] == v for k, v in before.items())
  clean = f"{bucket}/prep/clean"
  proc = subprocess.run(
      _cmd(str(config), clean), env=env, capture_output=True, text=True,
      timeout=300,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert after == _tree(clean)
