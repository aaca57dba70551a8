"""Fixtures of the interop tests (helpers live in helpers.py)."""

import pytest

from demix_jax.data import tokenizer as tokenizer_lib
from tests.interop import helpers


@pytest.fixture(scope="session")
def sp_vocab(tmp_path_factory):
  """A 384-piece demix_jax tokenizer (BPE, byte fallback, no dummy prefix)."""
  path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
  return tokenizer_lib.train_vocab(
      {"code": helpers.TOKENIZER_TEXTS}, 384, str(path), sample_chars=100_000
  )
