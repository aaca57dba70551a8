r"""Compile check: lower and compile the pipeline's steps without running them.

  python -m demix_jax.aot --config=configs/qwen3_1p7b.py \
      [--mesh=data:8,fsdp:8] [--devices=64] [--hbm_gb=95] \
      [--global_batch=512] [--seq_len=8192] [--steps=train,merge]

For a config and a mesh it builds the train step (the trainer's own
`make_train_step`, optimizer and shardings) and the merge-and-evaluate step
(the engine's compiled chunk function over K stacked components) on
abstract values only (`jax.eval_shape`, `jax.ShapeDtypeStruct`s carrying
`NamedSharding`s), lowers and compiles them, and prints per device the
argument, output, temporary and generated-code bytes from
`compiled.memory_analysis()`, the FLOPs from `cost_analysis()`, and whether
the total fits `--hbm_gb`. Nothing is allocated at model size and no step
runs, so a 1.7B-parameter config checks in minutes on a laptop. The last
line printed is one JSON object with every number.

On a TPU VM it compiles for the real chips (run it on one worker with
`--devices` unset; launch/compile_check.sh does this). Elsewhere it runs
on `--devices` fake CPU devices (XLA_FLAGS
--xla_force_host_platform_device_count, set before JAX starts).

Limits (read before trusting a number):
  * A CPU compile is not a TPU compile. The memory numbers are XLA:CPU's
    buffer assignment: fusion, layouts, rematerialisation and collective
    implementations differ from XLA:TPU, so they are indicative (same order
    of magnitude for arguments and outputs, which are set by the shardings;
    temporaries can differ by a large factor). Only a compile on the target
    TPU (run this there) is authoritative.
  * `cost_analysis()` FLOPs are XLA's count for one device's program on
    that backend; on CPU some backends report none (shown as null).
  * Memory excludes the runtime's own reservations, the input pipeline and
    other programs resident at the same time (e.g. the evaluator's rows
    while training). Keep a margin (the check flags > 90% of HBM).
  * The merge step is compiled with synthetic evaluation rows of the
    config's shape (eval.batch_size rows of the sequence length per batch,
    `--eval_batches` batches); real suites only change the scan length.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Mapping, Sequence

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file, e.g. configs/qwen3_1p7b.py[:runlocal].",
    lock_config=True,
)
_MESH = flags.DEFINE_string(
    "mesh",
    "",
    "Mesh axes as name:size pairs (e.g. data:8,fsdp:8; one size "
    "may be -1); default: config.mesh.axes.",
)
_DEVICES = flags.DEFINE_integer(
    "devices",
    0,
    "Fake CPU devices to compile for when no accelerator is "
    "present (0: the mesh size, or the devices there are).",
)
_HBM_GB = flags.DEFINE_float(
    "hbm_gb",
    0.0,
    "Per-device memory to check against in GiB (v5e 16, v5p "
    "95, v4 32, v6e 32); 0 = no check.",
)
_GLOBAL_BATCH = flags.DEFINE_integer(
    "global_batch", 0, "Override train.global_batch_size (0 = config's)."
)
_SEQ_LEN = flags.DEFINE_integer(
    "seq_len", 0, "Override data.seq_len (0 = config's)."
)
_EVAL_BATCHES = flags.DEFINE_integer(
    "eval_batches", 1, "Row batches per merge-step call (scan length)."
)
_STEPS = flags.DEFINE_list(
    "steps", ["train", "merge"], "Steps to compile: train, merge."
)

# Above this fraction of HBM a config is reported as not fitting: the
# runtime, the input pipeline and fragmentation need the rest.
FIT_FRACTION = 0.9


@dataclasses.dataclass
class CompileReport:
  """Per-device memory and cost of one compiled step.

  Attributes:
    name: "train" or "merge".
    argument_bytes: inputs resident for the call (params, state, batch).
    output_bytes: outputs (aliased donated buffers are subtracted in total).
    temp_bytes: temporaries (activations, gradients in flight, ...).
    code_bytes: generated code.
    alias_bytes: outputs that reuse donated inputs.
    total_bytes: argument + output + temp + code - alias.
    flops: XLA's FLOP count of one device's program (None if unknown).
    mesh: mesh axis sizes.
    backend: the platform compiled for.
  """

  name: str
  argument_bytes: int
  output_bytes: int
  temp_bytes: int
  code_bytes: int
  alias_bytes: int
  total_bytes: int
  flops: float | None
  mesh: dict[str, int]
  backend: str

  def fits(self, hbm_bytes: float) -> bool:
    return self.total_bytes <= FIT_FRACTION * hbm_bytes


def report_from_compiled(name: str, compiled, mesh) -> CompileReport:
  """Reads memory_analysis() and cost_analysis() of a compiled step."""
  import jax  # pylint: disable=g-import-not-at-top

  m = compiled.memory_analysis()
  get = lambda k: int(getattr(m, k, 0) or 0)
  arg, out = get("argument_size_in_bytes"), get("output_size_in_bytes")
  temp, code = get("temp_size_in_bytes"), get("generated_code_size_in_bytes")
  alias = get("alias_size_in_bytes")
  cost = compiled.cost_analysis()
  # Older JAX returned a list with one dict per program.
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  flops = (cost or {}).get("flops")
  return CompileReport(
      name=name,
      argument_bytes=arg,
      output_bytes=out,
      temp_bytes=temp,
      code_bytes=code,
      alias_bytes=alias,
      total_bytes=arg + out + temp + code - alias,
      flops=None if flops is None or flops < 0 else float(flops),
      mesh={k: int(v) for k, v in mesh.shape.items()},
      backend=jax.default_backend(),
  )


def _with_shardings(tree, shardings):
  import jax  # pylint: disable=g-import-not-at-top

  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      tree,
      shardings,
  )


def compile_train_step(model_cfg, optim_cfg, train_cfg, devices=None):
  """Lowers and compiles the trainer's step on abstract state.

  Args:
    model_cfg: models.ModelConfig.
    optim_cfg: optim.OptimConfig.
    train_cfg: trainer.TrainConfig (batch, seq_len, mesh, rules, accum).
    devices: devices of the mesh (default all).

  Returns:
    (CompileReport, the jax Compiled object).
  """
  import jax  # pylint: disable=g-import-not-at-top

  from demix_jax.training import sharding  # pylint: disable=g-import-not-at-top
  from demix_jax.training import trainer  # pylint: disable=g-import-not-at-top

  train_cfg.validate()
  mesh = sharding.create_mesh(train_cfg.mesh_axes, devices)
  rules = sharding.check_rules(train_cfg.rules, mesh)
  sharding.check_batch(
      train_cfg.global_batch_size, mesh, rules, train_cfg.grad_accum_steps
  )
  # The same construction as trainer.train (state shardings, optimizer).
  abstract, abstract_opt, param_sh, opt_sh, tx = trainer.state_layout(
      model_cfg, optim_cfg, train_cfg.num_steps, mesh, rules
  )
  batch_sh = {
      k: sharding.batch_sharding(mesh, rules) for k in trainer.BATCH_KEYS
  }
  step = jax.jit(
      trainer.make_train_step(model_cfg, tx, train_cfg.grad_accum_steps),
      in_shardings=(param_sh, opt_sh, batch_sh),
      out_shardings=(param_sh, opt_sh, sharding.replicated(mesh)),
      donate_argnums=(0, 1),
  )
  shape = (train_cfg.global_batch_size, train_cfg.seq_len)
  batch = {
      k: jax.ShapeDtypeStruct(shape, jax.numpy.int32, sharding=s)
      for k, s in batch_sh.items()
  }
  with sharding.activation_rules(mesh, rules):
    compiled = step.lower(
        _with_shardings(abstract, param_sh),
        _with_shardings(abstract_opt, opt_sh),
        batch,
    ).compile()
  return report_from_compiled("train", compiled, mesh), compiled


def compile_merge_step(
    model_cfg,
    n_components: int,
    mesh_axes,
    rules,
    *,
    seq_len: int,
    eval_batch_size: int,
    eval_batches: int = 1,
    chunk_size: int = 8,
    spec=None,
    with_base: bool = True,
    devices=None,
):
  """Lowers and compiles the engine's merge+evaluate chunk function.

  The evaluator is built over a store whose stacked params are abstract
  (`ShapeDtypeStruct`s with the store's shardings) and over synthetic rows
  of the configured shape, then its compiled chunk function is lowered for
  one chunk of mixtures.

  Args:
    model_cfg: the components' models.ModelConfig.
    n_components: K (the number of candidates).
    mesh_axes: mesh axis -> size.
    rules: logical axis rules (the `mixtures` rule shards the chunk).
    seq_len: row length.
    eval_batch_size: rows per forward (config.eval.batch_size).
    eval_batches: row batches per call (the scan length).
    chunk_size: mixtures per call (config.merge.chunk_size).
    spec: methods.MergeSpec (default linear).
    with_base: also hold the base model (the pipeline always does).
    devices: devices of the mesh (default all).

  Returns:
    (CompileReport, the jax Compiled object).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from demix_jax import models  # pylint: disable=g-import-not-at-top
  from demix_jax.evals import rows as rows_lib  # pylint: disable=g-import-not-at-top
  from demix_jax.merging import engine as engine_lib  # pylint: disable=g-import-not-at-top
  from demix_jax.merging import methods  # pylint: disable=g-import-not-at-top
  from demix_jax.merging import store as store_lib  # pylint: disable=g-import-not-at-top
  from demix_jax.training import sharding  # pylint: disable=g-import-not-at-top

  mesh = sharding.create_mesh(mesh_axes, devices)
  rules = sharding.check_rules(rules, mesh)
  axes = models.param_logical_axes(model_cfg)
  abstract = jax.eval_shape(
      lambda: models.init_params(model_cfg, jax.random.key(0))
  )
  # Stacked exactly as ComponentStore.from_params does, on shapes only.
  # pylint: disable-next=protected-access
  stacked = jax.eval_shape(store_lib._stack, [abstract] * n_components)
  stacked_sh = sharding.param_shardings(
      stacked, store_lib.stacked_logical_axes(axes), mesh, rules
  )
  base = None
  if with_base:
    base = _with_shardings(
        abstract, sharding.param_shardings(abstract, axes, mesh, rules)
    )
  store = store_lib.ComponentStore(
      _with_shardings(stacked, stacked_sh),
      [f"c{i}" for i in range(n_components)],
      base,
  )
  n = eval_batch_size * eval_batches
  tokens = np.ones((n, seq_len), np.int32)
  suite = rows_lib.EvalSuite.build(
      [rows_lib.heldout_rows("aot", tokens, n_bytes=np.ones(n))],
      eval_batch_size,
  )
  ev = engine_lib.MixtureEvaluator(
      model_cfg,
      store,
      suite,
      spec=spec or methods.MergeSpec(),
      chunk_size=chunk_size,
      mesh=mesh,
      rules=rules,
  )
  # pylint: disable=protected-access
  alphas = jax.ShapeDtypeStruct(
      (ev.chunk, n_components), np.float32, sharding=ev._alpha_sharding
  )
  compiled = ev._chunk_fn.lower(
      alphas, store.stacked, store.base, ev._batches
  ).compile()
  # pylint: enable=protected-access
  return report_from_compiled("merge", compiled, mesh), compiled


def parse_mesh(text: str) -> dict[str, int]:
  """'data:8,fsdp:8' -> {'data': 8, 'fsdp': 8} (order kept)."""
  out = {}
  for part in filter(None, (p.strip() for p in text.split(","))):
    name, sep, size = part.partition(":")
    if not sep or not name:
      raise ValueError(f"--mesh entry {part!r} must be name:size")
    out[name] = int(size)
  return out


def _fmt_bytes(n: int) -> str:
  return f"{n / 2**30:9.3f} GiB"


def format_reports(
    reports: Sequence[CompileReport], hbm_gb: float = 0.0
) -> str:
  """A human-readable table of the reports."""
  lines = []
  for r in reports:
    lines.append(f"[{r.name}] backend={r.backend} mesh={r.mesh}")
    for label, v in (
        ("arguments", r.argument_bytes),
        ("outputs", r.output_bytes),
        ("temporaries", r.temp_bytes),
        ("generated code", r.code_bytes),
        ("aliased (donated)", -r.alias_bytes),
        ("total per device", r.total_bytes),
    ):
      lines.append(f"  {label:<18s}{_fmt_bytes(v)}")
    lines.append(
        "  flops per device  "
        + (f"{r.flops:.3e}" if r.flops is not None else "unknown")
    )
    if hbm_gb > 0:
      verdict = "fits" if r.fits(hbm_gb * 2**30) else "DOES NOT FIT"
      lines.append(
          f"  {verdict} in {hbm_gb:g} GiB HBM (limit " f"{FIT_FRACTION:.0%})"
      )
  return "\n".join(lines)


def run_checks(
    config,
    *,
    mesh_axes: Mapping[str, int] | None = None,
    global_batch: int = 0,
    seq_len: int = 0,
    eval_batches: int = 1,
    steps: Sequence[str] = ("train", "merge"),
) -> list[CompileReport]:
  """Compiles the requested steps of a pipeline config.

  Args:
    config: the pipeline ConfigDict (configs/*.py).
    mesh_axes: mesh override (default config.mesh.axes).
    global_batch: train.global_batch_size override (0 = config's).
    seq_len: data.seq_len override (0 = config's).
    eval_batches: row batches per merge call.
    steps: any of "train", "merge".

  Returns:
    One CompileReport per step.
  """
  from demix_jax import config_lib  # pylint: disable=g-import-not-at-top
  from demix_jax import models  # pylint: disable=g-import-not-at-top
  from demix_jax.merging import methods  # pylint: disable=g-import-not-at-top
  from demix_jax.training import optim  # pylint: disable=g-import-not-at-top
  from demix_jax.training import trainer  # pylint: disable=g-import-not-at-top

  unknown = sorted(set(steps) - {"train", "merge"})
  if unknown:
    raise ValueError(f"--steps {unknown} unknown; use train, merge")
  c = config
  model_cfg = models.ModelConfig.from_dict(config_lib.to_dict(c.model))
  axes = dict(mesh_axes or config_lib.to_dict(c.mesh.axes))
  rules = tuple(
      (k, tuple(v) if isinstance(v, list) else v) for k, v in c.mesh.rules
  )
  t = int(seq_len or c.data.seq_len)
  out = []
  if "train" in steps:
    train_cfg = trainer.TrainConfig(
        global_batch_size=int(global_batch or c.train.global_batch_size),
        seq_len=t,
        total_tokens=int(c.base.tokens),
        grad_accum_steps=int(c.train.grad_accum_steps),
        mesh_axes=axes,
        rules=rules,
    )
    optim_cfg = optim.OptimConfig.from_dict(config_lib.to_dict(c.optim))
    out.append(compile_train_step(model_cfg, optim_cfg, train_cfg)[0])
  if "merge" in steps:
    spec = methods.MergeSpec(
        method=c.merge.method,
        density=float(c.merge.density),
        gamma=float(c.merge.gamma),
        seed=int(c.seed),
    )
    out.append(
        compile_merge_step(
            model_cfg,
            len(c.data.candidates),
            axes,
            rules,
            seq_len=t,
            eval_batch_size=int(c.eval.batch_size),
            eval_batches=eval_batches,
            chunk_size=int(c.merge.chunk_size),
            spec=spec,
        )[0]
    )
  return out


def force_cpu_devices(n: int) -> None:
  """Asks XLA:CPU for n fake devices (before JAX initialises a backend)."""
  flag = f"--xla_force_host_platform_device_count={n}"
  old = os.environ.get("XLA_FLAGS", "")
  kept = " ".join(
      f
      for f in old.split()
      if not f.startswith("--xla_force_host_platform_device_count")
  )
  os.environ["XLA_FLAGS"] = f"{kept} {flag}".strip()


def _mesh_size(axes: Mapping[str, int]) -> int:
  sizes = [int(v) for v in axes.values()]
  return 0 if -1 in sizes else int(__import__("math").prod(sizes))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  mesh_axes = parse_mesh(_MESH.value) if _MESH.value else None
  n = _DEVICES.value or _mesh_size(mesh_axes or dict(config.mesh.axes))
  if n:
    # Only affects the CPU backend; must precede JAX's backend start-up.
    force_cpu_devices(n)
  import jax  # pylint: disable=g-import-not-at-top

  if n and jax.default_backend() == "cpu" and jax.device_count() != n:
    print(
        f"error: asked for {n} CPU devices, JAX started with "
        f"{jax.device_count()} (was a backend initialised earlier?)",
        file=sys.stderr,
    )
    sys.exit(2)
  reports = run_checks(
      config,
      mesh_axes=mesh_axes,
      global_batch=_GLOBAL_BATCH.value,
      seq_len=_SEQ_LEN.value,
      eval_batches=_EVAL_BATCHES.value,
      steps=_STEPS.value,
  )
  print(format_reports(reports, _HBM_GB.value))
  hbm = _HBM_GB.value * 2**30
  summary = {
      r.name: dict(
          dataclasses.asdict(r), **({"fits": r.fits(hbm)} if hbm else {})
      )
      for r in reports
  }
  summary["hbm_gb"] = _HBM_GB.value or None
  summary["cpu_indicative_only"] = jax.default_backend() == "cpu"
  print(json.dumps(summary, sort_keys=True))
  if hbm and not all(r.fits(hbm) for r in reports):
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
