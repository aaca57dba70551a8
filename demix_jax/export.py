r"""Export a demix_jax run (or a merged proxy) as a Hugging Face Qwen3 model.

  # one run: the base, a component or a final run (latest checkpoint)
  python -m demix_jax.export --run_dir=workdir/demo/base/run --out=hf/base

  # a merged proxy: the linear merge sum_k alpha_k theta_k of components
  python -m demix_jax.export \
    --components=general=workdir/demo/components/general,code=workdir/demo/components/code \
    --alpha=0.3,0.7 --out=hf/proxy

The output directory loads with `transformers.AutoModelForCausalLM
.from_pretrained(out)` and `AutoTokenizer.from_pretrained(out)`, and with
other tools reading Qwen3 checkpoints (see `demix_jax.interop.hf`).

Flags:
  --run_dir: a run directory (holding `checkpoints/`). With --components it
    is the base, used by merge methods that need one (--method).
  --tokens: the token budget of the checkpoint to read (default: latest),
    for --run_dir and every component.
  --components: `name=dir,...` component run directories, in alpha's order.
  --alpha: the mixture: `w1,w2,...` (component order) or `name=w,...`.
    Negative weights or a zero sum are errors. The methods that normalise
    (linear, ties, della, slerp, multislerp, multislerp_base, karcher)
    divide the weights by their sum; task_arithmetic, dare_linear,
    dare_ties, breadcrumbs, breadcrumbs_ties and della_linear use them as
    given (theta = b + lambda sum_k w_k tau_k), as mergekit does; --normalize
    overrides that.
  --method: merge method (`demix_jax.merging.methods.METHODS`; default
    linear, the DeMix proxy); merged per tensor and per layer exactly as the
    search engine does (`ComponentStore.merge`).
  --density, --gamma, --epsilon, --lambda, --seed, --rescale, --normalize:
    the merge hyperparameters (`merging.methods.MergeSpec`: density,
    gamma, epsilon, scale, seed, rescale, normalize; mergekit's names).
    Unset: MergeSpec's defaults (density 0.9, gamma 0.01, epsilon 0.01,
    lambda 1, seed 0, rescale l1, normalize as the method).
  --tokenizer: the tokenizer the run used (a SentencePiece `.model`, a
    byte-level BPE `tokenizer.json`, or a directory holding one). Default:
    found from the run's workdir (`config.json`'s data.tokenizer.path, else
    `data/tokenizer.model` or `data/tokenizer.json`) and checked against the checkpoint's tokenizer
    fingerprint. `none` exports weights and configs only.
  --dtype: storage dtype (float32, bfloat16, float16; default: the
    checkpoint's).
  --max_shard_gb: shard the safetensors past this size (default 5).
  --out: the output directory (local or gs://).

The model config comes from the checkpoint's metadata (`model`), else from
the workdir's `config.json`. A merged proxy records its method, every
hyperparameter and the weights as given (`weights`; `alpha`, the
normalised mixture, only for methods that normalise) in the safetensors
metadata (`demix_jax`) and in the printed summary. The tokenizer config
pads on the left, as batched generation needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging as logging_std
import os
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
from etils import epath
import numpy as np

from demix_jax.data import tokenizer as tokenizer_lib
from demix_jax.models import transformer

FLAGS = flags.FLAGS


class ExportError(ValueError):
  """Bad export arguments or an unreadable run."""


def parse_components(spec: str) -> dict[str, str]:
  """`a=dir1,b=dir2` -> {"a": "dir1", "b": "dir2"} (order kept)."""
  out: dict[str, str] = {}
  for part in [p for p in spec.split(",") if p.strip()]:
    if "=" not in part:
      raise ExportError(
          f"--components entry {part!r} is not name=dir (e.g. "
          "--components=code=workdir/components/code,...)"
      )
    name, d = part.split("=", 1)
    name = name.strip()
    if name in out:
      raise ExportError(f"--components names {name!r} twice")
    out[name] = d.strip()
  if not out:
    raise ExportError("--components is empty")
  return out


def parse_alpha(spec: str, names: Sequence[str]) -> np.ndarray:
  """`0.3,0.7` or `code=0.7,general=0.3` -> weights in `names` order.

  Raises:
    ExportError: wrong count, unknown or missing names, negative weights,
      non-finite values or a zero sum.
  """
  parts = [p.strip() for p in spec.split(",") if p.strip()]
  try:
    if parts and all("=" in p for p in parts):
      given = {}
      for p in parts:
        k, v = p.split("=", 1)
        given[k.strip()] = float(v)
      unknown = sorted(set(given) - set(names))
      missing = [n for n in names if n not in given]
      if unknown or missing:
        raise ExportError(
            f"--alpha names {unknown or ''} unknown, {missing or ''} missing; "
            f"components are {list(names)}"
        )
      w = np.array([given[n] for n in names], np.float64)
    else:
      w = np.array([float(p) for p in parts], np.float64)
  except ValueError as e:
    if isinstance(e, ExportError):
      raise
    raise ExportError(f"--alpha={spec!r} is not a list of numbers") from e
  if w.shape != (len(names),):
    raise ExportError(
        f"--alpha has {w.size} weights for {len(names)} components "
        f"{list(names)}"
    )
  if not np.all(np.isfinite(w)) or np.any(w < 0):
    raise ExportError(f"--alpha weights must be finite and >= 0, got {spec}")
  if w.sum() <= 0:
    raise ExportError(f"--alpha weights sum to zero ({spec})")
  return w


def _workdir_candidates(run_dir: str) -> list[epath.Path]:
  p = epath.Path(run_dir)
  if "://" not in os.fspath(p):
    p = epath.Path(os.path.abspath(os.fspath(p)))
  out = [p]
  for _ in range(4):
    p = p.parent
    out.append(p)
  return out


def find_tokenizer(run_dir: str, fingerprint: str | None) -> str:
  """The tokenizer file a run used, found from its workdir.

  Looks in the run directory and up to four parents for a `config.json`
  naming `data.tokenizer.path` (a file, or a directory holding one), then for
  `data/tokenizer.model` and `data/tokenizer.json`; a candidate
  is taken only if its sha256 equals the checkpoint's fingerprint (when the
  checkpoint records one).

  Raises:
    ExportError: nothing found, or only tokenizers with other fingerprints.
  """
  seen = []
  for d in _workdir_candidates(run_dir):
    cands = []
    cfg = d / "config.json"
    if cfg.exists():
      try:
        path = json.loads(cfg.read_text())["data"]["tokenizer"]["path"]
        if path:
          cands.append(epath.Path(path))
      except (KeyError, TypeError, json.JSONDecodeError):
        pass
    cands += [d / "data" / "tokenizer.model", d / "data" / "tokenizer.json"]
    for c in cands:
      if not c.exists():
        continue
      if c.is_dir():
        try:
          c = epath.Path(tokenizer_lib.resolve_path(os.fspath(c))[1])
        except (FileNotFoundError, ValueError):
          continue
      fp = hashlib.sha256(c.read_bytes()).hexdigest()
      if not fingerprint or fp == fingerprint:
        return os.fspath(c)
      seen.append(f"{c} ({fp[:12]}...)")
  raise ExportError(
      f"found no tokenizer for {run_dir}"
      + (f" with fingerprint {fingerprint[:12]}..." if fingerprint else "")
      + (f"; other tokenizers seen: {seen}" if seen else "")
      + ". Fix: pass --tokenizer=path/to/tokenizer.model (or --tokenizer=none "
      "for weights only)"
  )


def model_config_of(
    run_dir: str, meta: dict[str, Any]
) -> transformer.ModelConfig:
  """The run's ModelConfig: checkpoint metadata, else the workdir config."""
  if meta.get("model"):
    return transformer.ModelConfig.from_dict(meta["model"])
  for d in _workdir_candidates(run_dir):
    cfg = d / "config.json"
    if cfg.exists():
      try:
        return transformer.ModelConfig.from_dict(
            json.loads(cfg.read_text())["model"]
        )
      except (KeyError, TypeError, json.JSONDecodeError):
        continue
  raise ExportError(
      f"{run_dir}: the checkpoint metadata records no model config and no "
      "workdir config.json was found above it"
  )


def export(
    out: str,
    run_dir: str | None = None,
    components: dict[str, str] | None = None,
    alpha: str | Sequence[float] | None = None,
    *,
    method: str = "linear",
    hparams: dict[str, Any] | None = None,
    tokens: int | None = None,
    tokenizer: str | None = None,
    dtype: str | None = None,
    max_shard_bytes: int | None = 5 * 2**30,
) -> dict[str, Any]:
  """Exports one run or a merged proxy (the CLI's work; see module doc).

  Args:
    out: output directory.
    run_dir: the run (or, with components, the base; optional then).
    components: {name: run dir}, in alpha's order.
    alpha: the mixture (a string as for --alpha, or weights in order).
    method: merge method name.
    hparams: `MergeSpec` hyperparameters (density, gamma, epsilon, scale,
      seed, rescale, normalize); unset ones take MergeSpec's defaults.
    tokens: token budget of the checkpoints (None = latest).
    tokenizer: a `.model`, a `tokenizer.json` or a directory holding one;
      None to find it, "none" to skip it.
    dtype: storage dtype name (None = the checkpoint's).
    max_shard_bytes: safetensors shard size.

  Returns:
    A summary: files, model config, source, method, hyperparameters,
    weights, tokenizer.

  Raises:
    ExportError: bad arguments (before any checkpoint is read).
  """
  # Deferred: flag parsing and --help stay fast.
  from demix_jax.interop import hf  # pylint: disable=g-import-not-at-top
  from demix_jax.merging import store as store_lib  # pylint: disable=g-import-not-at-top
  from demix_jax.training import checkpointing  # pylint: disable=g-import-not-at-top

  if not run_dir and not components:
    raise ExportError("give --run_dir, or --components with --alpha")
  if components and alpha is None:
    raise ExportError("--components needs --alpha")
  if alpha is not None and not components:
    raise ExportError("--alpha needs --components (the runs to merge)")
  if hparams and not components:
    raise ExportError(
        f"merge hyperparameters {sorted(hparams)} need --components"
    )
  summary: dict[str, Any] = {"out": out}
  if components:
    names = list(components)
    w = (
        parse_alpha(alpha, names)
        if isinstance(alpha, str)
        else parse_alpha(",".join(str(float(a)) for a in alpha or ()), names)
    )
    spec = merge_spec(method, hparams or {})
    metas = {
        n: checkpointing.read_metadata(d, tokens) for n, d in components.items()
    }
    first = names[0]
    cfg = model_config_of(components[first], metas[first])
    for n in names[1:]:
      other = model_config_of(components[n], metas[n])
      if other != cfg:
        raise ExportError(
            f"components {first!r} and {n!r} have different model configs"
        )
    base_dir = run_dir if (run_dir and spec.needs_base) else None
    if spec.needs_base and not base_dir:
      raise ExportError(f"--method={method} needs the base: pass --run_dir")
    store = store_lib.ComponentStore.from_checkpoints(
        components, base_dir=base_dir, tokens=tokens, base_tokens=None
    )
    params = store.merge(np.asarray(w, np.float32), spec)
    fingerprint = metas[first].get("tokenizer_fingerprint") or None
    locate = components[first]
    summary.update(
        source="merge",
        components=dict(components),
        method=method,
        merge=dataclasses.asdict(spec),
        normalizes_weights=spec.normalizes_weights,
        weights=dict(zip(names, w.tolist())),
    )
    if spec.normalizes_weights:
      summary["alpha"] = dict(zip(names, (w / w.sum()).tolist()))
  else:
    run_dir = str(run_dir)  # given: checked above
    meta = checkpointing.read_metadata(run_dir, tokens)
    cfg = model_config_of(run_dir, meta)
    params = checkpointing.load_params(run_dir, tokens)
    fingerprint = meta.get("tokenizer_fingerprint") or None
    locate = run_dir
    summary.update(source="run", run_dir=run_dir, step=meta.get("step"))
  if tokenizer is None:
    tokenizer = find_tokenizer(locate, fingerprint)
  elif tokenizer.lower() == "none":
    tokenizer = None
    logging.warning("exporting without a tokenizer (--tokenizer=none)")
  else:
    tokenizer = tokenizer_lib.resolve_path(tokenizer)[1]
    fp = hashlib.sha256(epath.Path(tokenizer).read_bytes()).hexdigest()
    if fingerprint and fp != fingerprint:
      raise ExportError(
          f"--tokenizer={tokenizer} (fingerprint {fp[:12]}...) is not the "
          f"tokenizer the checkpoint was trained with ({fingerprint[:12]}...)"
      )
  files = hf.export_params(
      params,
      cfg,
      out,
      tokenizer=tokenizer,
      dtype=dtype,
      max_shard_bytes=max_shard_bytes,
      metadata={
          "demix_jax": json.dumps(
              {k: v for k, v in summary.items() if k != "out"}
          )
      },
  )
  summary.update(files=files, model=cfg.to_dict(), tokenizer=tokenizer)
  return summary


HPARAM_FLAGS = {  # flag -> MergeSpec field
    "density": "density",
    "gamma": "gamma",
    "epsilon": "epsilon",
    "lambda": "scale",
    "seed": "seed",
    "rescale": "rescale",
    "normalize": "normalize",
}


def merge_spec(method: str, hparams: dict[str, Any]):
  """The MergeSpec of --method and the hyperparameter flags.

  Raises:
    ExportError: an unknown method or field, or a value MergeSpec refuses;
      the message names the flag.
  """
  from demix_jax.merging import methods  # pylint: disable=g-import-not-at-top

  fields = {v: k for k, v in HPARAM_FLAGS.items()}
  unknown = sorted(set(hparams) - set(fields))
  if unknown:
    raise ExportError(f"unknown merge hyperparameters {unknown}")
  if method not in methods.METHODS:
    hint = methods.RENAMED.get(method)
    raise ExportError(
        f"--method={method!r} "
        + (f"was renamed: use --method={hint}" if hint else "is unknown")
        + f"; methods: {', '.join(methods.METHODS)}"
    )
  try:
    return methods.MergeSpec(method=method, **hparams)
  except ValueError as e:
    flags_named = ", ".join(f"--{fields[k]}" for k in sorted(hparams))
    raise ExportError(
        f"{e} (from --method={method}"
        + (f" and {flags_named}" if flags_named else "")
        + ")"
    ) from e


class _OrbaxReadOnlyNoise(logging_std.Filter):
  """Drops orbax's warnings that a checkpoint opened for reading is read
  only (export only reads checkpoints; they say nothing wrong)."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    msg = record.getMessage()
    return not (
        "orbax" in record.pathname
        and ("read only" in msg or "read_only=True" in msg)
    )


def define_flags() -> None:
  flags.DEFINE_string("run_dir", None, "run directory (or the base)")
  flags.DEFINE_integer("tokens", None, "token budget of the checkpoints")
  flags.DEFINE_string("components", None, "name=dir,... components to merge")
  flags.DEFINE_string("alpha", None, "mixture weights (w,... or name=w,...)")
  flags.DEFINE_string("method", "linear", "merge method")
  flags.DEFINE_float("density", None, "TIES/DARE/Breadcrumbs/DELLA density")
  flags.DEFINE_float("gamma", None, "Breadcrumbs: outlier fraction removed")
  flags.DEFINE_float("epsilon", None, "DELLA: keep probability spread")
  flags.DEFINE_float("lambda", None, "scale of the merged task vector")
  flags.DEFINE_integer("seed", None, "DARE/DELLA draw seed")
  flags.DEFINE_enum(
      "rescale", None, ["l1", "inverse_density", "none"], "DARE/DELLA rescale"
  )
  flags.DEFINE_enum(
      "normalize",
      None,
      ["true", "false"],
      "divide the weights by their sum (default: as the method)",
  )
  flags.DEFINE_string(
      "tokenizer",
      None,
      "SentencePiece .model, tokenizer.json, a directory holding one, or none",
  )
  flags.DEFINE_enum(
      "dtype", None, ["float32", "bfloat16", "float16"], "storage dtype"
  )
  flags.DEFINE_float("max_shard_gb", 5.0, "safetensors shard size (GiB)")
  flags.DEFINE_string("out", None, "output directory (required)")


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  logging.get_absl_logger().addFilter(_OrbaxReadOnlyNoise())
  if not FLAGS.out:
    print(
        "error: --out is required: the directory to write the Hugging Face "
        "model to (e.g. --out=hf/proxy)"
    )
    return 2
  hparams = {
      field: FLAGS[flag].value
      for flag, field in HPARAM_FLAGS.items()
      if FLAGS[flag].value is not None
  }
  if "normalize" in hparams:
    hparams["normalize"] = hparams["normalize"] == "true"
  try:
    summary = export(
        FLAGS.out,
        FLAGS.run_dir,
        parse_components(FLAGS.components) if FLAGS.components else None,
        FLAGS.alpha,
        method=FLAGS.method,
        hparams=hparams,
        tokens=FLAGS.tokens,
        tokenizer=FLAGS.tokenizer,
        dtype=FLAGS.dtype,
        max_shard_bytes=int(FLAGS.max_shard_gb * 2**30),
    )
  except (ExportError, ValueError, FileNotFoundError) as e:
    print(f"error: {e}")
    return 2
  print(json.dumps(summary, indent=1))
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
