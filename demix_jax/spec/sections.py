"""Readers of the training-side config sections (model to merge)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Mapping

from demix_jax import config_lib
from demix_jax import models
from demix_jax.config_lib import ConfigError
from demix_jax.data import mixture as mixture_lib
from demix_jax.data import sources as sources_lib
from demix_jax.data import text_sample
from demix_jax.data import tokenizer as tokenizer_lib
from demix_jax.merging import methods as merge_methods
from demix_jax.merging import tensors as merge_tensors
from demix_jax.spec import types
from demix_jax.training import optim as optim_lib
from demix_jax.training import sharding as sharding_lib


def lib(field: str, fix: str, fn, *args, **kwargs):
  """Calls a library constructor; its ValueError becomes a ConfigError."""
  try:
    return fn(*args, **kwargs)
  except ConfigError:
    raise
  except (ValueError, TypeError) as e:
    raise ConfigError(
        library_error_field(e, field),
        getattr(e, "problem", None) or str(e),
        getattr(e, "fix", None) or fix,
    ) from e


def library_error_field(e: Exception, default: str) -> str:
  """The config field path a library error refers to (the edge's mapping).

  Libraries name what is wrong in their own terms: a SourceError names the
  source and its key, a MixtureError the entry of the mixture it was given.
  Only here do those become config paths.

  Args:
    e: the library error.
    default: the config field the failing value came from.

  Returns:
    A dotted config path.
  """
  key = str(getattr(e, "key", "") or "")
  if getattr(e, "source", None):
    return f"data.sources.{e.source}" + (f".{key}" if key else "")
  return f"{default}.{key}" if key else default


# ----------------------------------------------------------------------------
# Sections.
# ----------------------------------------------------------------------------


def model(r: config_lib.Reader) -> models.ModelConfig:
  """The ModelConfig: types read here, its rules checked by ModelConfig.

  ModelConfig validates itself (divisibility, dtypes, remat policies,
  attention implementations); its errors name the field (`model.<name>`
  first in the message), which becomes the ConfigError's field.
  """
  d = r.mapping("model")
  for key in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads"):
    r.int(f"model.{key}")
  r.int("model.head_dim")
  r.int("model.d_ff")
  r.float("model.rope_theta", 0.0, open_low=True)
  r.float("model.norm_eps", 0.0, 1.0, open_low=True, open_high=True)
  r.bool("model.tie_embeddings")
  if "loss_chunk" in d:
    r.int("model.loss_chunk", 0)
  try:
    return models.ModelConfig.from_dict(d)
  except (ValueError, TypeError) as e:
    named = re.match(r"model\.(\w+)", str(e))
    raise ConfigError(
        f"model.{named.group(1)}" if named else "model",
        str(e),
        "use the fields of demix_jax.models.ModelConfig",
    ) from e


def mesh(r: config_lib.Reader, num_devices: int | None) -> types.MeshSpec:
  axes = r.mapping("mesh.axes")
  if not axes:
    raise ConfigError("mesh.axes", "is empty", "give e.g. {'data': -1}")
  for name, size in axes.items():
    if isinstance(size, bool) or not isinstance(size, int):
      raise ConfigError(
          f"mesh.axes.{name}", f"expected an integer, got {size!r}", "use -1/n"
      )
  if num_devices is not None:
    config_lib.resolve_mesh_shape(axes, num_devices)
  rules = r.get("mesh.rules")
  if isinstance(rules, str) or not isinstance(rules, (list, tuple)):
    raise ConfigError(
        "mesh.rules",
        f"expected a tuple of (logical, mesh) pairs, got {rules!r}",
        "see configs/demo.py for the form",
    )
  out = []
  for i, rule in enumerate(rules):
    if not isinstance(rule, (list, tuple)) or len(rule) != 2:
      raise ConfigError(
          f"mesh.rules[{i}]", f"{rule!r} is not a pair", "use (logical, mesh)"
      )
    name, target = rule
    if name not in sharding_lib.LOGICAL_NAMES:
      raise ConfigError(
          f"mesh.rules[{i}]",
          f"unknown logical axis {name!r}",
          f"use one of {sharding_lib.LOGICAL_NAMES}",
      )
    targets = (
        ()
        if target is None
        else (target,)
        if isinstance(target, str)
        else target
    )
    for t in targets:
      if t not in axes:
        raise ConfigError(
            f"mesh.rules[{i}]",
            f"mesh axis {t!r} is not in mesh.axes",
            f"use one of {tuple(axes)} or None",
        )
    out.append((name, tuple(target) if isinstance(target, list) else target))
  return types.MeshSpec(dict(axes), tuple(out))


def weights(r, dotted, names, normalize) -> dict[str, float]:
  """Checks a {source: weight} field; returns it as written.

  Normalisation (data.normalize_weights) happens where the weights are
  used, so what is recorded in results is what the user wrote.
  """
  w = r.mapping(dotted)
  try:
    mixture_lib.validate_weights(
        w,
        names,
        field=dotted,
        normalize="error" if normalize == "error" else "silent",
    )
  except ValueError as e:
    raise ConfigError(
        library_error_field(e, dotted),
        getattr(e, "problem", None) or str(e),
        getattr(e, "fix", None) or "give known sources with weights >= 0",
    ) from e
  return w


def data(r: config_lib.Reader, model: models.ModelConfig) -> types.DataSpec:
  max_docs = r.int("data.offline_max_docs", 0)
  raw = r.mapping("data.sources")
  if not raw:
    raise ConfigError("data.sources", "no sources are defined", "add sources")
  specs = {}
  for name, d in raw.items():
    if not isinstance(d, Mapping):
      raise ConfigError(
          f"data.sources.{name}", f"expected a dict, got {d!r}", "give a dict"
      )
    specs[name] = lib(
        f"data.sources.{name}",
        "see demix_jax/data/sources.py for the keys of each kind",
        sources_lib.spec_from_dict,
        name,
        d,
        offline_max_docs=max_docs,
    )
  names = tuple(specs)
  seq_len = r.int("data.seq_len", 8)
  candidates = r.names("data.candidates", names)
  if len(candidates) < 2:
    raise ConfigError(
        "data.candidates", "need at least 2 candidates", "list >= 2 sources"
    )
  general = r.get("data.general")
  if general not in candidates:
    raise ConfigError(
        "data.general",
        f"{general!r} is not in data.candidates",
        "name the general-pool candidate",
    )
  normalize = r.choice("data.normalize_weights", types.NORMALIZE)
  pretrain = weights(r, "data.pretrain_mixture", list(names), normalize)
  tok_path = r.str("data.tokenizer.path")
  if tok_path and "://" not in tok_path and not os.path.exists(tok_path):
    raise ConfigError(
        "data.tokenizer.path",
        f"{tok_path!r} does not exist",
        "give an existing SentencePiece .model, tokenizer.json or a"
        " directory holding one, or '' to train one",
    )
  vocab_size = r.int("data.tokenizer.vocab_size", 2)
  if not tok_path and vocab_size < 300:
    # data.tokenizer.train_vocab's floor: 256 byte pieces + specials.
    raise ConfigError(
        "data.tokenizer.vocab_size",
        f"{vocab_size} pieces are too few for a byte-fallback tokenizer",
        "use at least 300 (256 byte pieces + specials + merges)",
    )
  if vocab_size > model.vocab_size:
    raise ConfigError(
        "data.tokenizer.vocab_size",
        f"{vocab_size} exceeds model.vocab_size={model.vocab_size}",
        "make the tokenizer no larger than the model's vocabulary",
    )
  return types.DataSpec(
      sources=specs,
      candidates=candidates,
      general=general,
      beta=r.float("data.beta", 0.0, 1.0),
      seq_len=seq_len,
      pretrain_mixture=pretrain,
      max_epochs=r.float("data.max_epochs", 0.0, open_low=True),
      on_overrun=r.choice("data.on_overrun", ("error", "warn")),
      normalize_weights=normalize,
      shuffle_seed=r.int("data.shuffle_seed", 0),
      worker_count=r.int("data.worker_count", 0),
      tokenizer=types.TokenizerSpec(
          tok_path,
          vocab_size,
          r.int("data.tokenizer.sample_chars"),
          kind=r.choice("data.tokenizer.kind", tokenizer_lib.KINDS),
          sampler=r.choice("data.tokenizer.sampler", text_sample.TEXT_SAMPLERS),
      ),
  )


def train(
    r: config_lib.Reader, num_devices: int | None, mesh: types.MeshSpec
) -> types.TrainSpec:
  gbs = r.int("train.global_batch_size")
  accum = r.int("train.grad_accum_steps")
  if gbs % accum:
    raise ConfigError(
        "train.grad_accum_steps",
        f"does not divide global_batch_size={gbs}",
        "use a divisor of the global batch size",
    )
  if num_devices is not None:
    m = config_lib.resolve_mesh_shape(dict(mesh.axes), num_devices)
    dp = math.prod(
        s for n, s in zip(m.axis_names, m.shape) if n in ("data", "fsdp")
    )
    if (gbs // accum) % dp:
      raise ConfigError(
          "train.global_batch_size",
          f"micro-batch {gbs // accum} (global_batch_size / grad_accum_steps)"
          f" is not divisible by the {dp} data-parallel devices of mesh"
          f" {dict(zip(m.axis_names, m.shape))}",
          f"use a global batch that is a multiple of {dp * accum}",
      )
  return types.TrainSpec(
      global_batch_size=gbs,
      grad_accum_steps=accum,
      log_every_steps=r.int("train.log_every_steps"),
      eval_every_steps=r.int("train.eval_every_steps", 0),
      eval_batches=r.int("train.eval_batches"),
      checkpoint_every_steps=r.int("train.checkpoint_every_steps"),
      keep_last=r.int("train.keep_last"),
      peak_flops=r.float("train.peak_flops", 0.0),
  )


def _optim_fields(r: config_lib.Reader, prefix: str, present) -> None:
  checks = (
      ("peak_lr", lambda f: r.float(f, 0.0, open_low=True)),
      ("min_lr_ratio", lambda f: r.float(f, 0.0, 1.0)),
      ("warmup_steps", lambda f: r.int(f, 0)),
      ("weight_decay", lambda f: r.float(f, 0.0)),
      ("b1", lambda f: r.float(f, 0.0, 1.0, open_high=True)),
      ("b2", lambda f: r.float(f, 0.0, 1.0, open_high=True)),
      ("eps", lambda f: r.float(f, 0.0, open_low=True)),
      ("clip_norm", lambda f: r.float(f, 0.0)),
      ("decay_embeddings", r.bool),
  )
  for name, check in checks:
    if present is None or name in present:
      check(f"{prefix}.{name}")


def optim(r: config_lib.Reader) -> optim_lib.OptimConfig:
  _optim_fields(r, "optim", None)  # every field required
  return lib(
      "optim",
      "use the fields of demix_jax.training.optim.OptimConfig",
      optim_lib.OptimConfig.from_dict,
      r.mapping("optim"),
  )


def component_optim(
    r: config_lib.Reader, base: optim_lib.OptimConfig
) -> optim_lib.OptimConfig:
  """`optim` with the `components.optim` overrides (components only).

  The components' recipe decides how far they drift from the base, which
  is what the linear merge has to bridge (MergeMix keeps experts near the
  base with a constant learning rate); base, references and final runs keep
  `optim`. A missing `components.optim` means no override.
  """
  if r.optional("components.optim") is None:
    return base
  over = r.mapping("components.optim")
  _optim_fields(r, "components.optim", over)
  return lib(
      "components.optim",
      "use the fields of demix_jax.training.optim.OptimConfig",
      optim_lib.OptimConfig.from_dict,
      {**dataclasses.asdict(base), **over},
  )


def budgets(r: config_lib.Reader) -> types.BudgetSpec:
  comp = r.int("components.tokens")
  budgets = r.get("components.budgets")
  if not isinstance(budgets, (list, tuple)) or not budgets:
    raise ConfigError(
        "components.budgets", f"{budgets!r} is not a list", "list >= 1 budget"
    )
  for i, b in enumerate(budgets):
    if (
        isinstance(b, bool)
        or not isinstance(b, (int, float))
        or not 0 < b <= comp
    ):
      raise ConfigError(
          f"components.budgets[{i}]",
          f"{b!r} is not in (0, components.tokens={comp}]",
          "list token budgets within the component run",
      )
  budgets = tuple(int(b) for b in budgets)
  use = r.int("components.use_budget")
  if use not in budgets:
    raise ConfigError(
        "components.use_budget",
        f"{use} is not one of the kept budgets {budgets}",
        "use a value from components.budgets",
    )
  init_from = r.str("base.init_from")
  if init_from and "://" not in init_from:
    marks = ("config.json", "checkpoints")
    if not any(os.path.exists(os.path.join(init_from, m)) for m in marks):
      raise ConfigError(
          "base.init_from",
          f"{init_from!r} is neither a Hugging Face directory (config.json)"
          " nor a demix_jax run directory (checkpoints/)",
          "point it at one, or use '' to train the base from scratch",
      )
  return types.BudgetSpec(
      base_tokens=r.int("base.tokens", 0 if init_from else 1),
      base_init_from=init_from,
      component_tokens=comp,
      component_budgets=budgets,
      use_budget=use,
  )


def check_merge_variants(
    merge: types.MergeSettings, method_names: tuple[str, ...]
) -> None:
  """Each ablation method (validate.merge_methods) with merge.*'s values."""
  for i, m in enumerate(method_names):
    lib(
        f"validate.merge_methods[{i}]",
        "set merge.* to values this method accepts, or drop it",
        dataclasses.replace,
        merge.spec,
        method=m,
    )


def merge(r: config_lib.Reader, seed: int) -> types.MergeSettings:
  given = r.get("merge.method")
  renamed = isinstance(given, str) and merge_methods.RENAMED.get(given)
  if renamed:
    raise ConfigError(
        "merge.method",
        f"{given!r} was renamed to {renamed!r}",
        f"use {renamed!r} (or 'multislerp' for mergekit's Multi-SLERP)",
    )
  method = r.choice("merge.method", merge_methods.METHODS)
  spec = lib(
      "merge",
      "use density in (0, 1] and, for DELLA, 0 < density -/+ epsilon < 1",
      merge_methods.MergeSpec,
      method=method,
      density=r.float("merge.density", 0.0, 1.0, open_low=True),
      gamma=r.float("merge.gamma", 0.0, 1.0, open_high=True),
      epsilon=r.float("merge.epsilon", 0.0, 1.0, open_high=True),
      scale=r.float("merge.lambda_", 0.0, open_low=True),
      seed=seed,
      rescale=r.choice("merge.rescale", merge_tensors.RESCALES),
  )
  return types.MergeSettings(spec, r.int("merge.chunk_size"))


def prepare(r: config_lib.Reader) -> types.PrepareSpec:
  """The optional `prepare` section (defaults where it is absent)."""
  if r.optional("prepare") is None:
    return types.PrepareSpec()
  args = r.get("prepare.beam_args")
  if isinstance(args, str) or not isinstance(args, (list, tuple)):
    raise ConfigError(
        "prepare.beam_args",
        f"expected a tuple of Beam options, got {args!r}",
        'give e.g. ("--runner=DataflowRunner", "--project=my-project")',
    )
  for i, a in enumerate(args):
    if not isinstance(a, str) or not a.startswith("--"):
      raise ConfigError(
          f"prepare.beam_args[{i}]",
          f"{a!r} is not a --flag=value option",
          "write each Beam option as '--name=value'",
      )
  out = r.str("prepare.out_dir")
  if out and "://" not in out and not out.startswith("/"):
    # Every host reads the shards: a relative path means another directory
    # on each machine (and after a `cd`).
    raise ConfigError(
        "prepare.out_dir",
        f"{out!r} is a relative path",
        "give an absolute path or a gs:// URI, or '' for <workdir>/prepare",
    )
  return types.PrepareSpec(
      out_dir=out,
      unit_mb=r.float("prepare.unit_mb", 0.0, open_low=True),
      unit_docs=r.int("prepare.unit_docs"),
      encode_batch=r.int("prepare.encode_batch"),
      beam_args=tuple(args),
  )
