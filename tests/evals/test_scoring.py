"""Scoring on hand cases; rows packing; benchmark files, fitting, cache."""

import math

import numpy as np
import pytest

from demix_jax.evals import benchmarks
from demix_jax.evals import rows
from demix_jax.evals import scoring

LN2 = math.log(2.0)


def byte_encode(text):
  """A toy tokenizer: one token per UTF-8 byte (ids 2..257)."""
  return [b + 2 for b in text.encode("utf-8")]


def _mc_group(name="piqa"):
  # 2 docs x 2 choices; doc 0 gold = 1, doc 1 gold = 0.
  ctx = [[5, 6], [5, 6], [7], [7]]
  cont = [[8], [9, 10], [11, 12, 13], [14]]
  packed = rows.pack_pairs(ctx, cont, 8)
  return rows.RowSet(
      name=name,
      kind="mc",
      domain="general",
      **packed,
      doc=np.array([0, 0, 1, 1], np.int32),
      choice=np.array([0, 1, 0, 1], np.int32),
      gold=np.array([False, True, True, False]),
      n_bytes=np.array([1.0, 4.0, 3.0, 1.0]),
  )


def test_pack_pairs_layout():
  p = rows.pack_pairs([[5, 6]], [[7, 8, 9]], 6)
  np.testing.assert_array_equal(p["tokens"][0], [5, 6, 7, 8, 9, 0])
  np.testing.assert_array_equal(p["target_mask"][0], [0, 0, 1, 1, 1, 0])
  np.testing.assert_array_equal(p["segment_ids"][0], [1, 1, 1, 1, 1, 0])
  np.testing.assert_array_equal(p["positions"][0], [0, 1, 2, 3, 4, 0])
  with pytest.raises(ValueError, match="does not fit"):
    rows.pack_pairs([[1] * 4], [[2] * 3], 6)


def test_mc_scores_by_hand():
  suite = rows.EvalSuite.build([_mc_group()], batch_size=3)
  assert suite.n_rows == 6  # 4 rows padded to 2 batches of 3
  # Row NLLs: doc0: c0 1.0, c1 2.0 (per byte 0.5) -> acc picks c0 (wrong),
  # acc_norm picks c1 (right). doc1: c0 0.9 (per byte 0.3), c1 0.5 (0.5):
  # acc picks c1 (wrong), acc_norm picks c0 (right).
  nll = np.array([[1.0, 2.0, 0.9, 0.5, 7.0, 7.0]])
  s = scoring.score_rows(nll, suite)
  assert s["piqa/acc"][0] == 0.0
  assert s["piqa/acc_norm"][0] == 1.0
  want_bpb = 0.5 * (2.0 / (LN2 * 4) + 0.9 / (LN2 * 3))
  np.testing.assert_allclose(s["piqa/bpb"][0], want_bpb, rtol=1e-12)
  np.testing.assert_allclose(s["domain/general"][0], want_bpb, rtol=1e-12)
  s2 = scoring.score_rows(nll, suite, {"general": "acc_norm"})
  assert s2["domain/general"][0] == 1.0


def test_heldout_rows_and_linear_weights():
  z = [0, 0, 0, 0]
  toks = np.array([[3, 4, 5, 6] + z, [7, 8, 0, 0] + z])
  seg = np.array([[1, 1, 2, 2] + z, [1, 1, 0, 0] + z])
  h = rows.heldout_rows("math", toks, n_bytes=[10, 6], segment_ids=seg)
  # Scored: row0 tokens 1 and 3 (token 2 starts a new document), row1 t=1.
  np.testing.assert_array_equal(
      h.target_mask, [[0, 1, 0, 1] + z, [0, 1, 0, 0] + z]
  )
  np.testing.assert_array_equal(
      h.positions, [[0, 1, 0, 1] + z, [0, 1, 0, 0] + z]
  )
  suite = rows.EvalSuite.build([h, _mc_group()], batch_size=2)
  nll = np.zeros((2, suite.n_rows))
  nll[0, :2] = [4.0, 2.0]
  nll[1, :2] = [1.0, 1.0]
  s = scoring.score_rows(nll, suite)
  np.testing.assert_allclose(s["heldout/math/loss"], [6.0 / 3, 2.0 / 3])
  np.testing.assert_allclose(
      s["heldout/math/bpb"], [6.0 / (LN2 * 16), 2.0 / (LN2 * 16)]
  )
  np.testing.assert_allclose(s["heldout/bpb"], s["heldout/math/bpb"])
  for t in ("heldout/math/bpb", "heldout/bpb", "piqa/bpb", "domain/general"):
    w = scoring.linear_weights(suite, t)
    np.testing.assert_allclose(nll @ w, s[t], rtol=1e-12)
  with pytest.raises(ValueError, match="not linear"):
    scoring.linear_weights(suite, "piqa/acc")
  assert set(scoring.target_names(suite)) == set(s)


def test_heldout_bytes_from_token_table():
  table = np.arange(20)
  h = rows.heldout_rows("x", np.array([[3, 4, 5]]), token_bytes=table)
  assert h.n_bytes[0] == 4 + 5


def test_higher_is_better():
  assert scoring.higher_is_better("arc_easy/acc")
  assert scoring.higher_is_better("arc_easy/acc_norm")
  assert not scoring.higher_is_better("gsm8k/bpb")
  assert not scoring.higher_is_better("heldout/code/bpb")
  assert not scoring.higher_is_better("heldout/code/loss")
  assert not scoring.higher_is_better("domain/general")
  assert scoring.higher_is_better("domain/general", {"general": "acc"})
  with pytest.raises(ValueError):
    scoring.higher_is_better("something")


def test_fit_pair_truncates_context_left_and_long_continuation():
  ctx, cont, nb = benchmarks.fit_pair("abcdefghij", " xyz", byte_encode, 8)
  assert cont == byte_encode(" xyz") and nb == 4
  assert ctx == byte_encode("ghij")  # left-truncated context
  ctx, cont, nb = benchmarks.fit_pair("abcdefgh", "0123456789", byte_encode, 8)
  # At least seq_len // 4 tokens of context room, kept from the right.
  assert len(ctx) >= 2 and ctx == byte_encode("abcdefgh")[-len(ctx) :]
  assert len(ctx) + len(cont) <= 8 and nb == len(cont)
  assert cont == byte_encode("0123456789"[:nb])


def test_read_every_benchmark_and_cache(tmp_path):
  for name, spec in benchmarks.BENCHMARKS.items():
    items = benchmarks.read_items(name)
    assert len(items) > 100, name
    sub = benchmarks.subsample(items, 3, seed=0)
    assert sub == benchmarks.subsample(items, 3, seed=0)
    assert len(sub) == 3
    if spec.kind == "mc":
      assert all(len(it.choices) >= 2 for it in sub)
  rs = benchmarks.load_benchmark(
      "arc_easy",
      byte_encode,
      "fp",
      64,
      max_items=4,
      seed=1,
      cache_dir=str(tmp_path),
  )
  assert rs.n_docs == 4 and rs.gold.sum() == 4
  assert rs.tokens.shape[1] == 64
  # Scored bytes equal the scored tokens for a byte tokenizer.
  np.testing.assert_array_equal(rs.target_mask.sum(1), rs.n_bytes)
  files = list(tmp_path.iterdir())
  assert len(files) == 1
  again = benchmarks.load_benchmark(
      "arc_easy", None, "fp", 64, max_items=4, seed=1, cache_dir=str(tmp_path)
  )
  for k, v in rs.arrays().items():
    np.testing.assert_array_equal(v, getattr(again, k))
  with pytest.raises(ValueError, match="unknown benchmark"):
    benchmarks.load_benchmarks(["arc"], byte_encode, "fp", 64)


def test_build_suite_all_nine(tmp_path):
  held = {
      "code": {
          "tokens": np.full((3, 48), 7, np.int32),
          "n_bytes": np.array([47.0, 47.0, 47.0]),
      }
  }
  suite = benchmarks.build_suite(
      list(benchmarks.BENCHMARKS),
      byte_encode,
      "fp",
      48,
      batch_size=8,
      max_items=2,
      cache_dir=str(tmp_path),
      heldout=held,
  )
  assert suite.n_rows % 8 == 0
  names = scoring.target_names(suite)
  for d in ("general", "code", "math"):
    assert f"domain/{d}" in names
  assert "heldout/code/bpb" in names and "hellaswag/acc_norm" in names
  s = scoring.score_rows(np.ones((2, suite.n_rows)), suite)
  assert set(s) == set(names) and all(v.shape == (2,) for v in s.values())
