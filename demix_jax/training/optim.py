"""AdamW with warmup and cosine decay to a floor, clipping and a decay mask.

The paper trains with peak LR 3e-4 and a cosine schedule to 20% of the peak;
warmup, betas and weight decay are not stated, so they are config fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import optax


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """Optimizer settings (the fields of `config.optim`).

  Attributes:
    peak_lr: learning rate after warmup.
    min_lr_ratio: the cosine ends at `min_lr_ratio * peak_lr`.
    warmup_steps: linear warmup from 0 to the peak.
    weight_decay: decoupled AdamW weight decay.
    b1: Adam beta1.
    b2: Adam beta2.
    eps: Adam epsilon.
    clip_norm: global-norm gradient clipping (0 = off).
    decay_embeddings: also decay the embedding (and untied LM head).
  """

  peak_lr: float = 3e-4
  min_lr_ratio: float = 0.2
  warmup_steps: int = 0
  weight_decay: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  clip_norm: float = 1.0
  decay_embeddings: bool = False

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "OptimConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(
          f"unknown optim config keys {unknown}; known: " f"{sorted(names)}"
      )
    return cls(**dict(d))


def learning_rate_schedule(
    cfg: OptimConfig, total_steps: int
) -> optax.Schedule:
  """Linear warmup to `peak_lr`, then cosine to `min_lr_ratio * peak_lr`.

  Args:
    cfg: optimizer settings.
    total_steps: optimizer steps of the whole run (the cosine ends here).

  Returns:
    step -> learning rate.
  """
  if not 0.0 <= cfg.min_lr_ratio <= 1.0:
    raise ValueError(f"optim.min_lr_ratio={cfg.min_lr_ratio} must be in [0,1]")
  if cfg.warmup_steps < 0:
    raise ValueError(f"optim.warmup_steps={cfg.warmup_steps} must be >= 0")
  warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=cfg.peak_lr,
      warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1),
      end_value=cfg.peak_lr * cfg.min_lr_ratio,
  )


def _is_embedding(path) -> bool:
  keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
  return bool(keys) and keys[0] in ("embed", "lm_head")


def decay_mask(params: Any, decay_embeddings: bool = False) -> Any:
  """True where weight decay applies: matrices, but not norms/embeddings.

  Args:
    params: the params pytree (or its eval_shape).
    decay_embeddings: decay the embedding and LM head too.

  Returns:
    A pytree of bools with the structure of params.
  """

  def one(path, x):
    keys = [getattr(k, "key", None) for k in path]
    if "scale" in keys:  # RMSNorm scales (stacked ones are 2-D).
      return False
    if _is_embedding(path):
      return decay_embeddings
    return x.ndim >= 2

  return jax.tree_util.tree_map_with_path(one, params)


def make_optimizer(
    cfg: OptimConfig, total_steps: int, params_shape: Any
) -> optax.GradientTransformation:
  """Global-norm clipping followed by masked AdamW on the schedule.

  Args:
    cfg: optimizer settings.
    total_steps: optimizer steps of the run.
    params_shape: params or their eval_shape (for the decay mask).

  Returns:
    The optax transformation.
  """
  schedule = learning_rate_schedule(cfg, total_steps)
  parts = []
  if cfg.clip_norm and cfg.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(cfg.clip_norm))
  parts.append(
      optax.adamw(
          schedule,
          b1=cfg.b1,
          b2=cfg.b2,
          eps=cfg.eps,
          weight_decay=cfg.weight_decay,
          mask=decay_mask(params_shape, cfg.decay_embeddings),
      )
  )
  return optax.chain(*parts)
