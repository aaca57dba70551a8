"""The prepare command line: bad input exits 2 early; kill and rerun."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from demix_jax.prepare import beam_pipeline
from demix_jax.prepare import runner
from demix_jax.prepare import units
from tests.prepare.conftest import make_docs
from tests.prepare.conftest import source_dicts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
UNIT_BYTES = 8 << 10


def _config(path, sources: dict, tokenizer: str) -> str:
  path.write_text(
      "import ml_collections\n"
      "def get_config():\n"
      "  c = ml_collections.ConfigDict()\n"
      f"  c.data = ml_collections.ConfigDict({{'sources': {sources!r},"
      f" 'tokenizer': {{'path': {tokenizer!r}}}}})\n"
      "  return c\n"
  )
  return str(path)


def _cmd(config: str, out: str, *extra: str) -> list[str]:
  return [
      sys.executable,
      "-m",
      "demix_jax.prepare",
      f"--config={config}",
      f"--out_dir={out}",
      f"--unit_mb={UNIT_BYTES / (1 << 20)}",
      *extra,
  ]


def _env(**extra) -> dict:
  return dict(os.environ, PYTHONPATH=ROOT, **extra)


def _shards(out: str) -> list[str]:
  return [
      os.path.join(d, f)
      for d, _, files in os.walk(out)
      for f in files
      if f.endswith(".arrayrecord")
  ]


def _jsonl(path, texts, field="text"):
  path.write_text("".join(json.dumps({field: t}) + "\n" for t in texts))
  return str(path)


def _bad_cases(tmp_path, vocab):
  good = _jsonl(tmp_path / "good.jsonl", make_docs(200, 3))
  (tmp_path / "empty.jsonl").write_bytes(b"")
  (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
  _jsonl(tmp_path / "nofield.jsonl", ["a b c"], field="content")
  _jsonl(tmp_path / "tiny.jsonl", ["one doc", "two docs", "three docs"])
  late = make_docs(2000, 4)
  with open(tmp_path / "late.jsonl", "w") as f:
    f.write("".join(json.dumps({"text": t}) + "\n" for t in late))
    f.write("{not json\n")  # past the pre-pass's head of the file
  (tmp_path / "tokenizer.json").write_text('{"model": {"type": "BPE"}}')
  ok = {"kind": "jsonl", "paths": [good]}
  tok = vocab.path
  return {
      "missing": ({"web": {"kind": "jsonl", "paths": [f"{tmp_path}/no/*.jsonl"]}},
                  tok, "data.sources.web.paths"),
      "empty": ({"web": {"kind": "jsonl", "paths": [f"{tmp_path}/*.jsonl"]}},
                tok, "data.sources.web.paths"),
      "undecodable": ({"a": ok, "notes": {"kind": "text", "unit": "line",
                                          "paths": [f"{tmp_path}/latin1.txt"]}},
                      tok, "data.sources.notes.paths"),
      "no_field": ({"a": ok, "web": {"kind": "jsonl", "paths": [
          f"{tmp_path}/nofield.jsonl"]}}, tok, "data.sources.web.feature"),
      "heldout_empty": ({"a": ok, "web": {
          "kind": "jsonl", "paths": [f"{tmp_path}/tiny.jsonl"],
          "heldout_percent": 0.01}}, tok, "data.sources.web.heldout_percent"),
      "tokenizer_kind": ({"a": ok}, str(tmp_path / "tokenizer.json"),
                         "data.tokenizer.path"),
      "late_bad_line": ({"web": {"kind": "jsonl", "paths": [
          f"{tmp_path}/late.jsonl"]}}, tok, "source 'web' (paths)"),
  }  # fmt: skip


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "empty",
        "undecodable",
        "no_field",
        "heldout_empty",
        "tokenizer_kind",
        "late_bad_line",
    ],
)
def test_bad_input_exits_2_naming_source_and_key(tmp_path, vocab, case):
  sources, tok, where = _bad_cases(tmp_path, vocab)[case]
  config = _config(tmp_path / "cfg.py", sources, tok)
  out = str(tmp_path / "out")
  proc = subprocess.run(
      _cmd(config, out), env=_env(), capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 2, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and where in last, last
  assert "Fix:" in last
  if case != "late_bad_line":  # found by the pre-pass: nothing written
    assert not os.path.exists(out) or not _shards(out)


def test_prepare_beam_args_of_a_pipeline_config(tmp_path, vocab):
  """A pipeline config's prepare.beam_args is read: a tuple of Beam flags
  runs (it used to exit 2 as an unknown key), a string exits 2 naming the
  key before any shard is written."""
  docs = _jsonl(tmp_path / "good.jsonl", make_docs(200, 3))
  config = _config(
      tmp_path / "cfg.py",
      {"web": {"kind": "jsonl", "paths": [docs]}},
      vocab.path,
  )
  text = (
      open(config)
      .read()
      .replace(
          "  return c\n",
          "  c.prepare = ml_collections.ConfigDict("
          "{'beam_args': '--runner=DirectRunner'})\n  return c\n",
      )
  )
  with open(config, "w") as f:
    f.write(text)
  out = str(tmp_path / "out")
  proc = subprocess.run(
      _cmd(config, out), env=_env(), capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 2, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert "prepare.beam_args" in last and "Fix:" in last, last
  assert not os.path.exists(out) or not _shards(out)
  with open(config, "w") as f:
    f.write(
        text.replace("'--runner=DirectRunner'", "('--runner=DirectRunner',)")
    )
  proc = subprocess.run(
      _cmd(config, out), env=_env(), capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert _shards(out)


def _tree(out: str) -> dict[str, bytes]:
  got = {}
  for d, _, files in os.walk(out):
    for f in files:
      p = os.path.join(d, f)
      with open(p, "rb") as fh:
        got[os.path.relpath(p, out)] = fh.read()
  return got


@pytest.mark.slow  # two CLI runs and one in-process run of Beam
def test_killed_prepare_resumes_to_the_same_result(
    tmp_path, corpus_dir, specs, vocab
):
  web = {"web": source_dicts(corpus_dir)["web"]}
  config = _config(tmp_path / "cfg.py", web, vocab.path)
  out = str(tmp_path / "killed")
  stall = 3
  proc = subprocess.Popen(
      _cmd(config, out),
      env=_env(**{beam_pipeline.STALL_ENV: str(stall)}),
      stderr=subprocess.PIPE,
      text=True,
      start_new_session=True,
  )
  unit_dir = os.path.join(out, "web", "units")
  deadline = time.time() + 240
  try:
    while True:
      # Commit records only: units/ also holds plan.json, written first
      # (counting it broke the wait one commit early, a flake).
      names = os.listdir(unit_dir) if os.path.isdir(unit_dir) else []
      n = sum(f.startswith("unit-") and f.endswith(".json") for f in names)
      if n >= stall:
        break
      assert proc.poll() is None, proc.stderr.read()[-3000:]
      assert time.time() < deadline, "prepare never committed 3 units"
      time.sleep(0.2)
  finally:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  assert not os.path.exists(os.path.join(out, "web", "manifest.json"))
  # Every visible shard is a complete one: it is listed by a commit record
  # or (killed between rename and record) it is rewritten identically.
  visible = [f for f in os.listdir(os.path.join(out, "web")) if f[0] != "."]
  assert all(f.endswith(".arrayrecord") or f == "units" for f in visible)
  rerun = subprocess.run(
      _cmd(config, out), env=_env(), capture_output=True, text=True, timeout=300
  )
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  n_units = len(units.plan_source(specs["web"], _opts(tmp_path))[0])
  redone = rerun.stderr.count(" committed, ")
  assert redone == n_units - stall, rerun.stderr[-3000:]
  clean = str(tmp_path / "clean")
  runner.prepare_sources(
      {"web": specs["web"]},
      vocab,
      units.PrepareOptions(out_dir=clean, unit_bytes=UNIT_BYTES),
  )
  assert _tree(out) == _tree(clean)


def _opts(tmp_path):
  return units.PrepareOptions(out_dir=str(tmp_path), unit_bytes=UNIT_BYTES)


@pytest.mark.slow  # Beam starts two worker processes
def test_beam_options_pass_through_to_worker_processes(
    tmp_path, corpus_dir, specs, vocab
):
  """The DoFn pickles to other processes, as on Dataflow; same shards."""
  notes = {"notes": source_dicts(corpus_dir)["notes"]}
  config = _config(tmp_path / "cfg.py", notes, vocab.path)
  out = str(tmp_path / "mp")
  beam = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
  proc = subprocess.run(
      _cmd(config, out, *beam),
      env=_env(),
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  clean = str(tmp_path / "clean")
  runner.prepare_sources(
      {"notes": specs["notes"]},
      vocab,
      units.PrepareOptions(out_dir=clean, unit_bytes=UNIT_BYTES),
  )
  assert _tree(out) == _tree(clean)
