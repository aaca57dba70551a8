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
"""

from __future__ import annotations

import dataclasses

import numpy as np

KINDS = ("mc", "bpb", "heldout")


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
class EvalSuite:
  """All row sets concatenated and padded to a multiple of `batch_size`.

  Attributes:
    groups: the row sets, in order.
    offsets: start row of each group in the concatenated arrays.
    tokens, positions, segment_ids, target_mask: [R, T] arrays, R a multiple
      of batch_size; padding rows have target_mask 0 (they cost compute but
      never count).
    batch_size: rows per forward call.
  """

  groups: list[RowSet]
  offsets: list[int]
  tokens: np.ndarray
  positions: np.ndarray
  segment_ids: np.ndarray
  target_mask: np.ndarray
  batch_size: int

  @classmethod
  def build(cls, groups: list[RowSet], batch_size: int) -> "EvalSuite":
    """Concatenates row sets (all with the same T) and pads to batches.

    Args:
      groups: row sets with distinct names and one shared seq_len.
      batch_size: rows per forward call.

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

    return cls(
        groups=list(groups),
        offsets=[int(o) for o in offsets],
        tokens=cat("tokens", np.int32),
        positions=cat("positions", np.int32),
        segment_ids=cat("segment_ids", np.int32),
        target_mask=cat("target_mask", np.float32),
        batch_size=batch_size,
    )

  @property
  def n_rows(self) -> int:
    return self.tokens.shape[0]

  @property
  def n_batches(self) -> int:
    return self.n_rows // self.batch_size

  def rows_of(self, name: str) -> slice:
    for g, o in zip(self.groups, self.offsets):
      if g.name == name:
        return slice(o, o + g.tokens.shape[0])
    raise KeyError(
        f"no row set named {name!r}; have " f"{[g.name for g in self.groups]}"
    )

  def batched(self) -> dict[str, np.ndarray]:
    """The row arrays reshaped to [n_batches, batch_size, T]."""
    shape = (self.n_batches, self.batch_size, self.tokens.shape[1])
    return {
        k: getattr(self, k).reshape(shape)
        for k in ("tokens", "positions", "segment_ids", "target_mask")
    }
