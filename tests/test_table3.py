"""configs/table3_small.py:runlocal end to end: Table 3's rows, ranks, costs.

From the shared runlocal pipeline's data, base and components (the Table 3
config trains them exactly as the demo does), the search, the trained-proxy
searches (RegMix, CLIMB), the six final runs and the report. The baselines
stage is killed once some of its proxies have finished; the rerun must not
train those again.
"""

import json
import signal
import subprocess
import sys
import time

import pytest

from tests import kit

CONFIG = "--config=configs/table3_small.py:runlocal"
RUNS = {"demix", "natural", "uniform", "heuristic", "regmix", "climb"}


def _proxy_records(wd):
  return sorted((wd / "baselines" / "proxies").glob("t*/p*/done.json"))


@pytest.mark.slow
def test_table3_small_ranks_every_method_and_resumes_its_proxies(
    runlocal_run, tmp_path
):
  wd = kit.copy_run(
      runlocal_run.workdir, tmp_path / "wd", ("data", "base", "components")
  )
  proc = subprocess.Popen(
      [
          sys.executable,
          "-m",
          "demix_jax.main",
          CONFIG,
          f"--workdir={wd}",
          "--stages=search,baselines",
      ],
      cwd=kit.ROOT,
      env=kit.cli_env(1),
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
  )
  deadline = time.time() + kit.HANG_GUARD_S
  while len(_proxy_records(wd)) < 2 and proc.poll() is None:
    assert time.time() < deadline, "no proxy finished within the hang guard"
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  _, err = proc.communicate()
  assert proc.returncode == -signal.SIGKILL, err[-3000:]
  assert not (wd / "baselines" / "done.json").exists()
  before = {
      p: (p.stat().st_mtime_ns, p.read_text()) for p in _proxy_records(wd)
  }
  assert len(before) >= 2

  done = kit.run_cli(CONFIG, f"--workdir={wd}")
  kit.assert_ok(done)
  # The finished proxies were read back, not trained or scored again.
  for p, (mtime, text) in before.items():
    assert (p.stat().st_mtime_ns, p.read_text()) == (mtime, text), p
  assert "Final mixtures ranked" in done.stdout

  summary = json.loads((wd / "report" / "summary.json").read_text())
  table = summary["ranking"]
  assert set(table) == RUNS
  n = len(RUNS)
  targets = list(table["demix"]["ranks"])
  assert len(targets) == 9 and all(t.endswith("/bpb") for t in targets)
  for t in targets:
    # Ranks 1..6 per benchmark, ties sharing the mean: they sum to 21.
    ranks = [table[r]["ranks"][t] for r in RUNS]
    assert sum(ranks) == pytest.approx(n * (n + 1) / 2)
    assert all(1 <= x <= n for x in ranks)
    # Lower bits per byte ranks better.
    order = sorted(RUNS, key=lambda r: table[r]["scores"][t])
    assert [table[r]["ranks"][t] for r in order] == sorted(ranks)
  for r in RUNS:
    mean = sum(table[r]["ranks"].values()) / len(targets)
    assert table[r]["macro_rank"] == pytest.approx(mean)

  def result(stage):
    return json.loads((wd / stage / "done.json").read_text())

  base = result("base")["tokens"]
  found = result("baselines")
  cost = {r: table[r]["search_tokens"] for r in RUNS}
  assert cost["demix"] == base + result("components")["tokens"]
  for name, kind, n_proxies in (("regmix", "regmix", 4), ("climb", "climb", 6)):
    m = found["methods"][name]
    assert (m["kind"], m["n_proxies"]) == (kind, n_proxies)
    assert m["proxy_tokens"] == n_proxies * m["tokens_per_proxy"]
    assert cost[name] == base + m["proxy_tokens"]
    assert table[name]["method"] == kind
  assert cost["natural"] == cost["uniform"] == cost["heuristic"] == 0
  # Each proxy run once: the stage's tokens count every record once.
  records = _proxy_records(wd)
  assert found["tokens"] == sum(
      json.loads(p.read_text())["tokens"] for p in records
  )
  assert 4 <= len(records) <= 6  # CLIMB's round 0 is RegMix's first rows
  # The final stage trained each method's mixture under its name.
  final = result("final")["runs"]
  for name in ("regmix", "climb"):
    assert final[name]["weights"] == pytest.approx(
        found["methods"][name]["source_weights"]
    )
  report = (wd / "report" / "report.md").read_text()
  assert "## Final mixtures ranked (Table 3)" in report
