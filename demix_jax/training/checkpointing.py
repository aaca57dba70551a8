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
mid-write leaves no half checkpoint in the step list. Reads go through
`checkpoint_reads`: a listed checkpoint that is corrupt (truncated or
overwritten files, deleted items) is named in an error-level log line and
skipped for the previous one; the run that owns it renames it
`<step>.unreadable-<n>` (kept, no longer listed, recorded in
`<run_dir>/unreadable_checkpoints.json`) so it can save that step again. A
transient storage error is retried, then stops the run (`CheckpointError`
naming the path): it never skips a step. A run whose checkpoints are all
corrupt stops too, instead of starting over. Readers of a finished run
(`load_params`) get a CheckpointError naming the run and step instead of
another step's parameters.

Other stages read runs with `load_params(run_dir, tokens=None)`,
`read_metadata(run_dir, tokens=None)` and `read_model_config(run_dir)`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Sequence

from absl import logging
from etils import epath
import jax
import orbax.checkpoint as ocp

from demix_jax.models import transformer
from demix_jax.training import checkpoint_reads as reads
from demix_jax.training import iter_state as iter_state_lib

ITEMS = ("params", "opt_state", "data_iter", "meta")


def checkpoint_dir(run_dir: str | epath.Path) -> epath.Path:
  """`<run_dir>/checkpoints`, absolute (Orbax rejects relative paths)."""
  path = epath.Path(run_dir)
  if "://" not in str(path):
    path = epath.Path(os.path.abspath(os.fspath(path)))
  return path / "checkpoints"


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """When and what to keep.

  Attributes:
    every_steps: save every this many steps (and always at the end).
    keep_last: how many of the latest checkpoints to keep.
    budget_steps: steps kept forever (the token budgets).
    async_save: write in a background thread.
    retry_delays: waits between tries of a read that fails transiently
      (None: `checkpoint_reads.RETRY_DELAYS`).
  """

  every_steps: int
  keep_last: int = 2
  budget_steps: tuple[int, ...] = ()
  async_save: bool = True
  retry_delays: tuple[float, ...] | None = None


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
  # Opening lists the steps and reads their metadata: retried like a read.
  return reads.read(
      lambda: ocp.CheckpointManager(
          checkpoint_dir(run_dir), item_handlers=handlers, options=options
      ),
      str(checkpoint_dir(run_dir)),
      None if cfg is None else cfg.retry_delays,
  )


@dataclasses.dataclass
class Restored:
  """A restored checkpoint."""

  step: int
  params: Any
  opt_state: Any | None
  iter_state: Any | None  # this process's iterator state
  meta: dict[str, Any]
  # Newer steps skipped as corrupt: (step, CorruptCheckpointError).
  skipped: list[tuple[int, reads.CorruptCheckpointError]] = dataclasses.field(
      default_factory=list
  )


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
    states = iter_state_lib.gather_strings(
        json.dumps(iter_state_lib.encode(iter_state))
    )
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
      The restored checkpoint (newer corrupt steps set aside), or None when
      the run has no checkpoint yet.

    Raises:
      CheckpointError: the params do not match `abstract_params`, a read
        kept failing transiently, or every checkpoint is corrupt.
    """
    r = _restore_newest(
        self._mngr,
        abstract_params,
        abstract_opt_state,
        self.run_dir,
        delays=self.cfg.retry_delays,
        source=f"{self.run_dir} (this run's own)",
    )
    if r is not None:
      self._set_aside(r.skipped)
    return r

  def _set_aside(self, skipped: Sequence[tuple[int, Exception]]) -> None:
    """Moves corrupt steps (logged) out of the way of new saves.

    They are kept, renamed `<step>.unreadable-<n>` and recorded, so nothing
    is lost, but Orbax no longer lists them: the run saves that step again
    when it gets there (a listed step cannot be saved over).
    """
    if not skipped:
      return
    if jax.process_index() == 0:
      entries = []
      for step, err in skipped:
        src = checkpoint_dir(self.run_dir) / str(step)
        n = len(list(src.parent.glob(f"{step}.unreadable-*")))
        dst = src.parent / f"{step}.unreadable-{n}"
        src.rename(dst)
        logging.error("checkpoint %s is unreadable: moved to %s", src, dst)
        entries.append(
            dict(step=step, path=str(src), moved_to=str(dst), error=str(err))
        )
      reads.record_skipped(self.run_dir, entries)
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
    *,
    delays: tuple[float, ...] | None = None,
    source: str | None = None,
) -> Restored | None:
  """The newest step that reads, skipping corrupt ones (see the docstring).

  `source` (a label for messages) checks each step's params against
  `abstract_params` before reading arrays. None when there are no steps;
  a CheckpointError when all of them are corrupt.
  """
  asked = steps is not None
  steps = sorted(mngr.all_steps() if steps is None else steps, reverse=True)
  skipped = []
  args = {
      "params": ocp.args.StandardRestore(abstract_params),
      "meta": ocp.args.JsonRestore(),
  }
  if abstract_opt_state is not None:
    args["opt_state"] = ocp.args.StandardRestore(abstract_opt_state)
    args["data_iter"] = ocp.args.JsonRestore()
  for step in steps:
    what = f"{checkpoint_dir(run_dir)}/{step}"
    try:
      if source is not None:
        found = params_metadata(run_dir, step, delays=delays)
        reads.check_structure(abstract_params, found, source)
      r = reads.read(
          functools.partial(
              mngr.restore, step, args=ocp.args.Composite(**args)
          ),
          what,
          delays,
      )
    except reads.CorruptCheckpointError as e:
      logging.error("%s; skipping it for the previous checkpoint", e)
      skipped.append((step, e))
      continue
    iter_state = None
    if abstract_opt_state is not None:
      blob = r["data_iter"]
      if blob["process_count"] != jax.process_count():
        raise reads.CheckpointError(
            f"{run_dir} step {step} was saved by {blob['process_count']} "
            f"processes but this run has {jax.process_count()}; the data "
            "iterator state cannot be split differently"
        )
      iter_state = iter_state_lib.decode(blob["states"][jax.process_index()])
    return Restored(
        step=step,
        params=r["params"],
        opt_state=r.get("opt_state"),
        iter_state=iter_state,
        meta=dict(r["meta"]),
        skipped=skipped,
    )
  if asked and skipped:
    raise skipped[0][1]  # a reader asked for these steps: name the first
  if skipped:
    raise reads.CheckpointError(
        f"{checkpoint_dir(run_dir)}: no checkpoint is readable ("
        + "; ".join(str(e) for _, e in skipped)
        + "). Nothing was restarted. Fix: restore the files from a copy, or"
        f" move {checkpoint_dir(run_dir)} away to start this run again"
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
  written to; a corrupt newest step falls back to the one before (logged),
  a transient error is retried, like this run's own restore. The params
  are checked against `abstract_params` first.

  Args:
    run_dir: the run directory to read.
    abstract_params: ShapeDtypeStructs with shardings for the params.
    abstract_opt_state: the same for the optimizer state; None restores
      params and metadata only (no optimizer or iterator state).

  Returns:
    The restored checkpoint, or None when the run has no checkpoint.
  """
  return _restore_newest(
      _manager(run_dir, None, read_only=True),
      abstract_params,
      abstract_opt_state,
      run_dir,
      source=f"resume_from={run_dir}",
  )


def _read_meta_step(mngr, step, run_dir="") -> dict[str, Any] | None:
  """A step's metadata; None when corrupt (transient errors are retried)."""
  try:
    r = reads.read(
        lambda: mngr.restore(
            step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
        ),
        f"{run_dir}/checkpoints/{step} (meta)",
    )
    return dict(r["meta"])
  except reads.CorruptCheckpointError as e:
    logging.error("%s", e)
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
    raise reads.CheckpointError(
        f"{run_dir} has no checkpoints/ directory; train " "that run first"
    )
  mngr = _manager(run_dir, None, read_only=True)
  steps = sorted(mngr.all_steps())
  if not steps:
    raise reads.CheckpointError(f"{run_dir}/checkpoints holds no checkpoint")
  if tokens is None:
    return steps[-1]
  seen: dict = {}
  for s in steps:
    meta = _read_meta_step(mngr, s, run_dir) or {}
    for t in list(meta.get("budget_tokens", [])) + [meta.get("tokens_seen")]:
      if t is not None:
        seen.setdefault(int(t), s)
  if int(tokens) not in seen:
    raise reads.CheckpointError(
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
  meta = _read_meta_step(_manager(run_dir, None, read_only=True), step, run_dir)
  if meta is None:
    raise reads.CheckpointError(f"{run_dir} step {step}: metadata unreadable")
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
    raise reads.CheckpointError(
        f"{run_dir}: the checkpoint metadata records no model config; "
        "build the ModelConfig yourself and load the params with load_params"
    )
  return transformer.ModelConfig.from_dict(meta["model"])


def params_metadata(run_dir, step: int, delays=None) -> Any:
  """Shape/dtype tree of a checkpoint's params (reads no arrays).

  Raises:
    CorruptCheckpointError: the metadata is damaged (names run and step).
    UnreachableCheckpointError: reading it kept failing transiently.
  """
  mngr = _manager(run_dir, None, read_only=True)
  md = reads.read(
      lambda: mngr.item_metadata(step)["params"],
      f"{run_dir} step {step}: params metadata",
      delays,
  )
  tree = getattr(md, "tree", md)
  return jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype),
      tree,
      is_leaf=lambda m: hasattr(m, "shape"),
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
    reads.check_structure(target, found, source)
  mngr = _manager(run_dir, None, read_only=True)
  restored = _restore_newest(mngr, target, None, run_dir, steps=[step])
  # One step asked for: it is restored, or _restore_newest raised.
  assert restored is not None
  return restored.params
