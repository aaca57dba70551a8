"""End to end: the runlocal pipeline, its report, and resume after a kill.

One uninterrupted run (base, components, search, final, report) in a temp
workdir; then the same pipeline in a second workdir, killed with SIGKILL at
seven seeded random moments spread over every stage and finished: its
results equal the uninterrupted ones and nothing was rescored or retrained.
Damaged saved results (a done.json, the search's results file, a
checkpoint) stop a rerun with exit code 4 and the file's name.
"""

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from demix_jax.report import canvas
from tests import kit
from tests.kit import ROOT

CONFIG = "--config=configs/demo.py:runlocal"


def _cmd(workdir, stages):
  return [
      sys.executable,
      "-m",
      "demix_jax.main",
      CONFIG,
      f"--workdir={workdir}",
      f"--stages={stages}",
  ]


def _run(workdir, stages, *extra):
  proc = kit.run_cli(cmd=_cmd(workdir, stages) + list(extra))
  kit.assert_ok(proc)
  return proc


def _done(workdir, stage):
  return json.loads((workdir / stage / "done.json").read_text())


@pytest.fixture
def finished(runlocal_run):
  """The README's `make demo`, on the runlocal twin, with a relative WORKDIR
  (the session's shared run: tests/kit/runs.py)."""
  return runlocal_run.workdir, runlocal_run.proc


@pytest.mark.slow
def test_pipeline_end_to_end(finished):
  workdir, proc = finished
  assert "Found mixture" in proc.stdout
  assert "Final runs" in proc.stdout
  summary = json.loads((workdir / "report" / "summary.json").read_text())
  for key in (
      "alpha",
      "source_weights",
      "predicted",
      "final",
      "baselines",
      "cost",
  ):
    assert key in summary, key
  alpha = np.array(list(summary["alpha"].values()))
  assert abs(alpha.sum() - 1) < 1e-6 and (alpha >= 0).all()
  assert abs(sum(summary["source_weights"].values()) - 1) < 1e-6
  assert "natural" in summary["baselines"]
  for target, value in summary["final"].items():
    assert np.isfinite(value), target
  assert summary["cost"]["base"]["tokens"] > 0
  for name in ("landscape", "surrogate", "rounds", "components", "final"):
    path = workdir / "report" / f"{name}.png"
    assert path.exists(), name
    assert canvas.png_is_drawn(str(path)), name
  report = (workdir / "report" / "report.md").read_text()
  assert "Final runs vs baselines" in report and "landscape.png" in report
  # The objective beside the scores: trained and merged proxy, found mixture
  # and baseline, and the normalised mean agrees with the base's scores.
  assert "Objective (normalized" in proc.stdout
  assert "The objective, trained and as a merged proxy" in report
  search = json.loads((workdir / "search" / "done.json").read_text())
  assert set(search["proxies"]) == {"demix", "natural"}
  base = search["base_scores"]
  targets = search["objective"]["targets"]
  for name, o in summary["objectives"].items():
    scores = summary["final"] if name == "demix" else summary["baselines"][name]
    change = np.mean([(scores[t] - base[t]) / abs(base[t]) for t in targets])
    assert o["trained_normalized"] == pytest.approx(change, rel=1e-9)
    proxy = search["proxies"][name]
    change = np.mean(
        [(proxy["merged_scores"][t] - base[t]) / abs(base[t]) for t in targets]
    )
    assert o["proxy_normalized"] == pytest.approx(change, rel=1e-9)
  # A rerun skips every finished stage (nothing is retrained).
  before = {
      s: (workdir / s / "done.json").stat().st_mtime_ns
      for s in ("base", "components", "search", "final")
  }
  proc = _run(workdir, "base,components,search,final")
  after = {s: (workdir / s / "done.json").stat().st_mtime_ns for s in before}
  assert before == after
  for s in ("base", "components", "search", "final"):
    assert f"[{s}] complete, skipped" in proc.stdout, proc.stdout[-3000:]


# SIGKILLs of the runlocal pipeline: (trigger, shortest and longest delay
# in s). A kill happens a seeded random delay after its trigger holds in the
# running process (or after the process started, if it already held). The
# triggers walk through every stage: the base while it compiles and trains,
# a component right after a kept checkpoint, between components, the
# search's rounds and what follows them (gradient search, diagnostics), a
# final run after its checkpoint, and the report once its first plot is
# written. The windows are short because the runlocal runs are: 10 training
# steps take ~0.5 s and the report ~1 s on 2 cores.
_KILLS = (
    ("base/run", 0.5, 3.0),
    ("components/general/checkpoints/6", 0.0, 0.15),
    ("components/general/done.json", 0.5, 2.0),
    ("search/state/results.jsonl", 0.0, 1.0),
    ("search/state/result.json", 0.5, 5.0),
    ("final/demix/checkpoints/10", 0.0, 0.15),
    ("report/landscape.png", 0.0, 0.25),
)
KILL_SEED = 18
STAGES = ("base", "components", "search", "final", "report")


def _stage_at(workdir):
  """The stage a kill interrupted: the first without its done.json."""
  for s in ("base", "components", "search", "final", "report"):
    if not (workdir / s / "done.json").exists():
      return s
  return "after"


def _unfinished_runs(workdir):
  """Training runs with a saved checkpoint but no done.json -> newest step."""
  runs = [(workdir / "base" / "run", workdir / "base" / "done.json")]
  for part in ("components", "final"):
    runs += [(d, d / "done.json") for d in (workdir / part).glob("*")]
  out = {}
  for run_dir, done in runs:
    ckpt = run_dir / "checkpoints"
    steps = [int(p.name) for p in ckpt.glob("*") if p.name.isdigit()]
    if steps and not done.exists():
      out[str(run_dir)] = max(steps)
  return out


def _records(workdir):
  """Per-run records (components, final runs) -> their mtime."""
  out = {}
  for part in ("components", "final"):
    for p in (workdir / part).glob("*/done.json"):
      out[str(p.relative_to(workdir))] = p.stat().st_mtime_ns
  return out


def _complete_lines(path):
  if not path.exists():
    return []
  return path.read_bytes().split(b"\n")[:-1]


def _numbers(d):
  """A done.json without its paths (the two workdirs differ)."""
  if isinstance(d, dict):
    return {
        k: _numbers(v)
        for k, v in d.items()
        if k not in ("run_dir", "proxies_csv", "budget_checkpoints")
        and not k.endswith("seconds")
    }
  if isinstance(d, list):
    return [_numbers(v) for v in d]
  return d


@pytest.mark.slow
def test_sigkill_at_random_moments_resumes_to_same_result(finished, tmp_path):
  """Seven SIGKILLs over every stage, then a rerun: the uninterrupted result.

  Kill moments are seeded (KILL_SEED). Identical found mixture, merged and
  final scores; nothing rescored (results.jsonl has one row per proxy, and
  rows recorded before a kill are kept as they were); per-run records
  written before a kill are not rewritten (no run trained or scored twice);
  a run killed after a checkpoint resumes from that checkpoint.
  """
  ref, _ = finished
  work = tmp_path / "killed"
  rng = np.random.default_rng(KILL_SEED)
  delays = [float(rng.uniform(lo, hi)) for _, lo, hi in _KILLS]
  landed, logs, seen, lines, resumes = [], [], {}, [], []
  results = work / "search" / "state" / "results.jsonl"
  for k, ((trigger, _, _), delay) in enumerate(zip(_KILLS, delays)):
    log = tmp_path / f"run{k}.log"
    logs.append(log)
    with open(log, "w") as out:
      proc = subprocess.Popen(
          _cmd(work, ",".join(STAGES)) + ["-v=0"],
          cwd=ROOT,
          env=kit.cli_env(),
          stdout=out,
          stderr=subprocess.STDOUT,
      )
      # A hang guard, far above a loaded machine's time to the trigger.
      deadline = time.time() + kit.HANG_GUARD_S
      while proc.poll() is None and not (work / trigger).exists():
        assert time.time() < deadline, (
            f"run {k} never reached {trigger} within the hang guard",
            log.read_text()[-3000:],
        )
        time.sleep(0.02)
      time.sleep(delay)
      if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        landed.append(_stage_at(work))
        resumes.append(_unfinished_runs(work))
      else:
        landed.append("finished")
        resumes.append({})
    assert proc.returncode in (-signal.SIGKILL, 0), (
        kit.outcome(proc),
        log.read_text()[-3000:],
    )
    # What was recorded before this kill must survive it unchanged.
    for key, mtime in seen.items():
      assert _records(work).get(key) == mtime, (k, key)
    seen.update(_records(work))
    assert _complete_lines(results)[: len(lines)] == lines, k
    lines = _complete_lines(results)
  print(f"kills after {[round(d, 3) for d in delays]} s landed in {landed}")
  assert set(landed) == set(STAGES), (landed, delays)
  proc = _run(work, ",".join(STAGES), "-v=0")
  assert "Found mixture" in proc.stdout
  for key, mtime in seen.items():
    assert _records(work)[key] == mtime, key
  # A run killed after a checkpoint resumed from it in the next process.
  logs.append(tmp_path / "last.log")
  logs[-1].write_text(proc.stderr)
  assert any(resumes), (landed, resumes)
  for k, unfinished in enumerate(resumes):
    for run_dir, step in unfinished.items():
      assert f"restored step {step} from own" in logs[k + 1].read_text(), (
          k,
          run_dir,
          step,
      )

  for stage in ("base", "components", "search", "final"):
    assert _numbers(_done(work, stage)) == _numbers(_done(ref, stage)), stage
  a, b = _done(ref, "search"), _done(work, "search")
  assert a["alpha"] == b["alpha"] and a["merged_scores"] == b["merged_scores"]
  for name, run in _done(ref, "final")["runs"].items():
    assert _done(work, "final")["runs"][name]["scores"] == run["scores"]
  got = [json.loads(x) for x in _complete_lines(results)]
  want = [
      json.loads(x)
      for x in _complete_lines(ref / "search" / "state" / "results.jsonl")
  ]
  assert len({r["id"] for r in got}) == len(got) == b["n_proxies"]
  assert got == want
  assert (work / "report" / "summary.json").exists()


def test_missing_inputs_name_the_stage(tmp_path):
  proc = kit.run_cli(cmd=_cmd(tmp_path, "search"))
  assert proc.returncode == 3, proc.stderr[-3000:]
  # The first stage to run, named with the flag that runs it.
  assert f"error: stage 'base' has not finished in {tmp_path}" in proc.stderr
  assert "(--stages=base)" in proc.stderr


@pytest.mark.slow
def test_a_moved_workdir_resumes_and_reports(finished, tmp_path):
  """`mv` a finished workdir: every stage is complete there, and the
  report is rebuilt from the new place (the old one no longer exists)."""
  workdir, _ = finished
  old = tmp_path / "old"
  shutil.copytree(workdir, old)
  new = tmp_path / "moved" / "here"
  new.parent.mkdir()
  shutil.move(old, new)
  assert not old.exists()
  final = _done(new, "final")
  run_dirs = [r["run_dir"] for r in final["runs"].values()]
  assert run_dirs and all(d.startswith("<workdir>/final/") for d in run_dirs)
  shutil.rmtree(new / "report")
  proc = _run(new, "base,components,search,final,report")
  for stage in ("base", "components", "search", "final"):
    assert f"[{stage}] complete, skipped" in proc.stdout, stage
  assert "Found mixture" in proc.stdout
  summary = json.loads((new / "report" / "summary.json").read_text())
  assert (
      summary["final"]
      == json.loads((workdir / "report" / "summary.json").read_text())["final"]
  )
  assert str(old) not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_reduced_validation_table(finished, tmp_path):
  """validate_small:runlocal (6 references, few steps) on the same base."""
  workdir, _ = finished
  kit.copy_run(workdir, tmp_path, parts=("data", "base", "components"))
  # No wall-clock limit a loaded machine can reach (only the hang guard);
  # a run ended by a signal is named as such (kit.outcome).
  proc = kit.run_cli(
      "--config=configs/validate_small.py:runlocal",
      f"--workdir={tmp_path}",
      "--stages=validate",
  )
  kit.assert_ok(proc)
  table = json.loads((tmp_path / "validate" / "table.json").read_text())
  rows = table["rows"]
  families = {r["family"] for r in rows}
  assert families == {"merged", "trained"}
  assert len([r for r in rows if r["family"] == "trained"]) == 2
  for r in rows:
    assert r["total_tokens"] > 0
    for d, v in r["rho"].items():
      assert -1.0 - 1e-9 <= v <= 1.0 + 1e-9, (r["method"], d, v)
    assert 0.0 <= r["decision_accuracy"]["macro"] <= 1.0
    assert r["regret"]["macro"] >= 0.0
    assert r["recovery"]["macro"] > 0.0
  assert canvas.png_is_drawn(str(tmp_path / "validate" / "rho_vs_tokens.png"))
  # The noise ceiling (3 references trained twice) and the intervals reach
  # the stage's done.json, one row per method and budget.
  assert table["n_twins"] == 3 and len(table["twin_scores"]["math"]) == 3
  done = json.loads((tmp_path / "validate" / "done.json").read_text())
  for r in done["rows"]:
    lo, hi = r["rho_macro_ci"]
    assert lo - 1e-9 <= r["rho_macro"] <= hi + 1e-9
    assert r["ceiling_macro"] == table["ceiling"]["macro"]
  merged = [r for r in done["rows"] if r["family"] == "merged"]
  assert all(0.0 < r["diagnostics"]["delta_mean"] < 1.0 for r in merged)


def _exit_code(workdir, stages):
  proc = kit.run_cli(cmd=_cmd(workdir, stages))
  return proc.returncode, proc.stderr


@pytest.mark.slow
def test_damaged_results_stop_the_rerun_with_exit_4(finished, tmp_path):
  """A truncated done.json, results file or checkpoint: named, exit 4."""
  ref, _ = finished
  work = tmp_path / "wd"
  kit.copy_run(ref, work, ignore=("report",))
  # The stage result the final stage reads.
  done = work / "search" / "done.json"
  text = done.read_text()
  done.write_text(text[: len(text) // 2])
  rc, err = _exit_code(work, "final")
  assert rc == 4, err[-3000:]
  assert f"error: {done} is corrupt or truncated (JSONDecodeError" in err
  assert "Traceback" not in err
  # The search's results file, with the search to be resumed.
  done.unlink()
  results = work / "search" / "state" / "results.jsonl"
  lines = results.read_text().splitlines(keepends=True)
  lines[2] = lines[2][:25] + "\n"
  results.write_text("".join(lines))
  rc, err = _exit_code(work, "search")
  assert rc == 4, err[-3000:]
  assert f"error: {results} is corrupt or truncated (line 3:" in err
  assert not done.exists()
  # The component checkpoint the search merges (components.use_budget).
  shutil.rmtree(work / "search")
  step_dir = work / "components" / "general" / "checkpoints" / "12"
  for f in (step_dir / "params" / "d").iterdir():
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  rc, err = _exit_code(work, "search")
  assert rc == 4, err[-3000:]
  assert f"error: {work}/components/general step 12" in err
  # Not our traceback. (Tensorstore may print the end of one of its own, a
  # callback finding Orbax's event loop closed after the failed read.)
  assert f'File "{ROOT}/demix_jax/' not in err, err[-3000:]
  assert not (work / "search" / "done.json").exists()
