"""The pure train step and the train state's layout, without a training loop.

They live apart from `trainer.train` because three callers need exactly the
same step and state: the trainer, the compile check (`demix_jax.aot`, which
lowers the step on abstract values only) and the throughput benchmark. A
step built twice would let the compile check vouch for a program that is
not the one that trains.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from demix_jax import models
from demix_jax.models import loss as loss_lib
from demix_jax.training import config as train_config
from demix_jax.training import divergence
from demix_jax.training import optim
from demix_jax.training import sharding

BATCH_KEYS = ("tokens", "segment_ids", "positions")


def batch_loss(
    cfg: models.ModelConfig, params: Any, batch: Mapping[str, jax.Array]
) -> tuple[jax.Array, jax.Array]:
  """(summed next-token NLL, counted targets) of one batch.

  Sums rather than a mean, so that micro-batches and held-out batches can be
  added up first and divided once: accumulation then equals one big batch,
  and held-out loss is per token over the whole source, not a mean of means.
  Training and held-out evaluation both use it, so they measure the same
  loss.
  """
  # Unchunked (model.loss_chunk = 0) this is next_token_nll(forward(...)).
  nll, mask = loss_lib.batch_nll(
      cfg, params, batch["tokens"], batch["positions"], batch["segment_ids"]
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
  params and optimizer state unchanged and reports `ok = False`;
  `jit_train_step` counts such steps on device (`divergence.track`) and the
  trainer stops before any checkpoint follows one.
  """
  value_and_grad = jax.value_and_grad(
      lambda p, b: batch_loss(cfg, p, b), has_aux=True
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


def check_host_batch(
    batch: Mapping[str, np.ndarray], host_bs: int, seq_len: int, what: str
) -> None:
  """Raises a ValueError naming the config field a wrong batch comes from.

  A batch of the wrong shape would otherwise fail deep inside the jitted
  step (or, worse, retrace it silently for a new shape).
  """
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


def state_layout(
    model_cfg: models.ModelConfig,
    optim_cfg: optim.OptimConfig,
    num_steps: int,
    mesh: Any,
    rules: Any,
) -> tuple[Any, Any, Any, Any, optax.GradientTransformation]:
  """Shapes and shardings of the train state, without allocating it.

  Shared by `train` and the compile check (`demix_jax.aot`), so both build
  exactly the same state; abstract, so a model too big for this host can
  still be laid out and compiled.

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
  # count) are replicated (docs/platform_notes.md, optax-count). tx.init is
  # traced, not run: eager init would start the default backend (the compile
  # check must not).
  opt_sh = optax.tree_map_params(
      lambda p: jax.eval_shape(tx.init, p),
      lambda _, s: s,
      abstract_opt,
      param_sh,
      transform_non_params=lambda _: sharding.replicated(mesh),
      is_leaf=is_sh,
  )
  return abstract, abstract_opt, param_sh, opt_sh, tx


@dataclasses.dataclass(frozen=True)
class TrainLayout:
  """Where every array of a run lives, built before anything is allocated.

  One construction for `train` and `lower_train_step`, so the compile check
  compiles the program that trains, with the same shardings; and one place
  that rejects a mesh or batch that does not fit, before any compile.

  Attributes:
    mesh: the device mesh.
    rules: the checked logical axis rules.
    host_batch_size: sequences per process per step.
    params: abstract params (ShapeDtypeStructs carrying their shardings).
    opt_state: abstract optimizer state, likewise.
    param_shardings: shardings of the params.
    opt_shardings: shardings of the optimizer state.
    batch_shardings: {batch key: sharding}.
    tx: the optax transformation.
  """

  mesh: Any
  rules: Any
  host_batch_size: int
  params: Any
  opt_state: Any
  param_shardings: Any
  opt_shardings: Any
  batch_shardings: Mapping[str, Any]
  tx: optax.GradientTransformation


def _with_shardings(tree: Any, shardings: Any) -> Any:
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      tree,
      shardings,
  )


def train_layout(
    model_cfg: models.ModelConfig,
    optim_cfg: optim.OptimConfig,
    train_cfg: train_config.TrainConfig,
    devices: Sequence[Any] | None = None,
) -> TrainLayout:
  """The mesh, rules and state shardings of a run (see `TrainLayout`).

  Args:
    model_cfg: the model.
    optim_cfg: the optimizer (its state is laid out too).
    train_cfg: batch, mesh and rules.
    devices: devices of the mesh (default all); may be a compile-only
      topology's devices, since nothing is placed on them.

  Returns:
    The layout.

  Raises:
    ValueError: a bad setting, mesh or batch, before anything compiles.
  """
  train_cfg.validate()
  mesh = sharding.create_mesh(train_cfg.mesh_axes, devices)
  rules = sharding.check_rules(train_cfg.rules, mesh)
  host_bs = sharding.check_batch(
      train_cfg.global_batch_size, mesh, rules, train_cfg.grad_accum_steps
  )
  abstract, abstract_opt, param_sh, opt_sh, tx = state_layout(
      model_cfg, optim_cfg, train_cfg.num_steps, mesh, rules
  )
  return TrainLayout(
      mesh=mesh,
      rules=rules,
      host_batch_size=host_bs,
      params=_with_shardings(abstract, param_sh),
      opt_state=_with_shardings(abstract_opt, opt_sh),
      param_shardings=param_sh,
      opt_shardings=opt_sh,
      batch_shardings={
          k: sharding.batch_sharding(mesh, rules) for k in BATCH_KEYS
      },
      tx=tx,
  )


def jit_train_step(
    model_cfg: models.ModelConfig,
    train_cfg: train_config.TrainConfig,
    layout: TrainLayout,
) -> jax.stages.Wrapped:
  """The jitted step, donating params, optimizer state and health record.

  (params, opt_state, batch, health) -> (params, opt_state, metrics,
  health): `health` counts non-finite steps on device
  (`divergence.track`), so the host can check at any look whether a step
  it never read was skipped. Donation halves the state's peak memory; it
  is part of what the compile check measures, so `train` and
  `lower_train_step` share this.
  """
  rep = sharding.replicated(layout.mesh)
  return jax.jit(
      divergence.track(
          make_train_step(model_cfg, layout.tx, train_cfg.grad_accum_steps)
      ),
      in_shardings=(
          layout.param_shardings,
          layout.opt_shardings,
          layout.batch_shardings,
          rep,
      ),
      out_shardings=(layout.param_shardings, layout.opt_shardings, rep, rep),
      donate_argnums=(0, 1, 3),
  )


def lower_train_step(
    model_cfg: models.ModelConfig,
    train_cfg: train_config.TrainConfig,
    layout: TrainLayout,
) -> jax.stages.Lowered:
  """The train step lowered on abstract state and batch (nothing allocated).

  For the compile check: only `jax.ShapeDtypeStruct`s with shardings enter,
  so it works for a model of any size and, with a layout over a compile-only
  topology's devices (`jax.experimental.topologies`), for chips that are not
  attached. Call `.compile()` on the result.

  Args:
    model_cfg: the model.
    train_cfg: batch, seq_len and accumulation.
    layout: `train_layout(...)` of the same configs.

  Returns:
    The Lowered step.
  """
  shape = (train_cfg.global_batch_size, train_cfg.seq_len)
  batch = {
      k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=s)
      for k, s in layout.batch_shardings.items()
  }
  rep = sharding.replicated(layout.mesh)
  health = {
      k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=rep)
      for k, v in divergence.abstract().items()
  }
  with sharding.activation_rules(layout.mesh, layout.rules):
    return jit_train_step(model_cfg, train_cfg, layout).lower(
        layout.params, layout.opt_state, batch, health
    )
