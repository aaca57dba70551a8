"""Fixed-shape scoring rows: what the evaluator runs, for every target.

Every evaluation target (a benchmark's choices, a benchmark's gold answers,
a source's held-out sequences) becomes a `RowSet`: rows of `T` tokens with
the packed-batch fields of docs/interfaces.md (`tokens`, `positions`,
`segment_ids`) plus `target_mask`, which marks the tokens whose negative
log-likelihood is summed for the row (a continuation, or every predicted
token of a held-out sequence). The evaluator computes one number per row,
the summed NLL (nats) of its masked tokens; every metric (accuracy, bits per
byte, loss) is a function of those per-row sums (`demix_jax.evals.scoring`).

`EvalSuite` concatenates the row sets and pads the row count to a multiple of
the row batch size so that one compiled function serves every call.

Packing (`EvalSuite.build(..., pack=True)`, the default): a (context,
continuation) pair uses a few hundred of a row's `T` tokens, so at T = 8192
a one-pair row is over 98% padding. The suite therefore also holds the rows
the evaluator really runs, `PackedRows`: the logical rows (one pair, or one
held-out sequence, each) placed first-fit-decreasing into rows of `T`
tokens, each keeping its own positions (which restart at 0 per pair) under
segment ids renumbered to be distinct within its packed row. Attention only
sees the same segment (docs/interfaces.md), so every scored token sees
exactly the tokens it saw alone and scores the same up to float summation
order. `slot_ids` says which logical row of its packed row each token
belongs to and `pair_slot` where each logical row's sum lands, so the
evaluator returns one sum per logical row, in the logical order, and
nothing downstream of it (`demix_jax.evals.scoring`) sees the packing.
"""

from __future__ import annotations

import dataclasses

import numpy as np

KINDS = ("mc", "bpb", "heldout")
ROW_KEYS = ("tokens", "positions", "segment_ids", "target_mask")
# Most logical rows one packed row holds. The evaluator sums each packed row
# into this many slots (a [B, S, T] compare-and-add that XLA fuses into one
# reduction), so it bounds that work; 256 pairs of 32 tokens fill a row of
# 8192, and pairs are rarely shorter.
MAX_PAIRS_PER_ROW = 256


@dataclasses.dataclass
class RowSet:
  """Rows of one target group.

  Attributes:
    name: group name: a benchmark name (e.g. "arc_easy") or
      "heldout/<source>".
    kind: "mc" (multiple choice: one row per choice), "bpb" (one gold row
      per item) or "heldout" (packed held-out sequences).
    domain: capability domain ("general", "code", "math") or None.
    tokens: int32 [N, T].
    positions: int32 [N, T].
    segment_ids: int32 [N, T]; 0 = padding.
    target_mask: float32 [N, T]; 1 where token t is scored (predicted from
      the tokens before it), so target_mask[:, 0] is always 0.
    doc: int32 [N] item index within the group (0..n_docs-1).
    choice: int32 [N] choice index within the item.
    gold: bool [N] whether the row is the item's gold answer.
    n_bytes: float64 [N] UTF-8 bytes of the scored text.
  """

  name: str
  kind: str
  domain: str | None
  tokens: np.ndarray
  positions: np.ndarray
  segment_ids: np.ndarray
  target_mask: np.ndarray
  doc: np.ndarray
  choice: np.ndarray
  gold: np.ndarray
  n_bytes: np.ndarray

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"RowSet.kind={self.kind!r}; use one of {KINDS}")
    n = self.tokens.shape[0]
    for f in ("positions", "segment_ids", "target_mask"):
      if getattr(self, f).shape != self.tokens.shape:
        raise ValueError(
            f"RowSet {self.name}: {f} shape "
            f"{getattr(self, f).shape} != tokens "
            f"{self.tokens.shape}"
        )
    for f in ("doc", "choice", "gold", "n_bytes"):
      if getattr(self, f).shape != (n,):
        raise ValueError(f"RowSet {self.name}: {f} must have shape ({n},)")
    if n and np.any(self.target_mask[:, 0] != 0):
      raise ValueError(
          f"RowSet {self.name}: the first token of a row "
          "cannot be scored (nothing predicts it)"
      )

  @property
  def seq_len(self) -> int:
    return self.tokens.shape[1]

  @property
  def n_docs(self) -> int:
    return int(self.doc.max()) + 1 if self.doc.size else 0

  def arrays(self) -> dict[str, np.ndarray]:
    return {
        f.name: getattr(self, f.name)
        for f in dataclasses.fields(self)
        if isinstance(getattr(self, f.name), np.ndarray)
    }


def pack_pairs(
    contexts: list[list[int]], continuations: list[list[int]], seq_len: int
) -> dict[str, np.ndarray]:
  """Packs (context, continuation) token lists, one pair per row.

  Each row is context + continuation, left-aligned, zero-padded; the
  continuation tokens are the scored ones. Callers make each pair fit
  (`len(ctx) >= 1`, `len(ctx) + len(cont) <= seq_len`).

  Args:
    contexts: token ids of each row's context.
    continuations: token ids of each row's scored continuation.
    seq_len: row length T.

  Returns:
    dict of tokens, positions, segment_ids (int32 [N, T]) and target_mask
    (float32 [N, T]).
  """
  n = len(contexts)
  tokens = np.zeros((n, seq_len), np.int32)
  mask = np.zeros((n, seq_len), np.float32)
  seg = np.zeros((n, seq_len), np.int32)
  pos = np.zeros((n, seq_len), np.int32)
  for i, (ctx, cont) in enumerate(zip(contexts, continuations)):
    m = len(ctx) + len(cont)
    if not ctx or m > seq_len:
      raise ValueError(
          f"row {i}: context of {len(ctx)} + continuation of "
          f"{len(cont)} tokens does not fit seq_len={seq_len}"
      )
    tokens[i, :m] = ctx + cont
    mask[i, len(ctx) : m] = 1.0
    seg[i, :m] = 1
    pos[i, :m] = np.arange(m)
  return dict(tokens=tokens, positions=pos, segment_ids=seg, target_mask=mask)


def heldout_rows(
    source: str,
    tokens: np.ndarray,
    n_bytes: np.ndarray | None = None,
    segment_ids: np.ndarray | None = None,
    positions: np.ndarray | None = None,
    token_bytes: np.ndarray | None = None,
) -> RowSet:
  """Held-out sequences of one source as a row set (every token scored).

  Token t is scored when it continues the same document as token t-1
  (`segment_ids[t] == segment_ids[t-1] != 0`), exactly the training loss of
  `demix_jax.models.loss.next_token_nll`.

  Args:
    source: source name; the group is "heldout/<source>".
    tokens: int [N, T] (packed batches from the data layer, or any ids).
    n_bytes: [N] UTF-8 bytes of the text each row's scored tokens encode
      (used for bits per byte); or None with `token_bytes`.
    segment_ids: int [N, T]; default: one document per row, no padding.
    positions: int [N, T]; default: derived from segment_ids.
    token_bytes: [vocab_size] UTF-8 bytes per token id
      (`Vocab.token_byte_lengths()`); when `n_bytes` is None the bytes of a
      row are the sum over its scored tokens.

  Returns:
    The RowSet (kind "heldout").
  """
  tokens = np.asarray(tokens, np.int32)
  n, t = tokens.shape
  if segment_ids is None:
    segment_ids = np.ones((n, t), np.int32)
  segment_ids = np.asarray(segment_ids, np.int32)
  if positions is None:
    positions = np.zeros((n, t), np.int32)
    for j in range(1, t):
      same = segment_ids[:, j] == segment_ids[:, j - 1]
      positions[:, j] = np.where(same, positions[:, j - 1] + 1, 0)
    positions[segment_ids == 0] = 0  # padding: position 0 (interfaces.md)
  mask = np.zeros((n, t), np.float32)
  mask[:, 1:] = (segment_ids[:, 1:] == segment_ids[:, :-1]) & (
      segment_ids[:, 1:] != 0
  )
  if n_bytes is None:
    if token_bytes is None:
      raise ValueError(
          f"heldout_rows({source!r}): give n_bytes or " "token_bytes"
      )
    table = np.asarray(token_bytes, np.float64)
    n_bytes = (table[tokens] * mask).sum(axis=1)
  n_bytes = np.asarray(n_bytes, np.float64).reshape(n)
  return RowSet(
      name=f"heldout/{source}",
      kind="heldout",
      domain=None,
      tokens=tokens,
      positions=np.asarray(positions, np.int32),
      segment_ids=segment_ids,
      target_mask=mask,
      doc=np.arange(n, dtype=np.int32),
      choice=np.zeros(n, np.int32),
      gold=np.ones(n, bool),
      n_bytes=n_bytes,
  )


@dataclasses.dataclass
class PackedRows:
  """Logical rows packed several to a row (see the module docstring).

  Attributes:
    tokens, positions, segment_ids, target_mask: [P, T] as in `RowSet`; P
      is a multiple of the batch size, padding rows are all zero.
    slot_ids: int32 [P, T]: which logical row of its packed row a token
      belongs to (0..n_slots-1; 0 on padding, where target_mask is 0).
    pair_slot: int32 [R]: for each logical row, packed_row * n_slots + slot,
      the place its NLL sum lands; -1 for a logical row without tokens
      (the suite's padding rows), whose sum is 0.
    n_slots: slots per packed row (the most logical rows one row holds).
  """

  tokens: np.ndarray
  positions: np.ndarray
  segment_ids: np.ndarray
  target_mask: np.ndarray
  slot_ids: np.ndarray
  pair_slot: np.ndarray
  n_slots: int

  @property
  def n_rows(self) -> int:
    return self.tokens.shape[0]


def used_lengths(segment_ids: np.ndarray) -> np.ndarray:
  """[N] tokens each row uses: through its last non-padding token."""
  nz = np.asarray(segment_ids) != 0
  last = nz.shape[1] - np.argmax(nz[:, ::-1], axis=1)
  return np.where(nz.any(axis=1), last, 0)


def _first_fit(length: np.ndarray, t: int, max_pairs: int):
  """(packed row, slot, start) of each row, first-fit decreasing.

  Longest first (ties: lower index first), each into the first packed row
  with room and fewer than `max_pairs` rows, so the layout is a pure
  function of the lengths. Rows of length 0 get packed row -1.
  """
  n = length.size
  idx = np.flatnonzero(length)
  order = idx[np.lexsort((idx, -length[idx]))]
  free = np.zeros(order.size, np.int64)
  count = np.zeros(order.size, np.int64)
  row = np.full(n, -1, np.int64)
  slot = np.zeros(n, np.int64)
  start = np.zeros(n, np.int64)
  n_open = 0
  for r in order:
    m = length[r]
    fits = np.flatnonzero((free[:n_open] >= m) & (count[:n_open] < max_pairs))
    if fits.size:
      p = int(fits[0])
    else:
      p, n_open = n_open, n_open + 1
      free[p] = t
    row[r], slot[r], start[r] = p, count[p], t - free[p]
    free[p] -= m
    count[p] += 1
  return row, slot, start, order, n_open, int(count.max(initial=1))


def pack_rows(
    arrays: dict[str, np.ndarray],
    batch_size: int,
    max_pairs: int = MAX_PAIRS_PER_ROW,
) -> PackedRows:
  """Packs rows (each a prefix of tokens, trailing padding) into fewer rows.

  Args:
    arrays: `ROW_KEYS` arrays [N, T] of the logical rows.
    batch_size: the packed row count is padded to a multiple of it.
    max_pairs: most logical rows per packed row.

  Returns:
    The PackedRows; its `pair_slot` has one entry per logical row.
  """
  if max_pairs <= 0:
    raise ValueError(f"max_pairs must be positive, got {max_pairs}")
  seg_in = np.asarray(arrays["segment_ids"])
  mask_in = np.asarray(arrays["target_mask"])
  n, t = seg_in.shape
  if np.any(mask_in[seg_in == 0] != 0):
    raise ValueError("a scored token has segment id 0 (padding)")
  length = used_lengths(seg_in)
  row, slot, start, order, n_open, n_slots = _first_fit(length, t, max_pairs)
  n_packed = max(n_open + (-n_open) % batch_size, batch_size)
  out = {
      k: np.zeros((n_packed, t), np.float32 if k == "target_mask" else np.int32)
      for k in ROW_KEYS + ("slot_ids",)
  }
  seg_base = np.zeros(n_packed, np.int64)  # segment ids used in each row
  for r in order:
    p, o, m = row[r], start[r], length[r]
    span = slice(o, o + m)
    for k in ("tokens", "positions", "target_mask"):
      out[k][p, span] = arrays[k][r, :m]
    seg = seg_in[r, :m].astype(np.int64)
    out["segment_ids"][p, span] = np.where(seg != 0, seg + seg_base[p], 0)
    seg_base[p] += seg.max()
    out["slot_ids"][p, span] = slot[r]
  pair_slot = np.where(row >= 0, row * n_slots + slot, -1).astype(np.int32)
  return PackedRows(**out, pair_slot=pair_slot, n_slots=n_slots)


@dataclasses.dataclass
class EvalSuite:
  """All row sets concatenated and padded to a multiple of `batch_size`.

  Attributes:
    groups: the row sets, in order.
    offsets: start row of each group in the concatenated arrays.
    tokens, positions, segment_ids, target_mask: the logical rows, [R, T]
      arrays, R a multiple of batch_size; padding rows have target_mask 0
      (they never count). The evaluator returns one sum per logical row.
    batch_size: rows per forward call.
    packed: the rows the evaluator runs when packed (None: the logical
      rows themselves, one per row).
  """

  groups: list[RowSet]
  offsets: list[int]
  tokens: np.ndarray
  positions: np.ndarray
  segment_ids: np.ndarray
  target_mask: np.ndarray
  batch_size: int
  packed: PackedRows | None = None

  @classmethod
  def build(
      cls,
      groups: list[RowSet],
      batch_size: int,
      pack: bool = True,
      max_pairs_per_row: int = MAX_PAIRS_PER_ROW,
  ) -> "EvalSuite":
    """Concatenates row sets (all with the same T) and pads to batches.

    Args:
      groups: row sets with distinct names and one shared seq_len.
      batch_size: rows per forward call.
      pack: also pack the logical rows several to a row (`PackedRows`) for
        the evaluator. On by default: the scores are the unpacked ones up to
        float summation order (tests/merging/test_engine_packed.py).
      max_pairs_per_row: most logical rows per packed row.

    Decision (recorded): packing is no config field. It changes no score
    beyond float32 summation order (the demo's search and final scores
    came out bit-identical), so `pack=False` is for comparisons and tests.

    Returns:
      The suite.
    """
    if not groups:
      raise ValueError("EvalSuite needs at least one row set")
    if batch_size <= 0:
      raise ValueError(f"eval batch_size must be positive, got {batch_size}")
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
      raise ValueError(f"duplicate row-set names: {names}")
    lens = {g.seq_len for g in groups}
    if len(lens) != 1:
      raise ValueError(
          f"row sets have different seq_len: "
          f"{ {g.name: g.seq_len for g in groups} }"
      )
    offsets = list(np.cumsum([0] + [g.tokens.shape[0] for g in groups[:-1]]))
    r = sum(g.tokens.shape[0] for g in groups)
    pad = (-r) % batch_size
    t = lens.pop()

    def cat(field, dtype):
      parts = [getattr(g, field) for g in groups]
      parts.append(np.zeros((pad, t), dtype))
      return np.concatenate(parts).astype(dtype)

    logical = {
        k: cat(k, np.float32 if k == "target_mask" else np.int32)
        for k in ROW_KEYS
    }
    return cls(
        groups=list(groups),
        offsets=[int(o) for o in offsets],
        **logical,
        batch_size=batch_size,
        packed=(
            pack_rows(logical, batch_size, max_pairs_per_row) if pack else None
        ),
    )

  @property
  def n_rows(self) -> int:
    """Logical rows: the length of the evaluator's per-row NLL sums."""
    return self.tokens.shape[0]

  @property
  def n_eval_rows(self) -> int:
    """Rows the evaluator runs (packed rows when packed)."""
    return self.packed.n_rows if self.packed is not None else self.n_rows

  @property
  def n_batches(self) -> int:
    """Row batches per evaluation of one model."""
    return self.n_eval_rows // self.batch_size

  @property
  def real_tokens(self) -> int:
    """Non-padding tokens of the suite (what one evaluation must run)."""
    return int(np.count_nonzero(self.segment_ids))

  def rows_of(self, name: str) -> slice:
    for g, o in zip(self.groups, self.offsets):
      if g.name == name:
        return slice(o, o + g.tokens.shape[0])
    raise KeyError(
        f"no row set named {name!r}; have " f"{[g.name for g in self.groups]}"
    )

  def batched(self) -> dict[str, np.ndarray]:
    """The evaluator's rows, [n_batches, batch_size, T] each.

    Unpacked: the `ROW_KEYS` of the logical rows. Packed: those of the
    packed rows plus `slot_ids` (same shape), `slots` (0..n_slots-1, whose
    length fixes the slot count at trace time) and `pair_slot` [n_rows]
    (see `PackedRows`), which map the per-slot sums to the logical rows.
    """
    src = self.packed if self.packed is not None else self
    shape = (self.n_batches, self.batch_size, self.tokens.shape[1])
    keys = ROW_KEYS + (("slot_ids",) if self.packed is not None else ())
    out = {k: getattr(src, k).reshape(shape) for k in keys}
    if self.packed is not None:
      out["slots"] = np.arange(self.packed.n_slots, dtype=np.int32)
      out["pair_slot"] = self.packed.pair_slot
    return out
