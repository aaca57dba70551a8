"""Checks of a checkpoint a run starts from (`base.init_from`), before work.

The pipeline calls `check` in its pre-flight, before data preparation and
before anything is written, so a bad `base.init_from` is refused at once as
a `ConfigError` (exit code 2) naming the field and the fix, not after the
tokenizer was trained and with a traceback. Two kinds of directory are
accepted (local or gs://):

- a Hugging Face Qwen3 directory: `config.json` must parse as a JSON
  object, hold the keys the import reads, and match `model.*`; the weights
  (`model.safetensors`, or `model.safetensors.index.json` and the shards it
  lists) must exist. Its tokenizer is checked later, once the data
  pipeline's vocabulary is built.
- a demix_jax run directory: `checkpoints/` must hold a checkpoint whose
  parameter tree (read from its metadata, no arrays) fits `model.*`.
"""

from __future__ import annotations

import json

from etils import epath
import jax

from demix_jax import models
from demix_jax.config_lib import ConfigError
from demix_jax.interop import hf_config
from demix_jax.training import checkpoint_reads
from demix_jax.training import checkpointing

FIELD = "base.init_from"
_WEIGHTS = "model.safetensors"
_INDEX = "model.safetensors.index.json"


def check(
    init_from: str, model_cfg: models.ModelConfig, field: str = FIELD
) -> str:
  """Refuses a start checkpoint that cannot be used, naming `field`.

  Args:
    init_from: the directory ("" = train from scratch: nothing to check).
    model_cfg: the model the run trains.
    field: the config field that holds `init_from`, for messages.

  Returns:
    "" (no checkpoint), "huggingface" or "run".

  Raises:
    ConfigError: the directory is not a usable checkpoint for `model_cfg`.
  """
  if not init_from:
    return ""
  root = epath.Path(init_from)
  if (root / "config.json").exists():
    _check_hf(root, model_cfg, field)
    return "huggingface"
  if checkpointing.checkpoint_dir(init_from).exists():
    _check_run(init_from, model_cfg, field)
    return "run"
  raise ConfigError(
      field,
      f"{init_from!r} is neither a Hugging Face directory (config.json) nor a"
      " demix_jax run directory (checkpoints/)",
      "point it at one, or use '' to train the base from scratch",
  )


def _check_hf(root: epath.Path, model_cfg, field: str) -> None:
  path = root / "config.json"
  redo = "replace it with the checkpoint's released config.json"
  try:
    config = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ConfigError(
        field,
        f"{path} is not valid JSON (line {e.lineno}, column {e.colno}:"
        f" {e.msg})",
        redo,
    ) from e
  except UnicodeDecodeError as e:
    raise ConfigError(field, f"{path} is not UTF-8 text ({e})", redo) from e
  if not isinstance(config, dict):
    raise ConfigError(
        field, f"{path} holds a {type(config).__name__}, not an object", redo
    )
  try:
    hf_config.check_config(root, model_cfg)
  except hf_config.HFCheckpointError as e:
    raise ConfigError(
        field, str(e).split(". Fix: ")[0], "match model.* to the checkpoint"
    ) from e
  except KeyError as e:
    raise ConfigError(
        field,
        f"{path} has no {e.args[0]!r} (a Qwen3 config.json has it)",
        redo,
    ) from e
  except (TypeError, ValueError) as e:
    raise ConfigError(
        field, f"{path} holds a value of the wrong type ({e})", redo
    ) from e
  _check_weights(root, field)


def _check_weights(root: epath.Path, field: str) -> None:
  """The safetensors files exist (their contents are read on import)."""
  if (root / _WEIGHTS).exists():
    return
  index = root / _INDEX
  if not index.exists():
    raise ConfigError(
        field,
        f"{root} has config.json but no weights ({_WEIGHTS} or {_INDEX})",
        "copy the checkpoint's safetensors files next to its config.json",
    )
  try:
    weight_map = json.loads(index.read_text())["weight_map"]
    files = sorted(set(weight_map.values()))
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise ConfigError(
        field,
        f"{index} is not a safetensors index (a JSON object with a"
        f" weight_map: {type(e).__name__}: {e})",
        "replace it with the checkpoint's released index",
    ) from e
  missing = [f for f in files if not (root / f).exists()]
  if missing:
    raise ConfigError(
        field,
        f"{index} lists {len(missing)} file(s) that are not in {root}:"
        f" {missing[:5]}",
        "copy every shard of the checkpoint",
    )


def _check_run(init_from: str, model_cfg, field: str) -> None:
  try:
    step = checkpointing.find_step(init_from)
    found = checkpointing.params_metadata(init_from, step)
    expected = jax.eval_shape(
        lambda: models.init_params(model_cfg, jax.random.key(0))
    )
    checkpoint_reads.check_structure(
        expected, found, f"{init_from} step {step}"
    )
  except checkpoint_reads.CheckpointError as e:
    if isinstance(e, checkpoint_reads.UnreachableCheckpointError):
      raise  # the storage, not the config: exit 4 naming the path
    raise ConfigError(
        field,
        str(e).split(". Fix: ")[0],
        "point it at a run that trained this model (config.model), or use ''"
        " to train the base from scratch",
    ) from e
