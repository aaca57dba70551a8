"""Tiny models, components and evaluation suites shared by merging tests.

Also a persistent XLA compilation cache (as in tests/training): the runs
trained for `test_from_run_dirs` compile the same train step, and the cache
lets later ones skip XLA:CPU compilation. It changes no numerics.
"""

import os
import tempfile

import jax
import numpy as np
import pytest

from demix_jax.evals import rows
from demix_jax.models import transformer
from tests import kit

CFG = kit.tiny_model(vocab_size=128)
SEQ = 16

jax.config.update(
    "jax_compilation_cache_dir",
    os.path.join(tempfile.gettempdir(), "demix_jax_test_xla_cache"),
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def components(k=3, scale=0.05, seed=0):
  """A base and k components = base + distinct random deltas."""
  base = transformer.init_params(CFG, jax.random.key(seed))
  comps = []
  for i in range(k):
    leaves, treedef = jax.tree.flatten(base)
    keys = jax.random.split(jax.random.key(100 + i), len(leaves))
    comps.append(
        jax.tree.unflatten(
            treedef,
            [
                x + scale * jax.random.normal(kk, x.shape, x.dtype)
                for x, kk in zip(leaves, keys)
            ],
        )
    )
  return base, comps


def suite(batch_size=4, seed=0):
  """An MC group, a gold-bpb group and a held-out group of random tokens."""
  rng = np.random.default_rng(seed)

  def toks(n):
    return [int(t) for t in rng.integers(2, CFG.vocab_size, n)]

  ctx, cont, doc, choice, gold = [], [], [], [], []
  for d in range(3):
    c = toks(5)
    for j in range(3):
      ctx.append(c)
      cont.append(toks(2 + j))
      doc.append(d)
      choice.append(j)
      gold.append(j == d % 3)
  mc = rows.RowSet(
      name="piqa",
      kind="mc",
      domain="general",
      **rows.pack_pairs(ctx, cont, SEQ),
      doc=np.array(doc, np.int32),
      choice=np.array(choice, np.int32),
      gold=np.array(gold),
      n_bytes=np.array([3.0 * len(c) for c in cont]),
  )
  ctx = [toks(6) for _ in range(2)]
  cont = [toks(8) for _ in range(2)]
  bpb = rows.RowSet(
      name="gsm8k",
      kind="bpb",
      domain="math",
      **rows.pack_pairs(ctx, cont, SEQ),
      doc=np.arange(2, dtype=np.int32),
      choice=np.zeros(2, np.int32),
      gold=np.ones(2, bool),
      n_bytes=np.array([20.0, 30.0]),
  )
  held = rows.heldout_rows(
      "code",
      rng.integers(2, CFG.vocab_size, (3, SEQ)),
      n_bytes=np.array([40.0, 45.0, 50.0]),
  )
  return rows.EvalSuite.build([mc, bpb, held], batch_size)


class _Tiny:
  cfg = CFG
  seq = SEQ
  components = staticmethod(components)
  suite = staticmethod(suite)


@pytest.fixture
def tiny():
  """The helpers above (fixtures are how importlib-mode tests share code)."""
  return _Tiny
