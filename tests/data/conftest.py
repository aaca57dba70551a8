"""Shared fixtures of the data tests: small offline corpora and a vocab.

Everything is built once per session under a temporary cache dir, with
`max_docs` caps so the whole data suite stays fast on 2 cores.
"""

import pytest

from demix_jax.data import sources
from demix_jax.data import tokenizer

SMALL = {"general": ("wiki", 120), "math": ("math", 120), "code": ("code", 120)}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("data_cache"))


@pytest.fixture(scope="session")
def offline_sources(cache_dir):
  specs = {
      name: sources.spec_from_dict(
          name, {"kind": "offline", "corpus": c}, offline_max_docs=n
      )
      for name, (c, n) in SMALL.items()
  }
  return sources.open_sources(specs, cache_dir)


@pytest.fixture(scope="session")
def vocab(offline_sources, cache_dir):
  texts = {n: s.docs("train") for n, s in offline_sources.items()}
  return tokenizer.train_vocab(
      texts, 512, f"{cache_dir}/spm/v512.model", seed=0, sample_chars=100_000
  )
