"""One training stage: base, a component, the final run or a reference run.

`train(...)` builds the mesh from config data, creates (or restores) the
sharded state, and runs a pure, jitted `train_step` over batches from any
iterator with `get_state`/`set_state` (the grain loader in production, the
synthetic iterator in tests). The same code runs on 2 CPU cores and on a pod:
batches are assembled from each process's share with
`jax.make_array_from_process_local_data`, and nothing assumes one host.

Restore order at start-up:
  1. this run's own latest checkpoint (a killed run continues exactly: params,
     optimizer state, data-iterator state and step);
  2. `resume_from`: another run's latest checkpoint, continued the same way;
  3. `init_from`: another run's params only (optionally at a token budget),
     with a fresh optimizer, schedule and data iterator (components start
     from the base like this);
  4. a fresh initialisation from `seed`.

Failure modes: a mesh, batch or checkpoint that does not fit raises a
ValueError naming the field before anything compiles; a non-finite loss,
gradient or update leaves the state untouched (the step is masked out), is
counted on device, and stops the run with `TrainingDivergedError` at the
host's next look (a log, callback, evaluation or checkpoint step, or the
end; `divergence`), before any checkpoint, so the last good one is kept.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping, Sequence

from clu import periodic_actions
from etils import epath
import jax

from demix_jax import models
from demix_jax.training import checkpointing
from demix_jax.training import config as train_config
from demix_jax.training import divergence
from demix_jax.training import flops as flops_lib
from demix_jax.training import heldout as heldout_lib
from demix_jax.training import metrics as metrics_lib
from demix_jax.training import optim
from demix_jax.training import restore
from demix_jax.training import sharding
from demix_jax.training import step as step_lib


def sync_every_step() -> bool:
  """Whether the host reads every step: on CPU only, where XLA:CPU
  collectives can deadlock when steps are dispatched back to back with
  several fake devices (docs/platform_notes.md, cpu-deadlock). Elsewhere steps run ahead of the host.
  """
  return jax.default_backend() == "cpu"


@dataclasses.dataclass
class TrainResult:
  """What a stage returns."""

  params: Any
  opt_state: Any
  steps: int
  tokens: int
  seconds: float
  budget_checkpoints: dict[int, str]  # token budget -> checkpoint path
  losses: list[tuple[int, float]]  # (step, loss) of steps run in this call
  eval_metrics: dict[str, float]
  restored_from: str  # "own", "resume_from", "init_from" or "fresh"


def _checkpoint_config(
    train_cfg: train_config.TrainConfig,
) -> checkpointing.CheckpointConfig:
  return checkpointing.CheckpointConfig(
      every_steps=train_cfg.checkpoint_every_steps,
      keep_last=train_cfg.keep_last,
      budget_steps=tuple(train_cfg.budget_steps()),
      async_save=train_cfg.async_checkpointing,
  )


class _MetricWindow:
  """Train metrics averaged over one logging window, plus throughput.

  The mean is over the steps whose metrics reached the host; throughput and
  MFU count every step, fetched or not, because on accelerators steps
  between log points are not fetched (that would stall dispatch).
  """

  def __init__(self, writer, schedule, tps: int, flops_per_step, peak_total):
    self._writer = writer
    self._schedule = schedule
    self._tps = tps
    self._flops_per_step = flops_per_step
    self._peak_total = peak_total
    self._reset()

  def _reset(self) -> None:
    self._loss, self._grad_norm, self._n = 0.0, 0.0, 0
    self._t0, self._steps = time.perf_counter(), 0

  def add(self, host_metrics: Mapping[str, Any]) -> None:
    self._loss += float(host_metrics["loss"])
    self._grad_norm += float(host_metrics["grad_norm"])
    self._n += 1

  def count_step(self) -> None:
    self._steps += 1

  def write(self, step: int) -> None:
    dt = time.perf_counter() - self._t0
    n = max(self._n, 1)
    self._writer.write_scalars(
        step,
        {
            "train/loss": self._loss / n,
            "train/grad_norm": self._grad_norm / n,
            "train/lr": float(self._schedule(step - 1)),
            "train/tokens_per_s": self._steps * self._tps / max(dt, 1e-9),
            "train/tokens_seen": step * self._tps,
            "train/mfu": (
                self._flops_per_step
                * self._steps
                / max(dt, 1e-9)
                / self._peak_total
            ),
        },
    )
    self._reset()


@dataclasses.dataclass
class _Run:
  """What one call of `train` shares between its steps, evaluations and saves."""

  model_cfg: models.ModelConfig
  train_cfg: train_config.TrainConfig
  layout: step_lib.TrainLayout
  workdir: str
  ckpt: checkpointing.Checkpointer
  writer: Any
  restored_from: str
  eval_data: Mapping[str, Any] | None
  step_callback: Callable[[int, dict[str, float]], None] | None
  progress: Callable[[int], None] | None = None

  def __post_init__(self):
    rep = sharding.replicated(self.layout.mesh)
    self.p_step = step_lib.jit_train_step(
        self.model_cfg, self.train_cfg, self.layout
    )
    self.p_eval = jax.jit(
        lambda p, b: step_lib.batch_loss(self.model_cfg, p, b),
        in_shardings=(self.layout.param_shardings, self.layout.batch_shardings),
        out_shardings=rep,
    )
    self.budget_steps = self.train_cfg.budget_steps()

  def meta(self, step: int) -> dict[str, Any]:
    """Checkpoint metadata: what later stages check before using a run."""
    tc = self.train_cfg
    return {
        "step": step,
        "tokens_seen": step * tc.tokens_per_step,
        "num_steps": tc.num_steps,
        "budget_tokens": self.budget_steps.get(step, []),
        "config_hash": tc.config_hash,
        "data_mixture": dict(tc.data_mixture or {}),
        "tokenizer_fingerprint": tc.tokenizer_fingerprint,
        "model": self.model_cfg.to_dict(),
        "seq_len": tc.seq_len,
        "restored_from": self.restored_from,
        "init_from": tc.init_from,
        "init_from_tokens": tc.init_from_tokens,
    }

  def heldout(self, params: Any, step: int) -> dict[str, float]:
    """Held-out metrics of `params`, also written at `step`."""
    out = heldout_lib.evaluate(
        self.p_eval,
        params,
        self.eval_data,
        self.train_cfg.eval_batches,
        self.layout.mesh,
        self.layout.rules,
    )
    if out:
      self.writer.write_scalars(step, out)
    return out

  def is_save(self, step: int) -> bool:
    tc = self.train_cfg
    return (
        step % tc.checkpoint_every_steps == 0
        or step in self.budget_steps
        or step == tc.num_steps
    )

  def is_eval(self, step: int) -> bool:
    tc = self.train_cfg
    return bool(self.eval_data) and bool(
        (tc.eval_every_steps and step % tc.eval_every_steps == 0)
        or step == tc.num_steps
    )

  def steps(
      self, start: restore.Start, train_iter: Any, window: _MetricWindow
  ) -> tuple[Any, Any, list[tuple[int, float]], dict[str, float]]:
    """Runs steps start.step+1 .. num_steps; returns the last state.

    Metrics are fetched to the host only when something needs them (a log,
    a save, an evaluation, a callback, or always on CPU), so accelerators
    can run ahead; at every such look the on-device count of non-finite
    steps is read too, and any stops the run before the next save.
    """
    tc, layout = self.train_cfg, self.layout
    num_steps = tc.num_steps
    report = periodic_actions.ReportProgress(
        num_train_steps=num_steps,
        writer=self.writer,
        every_steps=tc.log_every_steps,
    )
    block_every_step = sync_every_step()
    params, opt_state = start.params, start.opt_state
    health = jax.jit(
        lambda: divergence.initial(start.step),
        out_shardings=sharding.replicated(layout.mesh),
    )()
    losses: list[tuple[int, float]] = []
    eval_metrics: dict[str, float] = {}
    last_saved = last_look = start.step
    for step in range(start.step + 1, num_steps + 1):
      host_batch = next(train_iter)
      if step == start.step + 1:
        step_lib.check_host_batch(
            host_batch, layout.host_batch_size, tc.seq_len, "train"
        )
      batch = sharding.make_global_batch(
          {k: host_batch[k] for k in step_lib.BATCH_KEYS},
          layout.mesh,
          layout.rules,
      )
      params, opt_state, m, health = self.p_step(
          params, opt_state, batch, health
      )
      is_save, is_eval = self.is_save(step), self.is_eval(step)
      is_log = step % tc.log_every_steps == 0 or step == num_steps
      if block_every_step or is_save or is_log or is_eval or self.step_callback:
        hm, hh = jax.device_get((m, health))
        divergence.check(
            hh,
            step=step,
            since=last_look,
            last_good=last_saved,
            checkpoints=str(checkpointing.checkpoint_dir(self.workdir)),
            metrics=hm,
        )
        last_look = step
        losses.append((step, float(hm["loss"])))
        window.add(hm)
        if self.step_callback is not None:
          self.step_callback(step, {k: float(v) for k, v in hm.items()})
      window.count_step()
      if is_log:
        window.write(step)
      report(step)
      if self.progress is not None:
        self.progress(step)
      if is_eval:
        eval_metrics = self.heldout(params, step)
      if is_save:
        self.ckpt.save(
            step, params, opt_state, train_iter.get_state(), self.meta(step)
        )
        last_saved = step
    return params, opt_state, losses, eval_metrics


def _open_writer(
    model_cfg: models.ModelConfig,
    train_cfg: train_config.TrainConfig,
    workdir: str,
    start: restore.Start,
    n_devices: int,
):
  """The metric writer; hparams only on a run's first start, not a resume."""
  writer = metrics_lib.make_writer(workdir)
  if start.step == 0 and start.restored_from != "own":
    writer.write_hparams(
        {
            "num_params": models.num_params(model_cfg),
            "num_steps": train_cfg.num_steps,
            "tokens_per_step": train_cfg.tokens_per_step,
            "devices": n_devices,
            "restored_from": start.restored_from,
        }
    )
  return writer


def _metric_window(model_cfg, optim_cfg, train_cfg, writer, n_devices):
  """The window, with the peak FLOP/s MFU divides by (measured if unset)."""
  peak = train_cfg.peak_flops
  if peak <= 0:
    peak = flops_lib.measure_matmul_flops(
        1024 if jax.default_backend() == "cpu" else 8192
    )
  tps = train_cfg.tokens_per_step
  return _MetricWindow(
      writer,
      optim.learning_rate_schedule(optim_cfg, train_cfg.num_steps),
      tps,
      flops_lib.train_flops_per_token(model_cfg) * tps,
      peak * n_devices,
  )


def train(
    model_cfg: models.ModelConfig,
    optim_cfg: optim.OptimConfig,
    train_cfg: train_config.TrainConfig,
    workdir: str,
    train_iter: Any,
    *,
    eval_data: Mapping[str, Any] | None = None,
    devices: Sequence[jax.Device] | None = None,
    step_callback: Callable[[int, dict[str, float]], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> TrainResult:
  """Runs (or resumes) one training stage to `train_cfg.total_tokens`.

  Args:
    model_cfg: the model.
    optim_cfg: the optimizer.
    train_cfg: batch, budget, mesh, checkpoint and init settings.
    workdir: the run directory (checkpoints/, metrics.jsonl, TB events).
    train_iter: yields this host's batches (dicts of int32 [B_host, T]
      `tokens`, `segment_ids`, `positions`); has `get_state()`/`set_state()`.
    eval_data: {source: batches} for held-out evaluation, each an iterable
      (or a callable returning one) of host batches; a batch may carry
      `num_bytes` [B_host] (UTF-8 bytes of the text its counted targets
      cover) to report bits per byte, otherwise only the loss is reported.
    devices: devices for the mesh (default: all).
    step_callback: called after every step with (step, host metrics); this
      fetches the metrics every step.
    progress: called after every step with the step number only (no device
      sync), for progress lines.

  Returns:
    A TrainResult.

  Raises:
    ValueError: a bad mesh, batch, budget or checkpoint (before compiling).
    divergence.TrainingDivergedError: the loss or gradients became non-finite.
  """
  t_start = time.time()
  train_cfg.validate()
  workdir = str(workdir)
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  layout = step_lib.train_layout(model_cfg, optim_cfg, train_cfg, devices)
  ckpt = checkpointing.Checkpointer(workdir, _checkpoint_config(train_cfg))
  start = restore.start_state(
      model_cfg, train_cfg, layout, ckpt, workdir, train_iter
  )
  n_devices = layout.mesh.devices.size
  run = _Run(
      model_cfg,
      train_cfg,
      layout,
      workdir,
      ckpt,
      _open_writer(model_cfg, train_cfg, workdir, start, n_devices),
      start.restored_from,
      eval_data,
      step_callback,
      progress,
  )
  window = _metric_window(
      model_cfg, optim_cfg, train_cfg, run.writer, n_devices
  )
  num_steps = train_cfg.num_steps
  try:
    with sharding.activation_rules(layout.mesh, layout.rules):
      params, opt_state, losses, eval_metrics = run.steps(
          start, train_iter, window
      )
  finally:
    ckpt.close()
    run.writer.flush()
  if start.step >= num_steps and eval_data:
    with sharding.activation_rules(layout.mesh, layout.rules):
      eval_metrics = run.heldout(params, num_steps)
  budget_paths = {
      b: str(checkpointing.checkpoint_dir(workdir) / str(s))
      for s, bs in run.budget_steps.items()
      for b in bs
  }
  return TrainResult(
      params=params,
      opt_state=opt_state,
      steps=num_steps,
      tokens=num_steps * train_cfg.tokens_per_step,
      seconds=time.time() - t_start,
      budget_checkpoints=budget_paths,
      losses=losses,
      eval_metrics=eval_metrics,
      restored_from=start.restored_from,
  )
