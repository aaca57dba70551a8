"""Orbax checkpoints of a training run: state, data-iterator state, metadata.

Layout: `<run_dir>/checkpoints/<step>/{params, opt_state, data_iter, meta}`.
`params` and `opt_state` are sharded array trees (`StandardSave`), so they
restore onto any mesh; `data_iter` holds every process's iterator state as
JSON (a dict, or bytes as base64); `meta` records tokens seen, step, config
hash, data mixture, tokenizer fingerprint, the model config, the sequence
length and the token budgets this step stands for.

Retention: the latest `keep_last` checkpoints plus, forever, the steps at the
configured token budgets (an orbax preservation policy). Orbax writes each
step to a temporary directory and renames it when complete, so a run killed
mid-write leaves no half checkpoint in the step list; a checkpoint that is
listed but unreadable (truncated files, deleted items) is skipped with a
warning and the previous one is used; the run that owns it renames it
`<step>.unreadable-<n>` (kept, no longer listed) so it can save that step
again. Readers of a finished run (`load_params`) get a CheckpointError
naming the run and step instead of another step's parameters.

Other stages read runs with `load_params(run_dir, tokens=None)`,
`read_metadata(run_dir, tokens=None)` and `read_model_config(run_dir)`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from typing import Any, Sequence

from absl import logging
from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from demix_jax.models import transformer

ITEMS = ("params", "opt_state", "data_iter", "meta")


class CheckpointError(ValueError):
  """No usable checkpoint, or one that does not fit the model."""


def checkpoint_dir(run_dir: str | epath.Path) -> epath.Path:
  """`<run_dir>/checkpoints`, absolute (Orbax rejects relative paths)."""
  path = epath.Path(run_dir)
  if "://" not in str(path):
    path = epath.Path(os.path.abspath(os.fspath(path)))
  return path / "checkpoints"


def encode_iter_state(state: Any) -> dict[str, Any]:
  """Makes an iterator state JSON-safe (bytes become base64)."""
  if isinstance(state, (bytes, bytearray)):
    return {"bytes_b64": base64.b64encode(bytes(state)).decode("ascii")}
  return {"json": json.loads(json.dumps(state))}


def decode_iter_state(blob: dict[str, Any]) -> Any:
  if "bytes_b64" in blob:
    return base64.b64decode(blob["bytes_b64"])
  return blob["json"]


def _gather_strings(s: str) -> list[str]:
  """Every process's string, in process order (a no-op on one process)."""
  if jax.process_count() == 1:
    return [s]
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  raw = np.frombuffer(s.encode("utf-8"), np.uint8)
  lens = multihost_utils.process_allgather(np.asarray([raw.size], np.int64))
  width = int(np.max(lens))
  padded = np.zeros((width,), np.uint8)
  padded[: raw.size] = raw
  alls = multihost_utils.process_allgather(padded)
  return [
      bytes(alls[i][: int(lens[i][0])]).decode("utf-8")
      for i in range(alls.shape[0])
  ]


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """When and what to keep.

  Attributes:
    every_steps: save every this many steps (and always at the end).
    keep_last: how many of the latest checkpoints to keep.
    budget_steps: steps kept forever (the token budgets).
    async_save: write in a background thread.
  """

  every_steps: int
  keep_last: int = 2
  budget_steps: tuple[int, ...] = ()
  async_save: bool = True


def _manager(
    run_dir, cfg: CheckpointConfig | None, read_only: bool = False
) -> ocp.CheckpointManager:
  if read_only or cfg is None:
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
  else:
    cm = ocp.checkpoint_managers
    policy = cm.AnyPreservationPolicy(
        [
            cm.LatestN(n=max(cfg.keep_last, 1)),
            cm.CustomSteps(list(cfg.budget_steps)),
        ]
    )
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy,
        enable_async_checkpointing=cfg.async_save,
        cleanup_tmp_directories=True,
        create=True,
    )
  handlers = {
      "params": ocp.StandardCheckpointHandler(),
      "opt_state": ocp.StandardCheckpointHandler(),
      "data_iter": ocp.JsonCheckpointHandler(),
      "meta": ocp.JsonCheckpointHandler(),
  }
  return ocp.CheckpointManager(
      checkpoint_dir(run_dir), item_handlers=handlers, options=options
  )


@dataclasses.dataclass
class Restored:
  """A restored checkpoint."""

  step: int
  params: Any
  opt_state: Any | None
  iter_state: Any | None  # this process's iterator state
  meta: dict[str, Any]


class Checkpointer:
  """Saves and restores one run's checkpoints (own directory)."""

  def __init__(self, run_dir: str | epath.Path, cfg: CheckpointConfig):
    self.run_dir = epath.Path(run_dir)
    self.cfg = cfg
    self._mngr = _manager(run_dir, cfg)

  def all_steps(self) -> list[int]:
    return sorted(self._mngr.all_steps())

  def save(
      self,
      step: int,
      params: Any,
      opt_state: Any,
      iter_state: Any,
      meta: dict[str, Any],
  ) -> None:
    """Saves (asynchronously) one step; every process must call it."""
    states = _gather_strings(json.dumps(encode_iter_state(iter_state)))
    data_iter = {
        "process_count": len(states),
        "states": [json.loads(s) for s in states],
    }
    self._mngr.save(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(params),
            opt_state=ocp.args.StandardSave(opt_state),
            data_iter=ocp.args.JsonSave(data_iter),
            meta=ocp.args.JsonSave(meta),
        ),
        force=True,
    )

  def restore_latest(
      self, abstract_params: Any, abstract_opt_state: Any
  ) -> Restored | None:
    """Restores the newest readable checkpoint (None if there is none).

    Args:
      abstract_params: ShapeDtypeStructs with shardings for the params.
      abstract_opt_state: the same for the optimizer state.

    Returns:
      The restored checkpoint, or None when the directory has no readable
      checkpoint.
    """
    r = _restore_newest(
        self._mngr, abstract_params, abstract_opt_state, self.run_dir
    )
    self._set_aside([s for s in self.all_steps() if r is None or s > r.step])
    return r

  def _set_aside(self, steps: Sequence[int]) -> None:
    """Moves unreadable steps (warned about) out of the way of new saves.

    They are kept, renamed `<step>.unreadable-<n>`, so nothing is lost, but
    Orbax no longer lists them: the run saves that step again when it gets
    there (a listed step cannot be saved over).
    """
    if not steps:
      return
    if jax.process_index() == 0:
      for step in steps:
        src = checkpoint_dir(self.run_dir) / str(step)
        n = len(list(src.parent.glob(f"{step}.unreadable-*")))
        dst = src.parent / f"{step}.unreadable-{n}"
        src.rename(dst)
        logging.warning("checkpoint %s is unreadable: moved to %s", src, dst)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

      multihost_utils.sync_global_devices("checkpoint_set_aside")
    self._mngr.reload()

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()


def _restore_newest(
    mngr,
    abstract_params,
    abstract_opt_state,
    run_dir,
    steps: Sequence[int] | None = None,
) -> Restored | None:
  steps = sorted(mngr.all_steps() if steps is None else steps, reverse=True)
  for step in steps:
    try:
      args = {
          "params": ocp.args.StandardRestore(abstract_params),
          "meta": ocp.args.JsonRestore(),
      }
      if abstract_opt_state is not None:
        args["opt_state"] = ocp.args.StandardRestore(abstract_opt_state)
        args["data_iter"] = ocp.args.JsonRestore()
      r = mngr.restore(step, args=ocp.args.Composite(**args))
    except Exception as e:  # pylint: disable=broad-except
      logging.warning(
          "checkpoint %s/checkpoints/%d is unreadable (%s: %s); "
          "falling back to the previous one",
          run_dir,
          step,
          type(e).__name__,
          str(e).splitlines()[0][:300],
      )
      continue
    iter_state = None
    if abstract_opt_state is not None:
      blob = r["data_iter"]
      if blob["process_count"] != jax.process_count():
        raise CheckpointError(
            f"{run_dir} step {step} was saved by {blob['process_count']} "
            f"processes but this run has {jax.process_count()}; the data "
            "iterator state cannot be split differently"
        )
      iter_state = decode_iter_state(blob["states"][jax.process_index()])
    return Restored(
        step=step,
        params=r["params"],
        opt_state=r.get("opt_state"),
        iter_state=iter_state,
        meta=dict(r["meta"]),
    )
  return None


def restore_newest(
    run_dir: str | epath.Path,
    abstract_params: Any,
    abstract_opt_state: Any | None = None,
) -> Restored | None:
  """Another run's newest readable checkpoint, read-only (None if none).

  For continuing a run from a different directory (`resume_from`): the
  manager is read-only, so the run being continued is never pruned or
  written to, and an unreadable newest step falls back to the one before
  (with a warning), like this run's own restore.

  Args:
    run_dir: the run directory to read.
    abstract_params: ShapeDtypeStructs with shardings for the params.
    abstract_opt_state: the same for the optimizer state; None restores
      params and metadata only (no optimizer or iterator state).

  Returns:
    The restored checkpoint, or None when none is readable.
  """
  return _restore_newest(
      _manager(run_dir, None, read_only=True),
      abstract_params,
      abstract_opt_state,
      run_dir,
  )


def _read_meta_step(mngr, step) -> dict[str, Any] | None:
  try:
    r = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(r["meta"])
  except Exception:  # pylint: disable=broad-except
    return None


def find_step(run_dir: str | epath.Path, tokens: int | None = None) -> int:
  """The step of the latest checkpoint, or of the one at a token budget.

  Args:
    run_dir: a run directory (holding `checkpoints/`).
    tokens: a token budget recorded in a checkpoint's metadata (its
      `budget_tokens`), or an exact `tokens_seen`; None = the latest step.

  Returns:
    The step number.

  Raises:
    CheckpointError: no checkpoint, or none at that budget (the message lists
      the budgets that exist).
  """
  if not checkpoint_dir(run_dir).exists():
    raise CheckpointError(
        f"{run_dir} has no checkpoints/ directory; train " "that run first"
    )
  mngr = _manager(run_dir, None, read_only=True)
  steps = sorted(mngr.all_steps())
  if not steps:
    raise CheckpointError(f"{run_dir}/checkpoints holds no checkpoint")
  if tokens is None:
    return steps[-1]
  seen: dict = {}
  for s in steps:
    meta = _read_meta_step(mngr, s) or {}
    for t in list(meta.get("budget_tokens", [])) + [meta.get("tokens_seen")]:
      if t is not None:
        seen.setdefault(int(t), s)
  if int(tokens) not in seen:
    raise CheckpointError(
        f"{run_dir} has no checkpoint at {tokens} tokens; available: "
        f"{sorted(seen)}"
    )
  return seen[int(tokens)]


def read_metadata(
    run_dir: str | epath.Path, tokens: int | None = None
) -> dict[str, Any]:
  """Metadata of the latest (or the budget) checkpoint of a run.

  Args:
    run_dir: the run directory.
    tokens: a token budget (see `find_step`), or None for the latest.

  Returns:
    A dict with at least step, tokens_seen, config_hash, data_mixture,
    tokenizer_fingerprint, budget_tokens.
  """
  step = find_step(run_dir, tokens)
  meta = _read_meta_step(_manager(run_dir, None, read_only=True), step)
  if meta is None:
    raise CheckpointError(f"{run_dir} step {step}: metadata unreadable")
  return meta


def read_model_config(
    run_dir: str | epath.Path, tokens: int | None = None
) -> transformer.ModelConfig:
  """The ModelConfig a run was trained with, from its checkpoint metadata.

  The trainer records it in every checkpoint, so a run directory alone is
  enough to rebuild (and merge) the model: no workdir config is needed.

  Args:
    run_dir: the run directory.
    tokens: a token budget (see `find_step`), or None for the latest.

  Returns:
    The ModelConfig.

  Raises:
    CheckpointError: no checkpoint, or metadata without a model config
      (a checkpoint written by something other than the trainer).
  """
  meta = read_metadata(run_dir, tokens)
  if not meta.get("model"):
    raise CheckpointError(
        f"{run_dir}: the checkpoint metadata records no model config; "
        "build the ModelConfig yourself and load the params with load_params"
    )
  return transformer.ModelConfig.from_dict(meta["model"])


def params_metadata(run_dir, step: int) -> Any:
  """Shape/dtype tree of a checkpoint's params (reads no arrays)."""
  mngr = _manager(run_dir, None, read_only=True)
  try:
    md = mngr.item_metadata(step)["params"]
  except Exception as e:  # pylint: disable=broad-except  # tensorstore/OCDBT errors
    raise CheckpointError(
        f"{run_dir} step {step}: params metadata unreadable"
        f" ({type(e).__name__}: {str(e).splitlines()[0][:300]})"
    ) from e
  tree = getattr(md, "tree", md)
  return jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype),
      tree,
      is_leaf=lambda m: hasattr(m, "shape"),
  )


def newest_params_metadata(run_dir, steps: Sequence[int]) -> Any:
  """`params_metadata` of the newest step whose metadata reads (warns)."""
  for step in sorted(steps, reverse=True):
    try:
      return params_metadata(run_dir, step)
    except CheckpointError as e:
      logging.warning("%s; trying the previous checkpoint", e)
  raise CheckpointError(f"{run_dir}: no checkpoint has readable metadata")


def check_structure(expected: Any, found: Any, source: str) -> None:
  """Raises CheckpointError naming the leaves where two trees differ."""
  exp = {
      jax.tree_util.keystr(p): x
      for p, x in jax.tree_util.tree_leaves_with_path(expected)
  }
  got = {
      jax.tree_util.keystr(p): x
      for p, x in jax.tree_util.tree_leaves_with_path(found)
  }
  problems = []
  for k in sorted(set(exp) - set(got)):
    problems.append(f"missing {k}")
  for k in sorted(set(got) - set(exp)):
    problems.append(f"unexpected {k}")
  for k in sorted(set(exp) & set(got)):
    if tuple(exp[k].shape) != tuple(got[k].shape):
      problems.append(
          f"{k}: checkpoint shape {tuple(got[k].shape)} != model "
          f"shape {tuple(exp[k].shape)}"
      )
  if problems:
    head = "; ".join(problems[:8])
    more = f" (+{len(problems) - 8} more)" if len(problems) > 8 else ""
    raise CheckpointError(
        f"checkpoint {source} does not match the model config: {head}{more}. "
        "Initialise from a run with the same config.model"
    )


def load_params(
    run_dir: str | epath.Path,
    tokens: int | None = None,
    *,
    target: Any | None = None,
    step: int | None = None,
) -> Any:
  """Params of a run's latest (or token-budget) checkpoint.

  Args:
    run_dir: the run directory.
    tokens: a token budget (see `find_step`); None = latest.
    target: optional abstract params (ShapeDtypeStructs with shardings and
      dtypes) to restore onto, e.g. sharded over a mesh; the structure is
      checked first. Default: unsharded on the first local device, with the
      saved dtypes.
    step: an explicit step (overrides `tokens`).

  Returns:
    The params pytree of jax.Arrays.
  """
  if step is None:
    step = find_step(run_dir, tokens)
  found = params_metadata(run_dir, step)
  source = f"{run_dir} step {step}"
  if target is None:
    dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=dev), found
    )
  else:
    check_structure(target, found, source)
  mngr = _manager(run_dir, None, read_only=True)
  r = _restore_newest(mngr, target, None, run_dir, steps=[step])
  if r is None:
    raise CheckpointError(f"{source} could not be read (see the warning)")
  return r.params
