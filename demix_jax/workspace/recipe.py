"""The training recipe of a run: "train a run on these source weights".

The base, component, final and reference runs share `TrainingRecipe.train`:
validate the weights, check repetition against the counted tokens, build
the Grain stream and the trainer's settings (`train_config`, shared with the
compile check), then train (resuming the run's own checkpoints).
"""

from __future__ import annotations

from typing import Mapping

from absl import logging
from etils import epath
import jax

from demix_jax import guards
from demix_jax import spec as spec_lib
from demix_jax.data import mixture as mixture_lib
from demix_jax.training import config as training_config
from demix_jax.workspace import data as data_lib


class TrainingRecipe:
  """Trains runs of one spec on one run's data."""

  def __init__(self, spec: spec_lib.RunSpec, data: data_lib.DataCaches):
    self.spec = spec
    self.data = data

  def train(
      self,
      run_dir: epath.Path,
      weights: Mapping[str, float],
      total_tokens: int,
      *,
      what: str,
      budgets: tuple[int, ...] = (),
      init_from: str = "",
      init_from_tokens: int | None = None,
      seed_offset: int = 0,
      config_hash: str = "",
      progress=None,
      optim=None,
  ):
    """Trains one run on source `weights` (resumes its own checkpoints).

    `optim` (an OptimConfig) replaces `spec.optim` for this run (the
    components use `spec.component_optim`).

    Returns:
      The trainer's TrainResult.
    """
    from demix_jax.data import pipeline as data_pipeline  # pylint: disable=g-import-not-at-top  # grain
    from demix_jax.training import trainer as trainer_lib  # pylint: disable=g-import-not-at-top  # clu writers pull TF

    d = self.spec.data
    if config_hash:
      guards.check_unfinished_run(run_dir, config_hash, what)
    weights = mixture_lib.validate_weights(
        weights,
        list(self.data.sources),
        field=what,
        normalize=d.normalize_weights,
    )
    weights = mixture_lib.active(weights)
    mixture_lib.check_repetition(
        weights,
        self.data.token_counts,
        int(total_tokens),
        d.max_epochs,
        d.on_overrun,
        what=what,
    )
    logging.info(
        "%s: training %d tokens on %s",
        what,
        total_tokens,
        {k: round(v, 4) for k, v in weights.items()},
    )
    it = data_pipeline.make_train_iterator(
        self.data.sources,
        weights,
        self.data.vocab,
        d.seq_len,
        self.spec.train.global_batch_size,
        seed=d.shuffle_seed + seed_offset,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        worker_count=d.worker_count,
    )
    cfg = train_config(
        self.spec,
        total_tokens,
        mixture=weights,
        budgets=budgets,
        init_from=init_from,
        init_from_tokens=init_from_tokens,
        seed_offset=seed_offset,
        config_hash=config_hash,
        tokenizer_fingerprint=self.data.vocab.fingerprint,
    )
    return trainer_lib.train(
        self.spec.model,
        optim or self.spec.optim,
        cfg,
        str(run_dir),
        it,
        eval_data=self.data.eval_batches(),
        progress=progress,
    )


def train_config(
    spec: spec_lib.RunSpec,
    total_tokens: int,
    *,
    mixture: Mapping[str, float],
    budgets: tuple[int, ...] = (),
    init_from: str = "",
    init_from_tokens: int | None = None,
    seed_offset: int = 0,
    config_hash: str = "",
    tokenizer_fingerprint: str = "",
) -> training_config.TrainConfig:
  """A trainer TrainConfig from the spec (shared with the compile check)."""
  t = spec.train
  return training_config.TrainConfig(
      global_batch_size=t.global_batch_size,
      seq_len=spec.data.seq_len,
      total_tokens=int(total_tokens),
      grad_accum_steps=t.grad_accum_steps,
      log_every_steps=t.log_every_steps,
      eval_every_steps=t.eval_every_steps,
      eval_batches=t.eval_batches,
      checkpoint_every_steps=t.checkpoint_every_steps,
      keep_last=t.keep_last,
      budgets=tuple(int(b) for b in budgets),
      peak_flops=t.peak_flops,
      seed=spec.seed + seed_offset,
      mesh_axes=dict(spec.mesh.axes),
      rules=spec.mesh.rules,
      init_from=init_from,
      init_from_tokens=init_from_tokens,
      config_hash=config_hash,
      data_mixture=dict(mixture),
      tokenizer_fingerprint=tokenizer_fingerprint,
  )
