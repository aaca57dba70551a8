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
gradient or update leaves the state untouched (the step is masked out) and
stops the run with `TrainingDivergedError`, keeping the last good checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Mapping, Sequence

from absl import logging
from clu import periodic_actions
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import optax

from demix_jax import models
from demix_jax.training import checkpointing
from demix_jax.training import flops as flops_lib
from demix_jax.training import metrics as metrics_lib
from demix_jax.training import optim
from demix_jax.training import sharding

BATCH_KEYS = ("tokens", "segment_ids", "positions")
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


class TrainingDivergedError(RuntimeError):
  """The loss, gradient or update became NaN/Inf."""


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
    """step -> the token budgets it stands for."""
    out: dict[int, list[int]] = {}
    for b in self.budgets:
      out.setdefault(math.ceil(int(b) / self.tokens_per_step), []).append(
          int(b)
      )
    return out

  def validate(self) -> None:
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


def _batch_loss(cfg, params, batch):
  logits = models.forward(
      cfg, params, batch["tokens"], batch["positions"], batch["segment_ids"]
  )
  nll, mask = models.next_token_nll(
      logits, batch["tokens"], batch["segment_ids"]
  )
  return nll.sum(), mask.sum()


def make_train_step(
    cfg: models.ModelConfig,
    tx: optax.GradientTransformation,
    grad_accum_steps: int = 1,
) -> Callable:
  """The pure step: (params, opt_state, batch) -> (params, opt_state, m).

  The loss is the mean next-token NLL over every counted position of the
  global batch (micro-batches are summed, then divided once, so accumulation
  equals one big batch). A non-finite loss, gradient norm or update leaves
  params and optimizer state unchanged and reports `ok = False`.
  """
  value_and_grad = jax.value_and_grad(
      lambda p, b: _batch_loss(cfg, p, b), has_aux=True
  )

  def step(params, opt_state, batch):
    if grad_accum_steps == 1:
      (total, count), grads = value_and_grad(params, batch)
    else:
      a = grad_accum_steps
      # Strided split ([B] -> [B/a, a] -> [a, B/a]) keeps each device's rows
      # local when B is sharded.
      micro = jax.tree.map(
          lambda x: jnp.swapaxes(
              x.reshape((x.shape[0] // a, a) + x.shape[1:]), 0, 1
          ),
          batch,
      )

      def body(carry, mb):
        g_acc, s_acc, n_acc = carry
        (s, n), g = value_and_grad(params, mb)
        return (jax.tree.map(jnp.add, g_acc, g), s_acc + s, n_acc + n), None

      zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
      (grads, total, count), _ = jax.lax.scan(
          body, (zeros, jnp.float32(0), jnp.float32(0)), micro
      )
    denom = jnp.maximum(count, 1.0)
    grads = jax.tree.map(lambda g: (g / denom).astype(jnp.float32), grads)
    loss = total / denom
    grad_norm = optax.tree.norm(grads)
    updates, new_opt = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    ok = (
        jnp.isfinite(loss)
        & jnp.isfinite(grad_norm)
        & jnp.isfinite(optax.tree.norm(updates))
    )
    keep = lambda new, old: jax.tree.map(
        lambda n, o: jnp.where(ok, n, o), new, old
    )
    metrics = {
        "loss": loss,
        "grad_norm": grad_norm,
        "ok": ok,
        "tokens_counted": count,
    }
    return keep(new_params, params), keep(new_opt, opt_state), metrics

  return step


def _eval_batch(cfg, params, batch):
  logits = models.forward(
      cfg, params, batch["tokens"], batch["positions"], batch["segment_ids"]
  )
  nll, mask = models.next_token_nll(
      logits, batch["tokens"], batch["segment_ids"]
  )
  return nll.sum(), mask.sum()


def _check_host_batch(
    batch: Mapping[str, np.ndarray], host_bs: int, seq_len: int, what: str
) -> None:
  missing = [k for k in BATCH_KEYS if k not in batch]
  if missing:
    raise ValueError(
        f"{what} batch lacks keys {missing}; it needs " f"{BATCH_KEYS}"
    )
  for k in BATCH_KEYS:
    shape = np.shape(batch[k])
    if shape != (host_bs, seq_len):
      raise ValueError(
          f"{what} batch[{k!r}] has shape {shape}, expected (per-host batch "
          f"{host_bs}, seq_len {seq_len}) = global_batch_size / "
          f"process_count x data.seq_len"
      )


def _take(source: Any, n: int) -> list[Mapping[str, np.ndarray]]:
  it = source() if callable(source) else iter(source)
  out = []
  for b in it:
    out.append(b)
    if len(out) >= n:
      break
  return out


def state_layout(
    model_cfg: models.ModelConfig,
    optim_cfg: optim.OptimConfig,
    num_steps: int,
    mesh: Any,
    rules: Any,
) -> tuple[Any, Any, Any, Any, optax.GradientTransformation]:
  """Shapes and shardings of the train state, without allocating it.

  Shared by `train` and the compile check (`demix_jax.aot`), so both build
  exactly the same state.

  Returns:
    (abstract params, abstract optimizer state, param shardings, optimizer
    shardings, the optax transformation).
  """
  abstract = jax.eval_shape(
      lambda: models.init_params(model_cfg, jax.random.key(0))
  )
  param_sh = sharding.param_shardings(
      abstract, models.param_logical_axes(model_cfg), mesh, rules
  )
  tx = optim.make_optimizer(optim_cfg, num_steps, abstract)
  abstract_opt = jax.eval_shape(tx.init, abstract)
  is_sh = lambda x: isinstance(x, jax.sharding.Sharding)
  # The optimizer state mirrors the params; its scalars (e.g. the step
  # count) are replicated (env.md P6).
  opt_sh = optax.tree_map_params(
      tx,
      lambda _, s: s,
      abstract_opt,
      param_sh,
      transform_non_params=lambda _: sharding.replicated(mesh),
      is_leaf=is_sh,
  )
  return abstract, abstract_opt, param_sh, opt_sh, tx


def train(
    model_cfg: models.ModelConfig,
    optim_cfg: optim.OptimConfig,
    train_cfg: TrainConfig,
    workdir: str,
    train_iter: Any,
    *,
    eval_data: Mapping[str, Any] | None = None,
    devices: Sequence[jax.Device] | None = None,
    step_callback: Callable[[int, dict[str, float]], None] | None = None,
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
    step_callback: called after every step with (step, host metrics).

  Returns:
    A TrainResult.

  Raises:
    ValueError: a bad mesh, batch, budget or checkpoint (before compiling).
    TrainingDivergedError: the loss or gradients became non-finite.
  """
  t_start = time.time()
  train_cfg.validate()
  workdir = str(workdir)
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  tps = train_cfg.tokens_per_step
  num_steps = train_cfg.num_steps
  budget_steps = train_cfg.budget_steps()

  # ------------------------------------------------ mesh, shardings, state
  mesh = sharding.create_mesh(train_cfg.mesh_axes, devices)
  rules = sharding.check_rules(train_cfg.rules, mesh)
  host_bs = sharding.check_batch(
      train_cfg.global_batch_size, mesh, rules, train_cfg.grad_accum_steps
  )
  abstract, abstract_opt, param_sh, opt_sh, tx = state_layout(
      model_cfg, optim_cfg, num_steps, mesh, rules
  )
  with_sh = lambda tree, shs: jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shs
  )
  abstract_p = with_sh(abstract, param_sh)
  abstract_o = with_sh(abstract_opt, opt_sh)
  schedule = optim.learning_rate_schedule(optim_cfg, num_steps)

  ckpt = checkpointing.Checkpointer(
      workdir,
      checkpointing.CheckpointConfig(
          every_steps=train_cfg.checkpoint_every_steps,
          keep_last=train_cfg.keep_last,
          budget_steps=tuple(budget_steps),
          async_save=train_cfg.async_checkpointing,
      ),
  )
  init_opt = jax.jit(tx.init, in_shardings=(param_sh,), out_shardings=opt_sh)

  # Restore order: own latest > resume_from > init_from (params only) > fresh.
  start_step, restored_from = 0, "fresh"
  own_steps = ckpt.all_steps()
  if own_steps:
    checkpointing.check_structure(
        abstract,
        checkpointing.params_metadata(workdir, own_steps[-1]),
        f"{workdir} (this run's own)",
    )
  r = ckpt.restore_latest(abstract_p, abstract_o) if own_steps else None
  if r is not None:
    restored_from = "own"
  elif train_cfg.resume_from:
    step0 = checkpointing.find_step(train_cfg.resume_from)
    checkpointing.check_structure(
        abstract,
        checkpointing.params_metadata(train_cfg.resume_from, step0),
        f"resume_from={train_cfg.resume_from}",
    )
    r = checkpointing._restore_newest(  # pylint: disable=protected-access
        checkpointing._manager(train_cfg.resume_from, None, True),  # pylint: disable=protected-access
        abstract_p,
        abstract_o,
        train_cfg.resume_from,
    )
    if r is None:
      raise checkpointing.CheckpointError(
          f"resume_from={train_cfg.resume_from} has no readable checkpoint"
      )
    restored_from = "resume_from"
  if r is not None:
    params, opt_state, start_step = r.params, r.opt_state, r.step
    if r.iter_state is not None:
      train_iter.set_state(r.iter_state)
    logging.info("restored step %d from %s", start_step, restored_from)
  elif train_cfg.init_from:
    params = checkpointing.load_params(
        train_cfg.init_from, train_cfg.init_from_tokens, target=abstract_p
    )
    opt_state = init_opt(params)
    restored_from = "init_from"
    logging.info(
        "initialised params from %s (tokens=%s)",
        train_cfg.init_from,
        train_cfg.init_from_tokens,
    )
  else:
    params = jax.jit(
        lambda k: models.init_params(model_cfg, k), out_shardings=param_sh
    )(jax.random.key(train_cfg.seed))
    opt_state = init_opt(params)

  # ------------------------------------------------------------ jit steps
  batch_sh = {k: sharding.batch_sharding(mesh, rules) for k in BATCH_KEYS}
  rep = sharding.replicated(mesh)
  p_step = jax.jit(
      make_train_step(model_cfg, tx, train_cfg.grad_accum_steps),
      in_shardings=(param_sh, opt_sh, batch_sh),
      out_shardings=(param_sh, opt_sh, rep),
      donate_argnums=(0, 1),
  )
  p_eval = jax.jit(
      lambda p, b: _eval_batch(model_cfg, p, b),
      in_shardings=(param_sh, batch_sh),
      out_shardings=rep,
  )
  # XLA:CPU collectives can deadlock when steps are dispatched back to back
  # with several fake devices (env.md P1): block on every step there.
  block_every_step = jax.default_backend() == "cpu"

  n_devices = mesh.devices.size
  peak = train_cfg.peak_flops
  if peak <= 0:
    peak = flops_lib.measure_matmul_flops(
        1024 if jax.default_backend() == "cpu" else 8192
    )
  flops_per_step = flops_lib.train_flops_per_token(model_cfg) * tps

  writer = metrics_lib.make_writer(workdir)
  if start_step == 0 and restored_from != "own":
    writer.write_hparams(
        {
            "num_params": models.num_params(model_cfg),
            "num_steps": num_steps,
            "tokens_per_step": tps,
            "devices": n_devices,
            "restored_from": restored_from,
        }
    )
  report = periodic_actions.ReportProgress(
      num_train_steps=num_steps,
      writer=writer,
      every_steps=train_cfg.log_every_steps,
  )

  def meta_for(step: int) -> dict[str, Any]:
    return {
        "step": step,
        "tokens_seen": step * tps,
        "num_steps": num_steps,
        "budget_tokens": budget_steps.get(step, []),
        "config_hash": train_cfg.config_hash,
        "data_mixture": dict(train_cfg.data_mixture or {}),
        "tokenizer_fingerprint": train_cfg.tokenizer_fingerprint,
        "model": model_cfg.to_dict(),
        "restored_from": restored_from,
        "init_from": train_cfg.init_from,
        "init_from_tokens": train_cfg.init_from_tokens,
    }

  def evaluate(step: int) -> dict[str, float]:
    out = {}
    for src, data in (eval_data or {}).items():
      tot = cnt = 0.0
      nbytes, has_bytes = 0.0, True
      for hb in _take(data, train_cfg.eval_batches):
        ebs = np.shape(hb["tokens"])[0]
        if (ebs * jax.process_count()) % sharding.batch_shards(mesh, rules):
          raise ValueError(
              f"eval source {src!r}: batch of {ebs} per host does not divide "
              f"by the mesh's batch shards; change eval.batch_size"
          )
        gb = sharding.make_global_batch(
            {k: hb[k] for k in BATCH_KEYS}, mesh, rules
        )
        s, c = jax.device_get(p_eval(params, gb))
        tot, cnt = tot + float(s), cnt + float(c)
        if "num_bytes" in hb:
          nbytes += float(np.sum(hb["num_bytes"]))
        else:
          has_bytes = False
      if jax.process_count() > 1 and has_bytes:
        from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

        nbytes = float(
            np.sum(multihost_utils.process_allgather(np.asarray([nbytes])))
        )
      out[f"heldout/{src}/loss"] = tot / max(cnt, 1.0)
      if has_bytes and nbytes > 0:
        out[f"heldout/{src}/bpb"] = tot / (math.log(2.0) * nbytes)
    if out:
      writer.write_scalars(step, out)
    return out

  # ----------------------------------------------------------------- loop
  losses: list[tuple[int, float]] = []
  eval_metrics: dict[str, float] = {}
  window = {"loss": 0.0, "grad_norm": 0.0, "n": 0}
  t_window, steps_window = time.perf_counter(), 0
  last_saved = start_step
  step = start_step
  try:
    with sharding.activation_rules(mesh, rules):
      for step in range(start_step + 1, num_steps + 1):
        host_batch = next(train_iter)
        if step == start_step + 1:
          _check_host_batch(host_batch, host_bs, train_cfg.seq_len, "train")
        batch = sharding.make_global_batch(
            {k: host_batch[k] for k in BATCH_KEYS}, mesh, rules
        )
        params, opt_state, m = p_step(params, opt_state, batch)
        is_save = (
            step % train_cfg.checkpoint_every_steps == 0
            or step in budget_steps
            or step == num_steps
        )
        is_log = step % train_cfg.log_every_steps == 0 or step == num_steps
        if block_every_step or is_save or is_log or step_callback:
          hm = jax.device_get(m)
          if not bool(hm["ok"]):
            raise TrainingDivergedError(
                f"step {step}: non-finite loss/gradients (loss="
                f"{float(hm['loss'])}, grad_norm={float(hm['grad_norm'])}); "
                f"this step was not applied; the last good checkpoint is "
                f"step {last_saved} in {workdir}/checkpoints. Lower "
                "optim.peak_lr or check the data"
            )
          losses.append((step, float(hm["loss"])))
          window["loss"] += float(hm["loss"])
          window["grad_norm"] += float(hm["grad_norm"])
          window["n"] += 1
          if step_callback is not None:
            step_callback(step, {k: float(v) for k, v in hm.items()})
        steps_window += 1
        if is_log:
          dt = time.perf_counter() - t_window
          tok_s = steps_window * tps / max(dt, 1e-9)
          n = max(window["n"], 1)
          writer.write_scalars(
              step,
              {
                  "train/loss": window["loss"] / n,
                  "train/grad_norm": window["grad_norm"] / n,
                  "train/lr": float(schedule(step - 1)),
                  "train/tokens_per_s": tok_s,
                  "train/tokens_seen": step * tps,
                  "train/mfu": (
                      flops_per_step
                      * steps_window
                      / max(dt, 1e-9)
                      / (peak * n_devices)
                  ),
              },
          )
          window = {"loss": 0.0, "grad_norm": 0.0, "n": 0}
          t_window, steps_window = time.perf_counter(), 0
        report(step)
        if eval_data and (
            (
                train_cfg.eval_every_steps
                and step % train_cfg.eval_every_steps == 0
            )
            or step == num_steps
        ):
          eval_metrics = evaluate(step)
        if is_save:
          ckpt.save(
              step, params, opt_state, train_iter.get_state(), meta_for(step)
          )
          last_saved = step
  finally:
    ckpt.close()
    writer.flush()
  if start_step >= num_steps and eval_data:
    with sharding.activation_rules(mesh, rules):
      eval_metrics = evaluate(num_steps)
  budget_paths = {
      b: str(checkpointing.checkpoint_dir(workdir) / str(s))
      for s, bs in budget_steps.items()
      for b in bs
  }
  return TrainResult(
      params=params,
      opt_state=opt_state,
      steps=num_steps,
      tokens=num_steps * tps,
      seconds=time.time() - t_start,
      budget_checkpoints=budget_paths,
      losses=losses,
      eval_metrics=eval_metrics,
      restored_from=restored_from,
  )
