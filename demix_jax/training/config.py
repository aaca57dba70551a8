"""How one training stage trains: a typed config, checked before any work.

Apart from the trainer so that what only needs the settings (the compile
check, the pipeline's edge that builds them, `step.train_layout`) can
import them without the training loop's writers and progress reporting.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("layers", None),
    ("length", None),
)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How one stage trains (typed; built from `config.train` and friends).

  Attributes:
    global_batch_size: sequences per optimizer step, over all hosts.
    seq_len: tokens per sequence.
    total_tokens: the stage's token budget; steps = ceil(tokens / (batch *
      seq_len)).
    grad_accum_steps: micro-batches per step (the batch is split in place).
    log_every_steps: metric window.
    eval_every_steps: held-out evaluation period (0 = only at the end).
    eval_batches: batches per source per evaluation.
    checkpoint_every_steps: save period (the last step is always saved).
    keep_last: latest checkpoints kept.
    budgets: token counts whose checkpoints are kept forever (each maps to
      step ceil(budget / tokens_per_step)).
    peak_flops: per-device peak FLOP/s for MFU; 0 = measure a matmul.
    seed: parameter-init seed.
    mesh_axes: mesh axis -> size (-1 = infer).
    rules: logical axis -> mesh axis (or tuple, or None).
    resume_from: run directory to continue (full state) if this run has no
      checkpoint.
    init_from: run directory whose params start this run (fresh optimizer).
    init_from_tokens: token budget of `init_from` to use (None = latest).
    async_checkpointing: write checkpoints in the background.
    config_hash: recorded in checkpoint metadata.
    data_mixture: {source: weight}, recorded in metadata.
    tokenizer_fingerprint: recorded in metadata.
  """

  global_batch_size: int
  seq_len: int
  total_tokens: int
  grad_accum_steps: int = 1
  log_every_steps: int = 10
  eval_every_steps: int = 0
  eval_batches: int = 2
  checkpoint_every_steps: int = 50
  keep_last: int = 2
  budgets: tuple[int, ...] = ()
  peak_flops: float = 0.0
  seed: int = 0
  mesh_axes: Mapping[str, int] = dataclasses.field(
      default_factory=lambda: {"data": -1, "fsdp": 1, "tensor": 1}
  )
  rules: tuple[tuple[str, Any], ...] = DEFAULT_RULES
  resume_from: str = ""
  init_from: str = ""
  init_from_tokens: int | None = None
  async_checkpointing: bool = True
  config_hash: str = ""
  data_mixture: Mapping[str, float] | None = None
  tokenizer_fingerprint: str = ""

  @property
  def tokens_per_step(self) -> int:
    return self.global_batch_size * self.seq_len

  @property
  def num_steps(self) -> int:
    return max(1, math.ceil(self.total_tokens / self.tokens_per_step))

  def budget_steps(self) -> dict[int, list[int]]:
    """step -> the token budgets it stands for.

    A list per step, because budgets closer together than one step land on
    the same checkpoint, which must then answer for each of them.
    """
    out: dict[int, list[int]] = {}
    for b in self.budgets:
      out.setdefault(math.ceil(int(b) / self.tokens_per_step), []).append(
          int(b)
      )
    return out

  def validate(self) -> None:
    """Raises a ValueError naming the field, before any mesh or compile."""
    for name in (
        "global_batch_size",
        "seq_len",
        "total_tokens",
        "grad_accum_steps",
        "log_every_steps",
        "checkpoint_every_steps",
    ):
      if int(getattr(self, name)) <= 0:
        raise ValueError(f"train.{name}={getattr(self, name)} must be > 0")
    bad = [b for b in self.budgets if not 0 < int(b) <= self.total_tokens]
    if bad:
      raise ValueError(
          f"budgets {bad} must lie in (0, total_tokens={self.total_tokens}]"
      )
