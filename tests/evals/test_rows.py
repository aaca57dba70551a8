"""Packed evaluation rows: layout, determinism, and the logical-row map.

Score equality of packed and unpacked rows through a real model is in
tests/merging/test_engine_packed.py; here only the host-side layout.
"""

import numpy as np
import pytest

from demix_jax.evals import rows

T = 16


def _pairs(seed=0, n=12):
  rng = np.random.default_rng(seed)
  ctx = [list(rng.integers(2, 50, rng.integers(1, 6))) for _ in range(n)]
  cont = [list(rng.integers(2, 50, rng.integers(1, 5))) for _ in range(n)]
  return ctx, cont


def _group(name="piqa", seed=0, n=12):
  ctx, cont = _pairs(seed, n)
  return rows.RowSet(
      name=name,
      kind="bpb",
      domain="general",
      **rows.pack_pairs(ctx, cont, T),
      doc=np.arange(n, dtype=np.int32),
      choice=np.zeros(n, np.int32),
      gold=np.ones(n, bool),
      n_bytes=np.ones(n),
  )


def _heldout():
  # Two rows of two documents each; the second row ends in 5 padding tokens.
  seg = np.array([[1] * 9 + [2] * 7, [3] * 6 + [4] * 5 + [0] * 5], np.int32)
  toks = np.arange(2 * T, dtype=np.int32).reshape(2, T) % 40 + 2
  return rows.heldout_rows("code", toks, n_bytes=[1.0, 1.0], segment_ids=seg)


def _suite(**kw):
  return rows.EvalSuite.build([_group(), _heldout()], batch_size=3, **kw)


def _unpack(p: rows.PackedRows, r: int, length: int) -> dict:
  """The tokens of logical row r, read back from its packed row's slot."""
  row, slot = divmod(int(p.pair_slot[r]), p.n_slots)
  where = np.flatnonzero(p.slot_ids[row] == slot)
  where = where[p.segment_ids[row, where] != 0]
  assert where.size == length and np.all(np.diff(where) == 1)
  return {
      k: getattr(p, k)[row, where]
      for k in ("tokens", "positions", "segment_ids", "target_mask")
  }


def test_every_logical_row_reads_back_from_its_slot():
  suite = _suite()
  p = suite.packed
  lengths = rows.used_lengths(suite.segment_ids)
  assert p.pair_slot.shape == (suite.n_rows,)
  assert p.n_rows % suite.batch_size == 0
  for r in range(suite.n_rows):
    if lengths[r] == 0:  # the suite's padding rows
      assert p.pair_slot[r] == -1
      continue
    got = _unpack(p, r, lengths[r])
    m = lengths[r]
    np.testing.assert_array_equal(got["tokens"], suite.tokens[r, :m])
    np.testing.assert_array_equal(got["positions"], suite.positions[r, :m])
    np.testing.assert_array_equal(got["target_mask"], suite.target_mask[r, :m])
    # Segment ids keep their equalities (so attention sees the same
    # documents) and are nonzero where the original is.
    seg, orig = got["segment_ids"], suite.segment_ids[r, :m]
    np.testing.assert_array_equal(seg[:, None] == seg, orig[:, None] == orig)
    np.testing.assert_array_equal(seg != 0, orig != 0)
  # No two logical rows share a slot, or a segment id within a packed row.
  used = p.pair_slot[p.pair_slot >= 0]
  assert np.unique(used).size == used.size
  for row in range(p.n_rows):
    for s in np.unique(p.slot_ids[row][p.segment_ids[row] != 0]):
      others = p.segment_ids[row][
          (p.slot_ids[row] != s) & (p.segment_ids[row] != 0)
      ]
      mine = p.segment_ids[row][
          (p.slot_ids[row] == s) & (p.segment_ids[row] != 0)
      ]
      assert not np.intersect1d(mine, others).size
  # Real tokens are the same packed or not, and packing needs fewer rows.
  assert np.count_nonzero(p.segment_ids) == suite.real_tokens
  assert suite.real_tokens == int(lengths.sum())
  assert p.n_rows < suite.n_rows
  assert p.target_mask.sum() == suite.target_mask.sum()


def test_packing_is_first_fit_decreasing_and_deterministic():
  suite = _suite()
  again = _suite()
  for k in ("tokens", "segment_ids", "slot_ids", "pair_slot"):
    np.testing.assert_array_equal(
        getattr(suite.packed, k), getattr(again.packed, k)
    )
  # The full held-out row (16 tokens) is longest, so it is placed first,
  # alone in packed row 0; the 11-token one opens row 1.
  held = suite.rows_of("heldout/code")
  assert suite.packed.pair_slot[held.start] == 0
  assert suite.packed.pair_slot[held.start + 1] == suite.packed.n_slots


def test_first_fit_decreasing_layout_by_hand():
  # Lengths 3, 7, 4, 6, 2 into rows of 10, longest first: 7 opens row 0,
  # 6 opens row 1, 4 fits row 1 only, 3 fills row 0, 2 opens row 2.
  ctx = [[5] * n for n in (1, 6, 3, 4, 1)]
  cont = [[6, 6], [6], [6], [6, 6], [6]]
  arrays = rows.pack_pairs(ctx, cont, 10)
  p = rows.pack_rows(arrays, batch_size=2)
  assert p.n_slots == 2 and p.n_rows == 4  # 3 rows, padded to 2 batches
  np.testing.assert_array_equal(p.pair_slot, [1, 0, 3, 2, 4])
  np.testing.assert_array_equal(p.segment_ids[0], [1] * 7 + [2] * 3)
  np.testing.assert_array_equal(p.positions[0], list(range(7)) + [0, 1, 2])
  np.testing.assert_array_equal(p.slot_ids[1], [0] * 6 + [1] * 4)
  np.testing.assert_array_equal(p.target_mask[1], [0] * 4 + [1, 1, 0, 0, 0, 1])
  np.testing.assert_array_equal(p.segment_ids[2], [1, 1] + [0] * 8)
  assert not p.segment_ids[3].any()  # a padding row


def test_max_pairs_per_row_and_unpacked_suite():
  suite = _suite(max_pairs_per_row=2)
  assert suite.packed.n_slots == 2
  assert np.max(suite.packed.slot_ids) <= 1
  plain = _suite(pack=False)
  assert plain.packed is None
  assert plain.n_eval_rows == plain.n_rows == suite.n_rows
  b = plain.batched()
  assert sorted(b) == sorted(rows.ROW_KEYS)
  assert b["tokens"].shape == (plain.n_rows // 3, 3, T)
  pb = suite.batched()
  assert pb["slot_ids"].shape == (suite.n_batches, 3, T)
  assert pb["pair_slot"].shape == (suite.n_rows,)
  np.testing.assert_array_equal(pb["slots"], [0, 1])
  assert plain.real_tokens == suite.real_tokens
  with pytest.raises(ValueError, match="max_pairs must be positive"):
    _suite(max_pairs_per_row=0)


def test_scored_padding_token_is_refused():
  arrays = {k: np.zeros((1, 4), np.int32) for k in rows.ROW_KEYS}
  arrays["target_mask"] = np.array([[0, 1, 0, 0]], np.float32)
  with pytest.raises(ValueError, match="segment id 0"):
    rows.pack_rows(arrays, batch_size=1)
