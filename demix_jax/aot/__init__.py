r"""Compile check: lower and compile the pipeline's steps without running them.

This package is the library (importable without defining any flag or
starting a JAX backend); `python -m demix_jax.aot` is its command line
(`__main__.py`):

  python -m demix_jax.aot --config=configs/qwen3_1p7b.py --topology=v5p-64
  python -m demix_jax.aot --config=configs/demo.py:runlocal --devices=4 \
      [--mesh=data:4] [--hbm_gb=16] [--global_batch=..] [--seq_len=..] \
      [--steps=train,merge,generate] [--mfu=0.4]

For a config and a mesh it lowers the train step through the trainer's own
public lowering (`training.step.lower_train_step`: the same step,
optimizer, shardings and donation as training) and the merge-and-evaluate
step through the engine's (`MixtureEvaluator.lower_chunk` over an abstract
`ComponentStore.abstract`), on abstract values only (`jax.eval_shape`,
`jax.ShapeDtypeStruct`s carrying `NamedSharding`s), so the same calls serve
the devices of a compile-only topology. `generate.py` does the same for the
merged proxies' decoding (the generator's merge, prefill and decode
programs at the config's `eval.generation` settings, bounded also by HBM
bandwidth), and `plan.py` turns every step's bound into chip-hours per
stage of the experiment (printed by the command). It compiles them and prints per
device the argument, output, temporary and generated-code bytes from
`compiled.memory_analysis()`, the FLOPs from `cost_analysis()`, whether the
total fits the chip's HBM, and the step-time and MFU bounds those FLOPs
imply at the chip's peak. The last line printed is one JSON object with
every number.

Where it compiles:
  * `--topology=v5p-64` (Cloud TPU accelerator types, `topology.py`):
    XLA:TPU for that slice's compile-only devices, on any machine with
    libtpu (pip install -r requirements-tpu.txt); no TPU needed. These are
    the compiler's real figures for those chips. The device and host
    counts come from the topology; the default backend is never started
    (on worker 0 of a multi-host slice it would wait for every host).
  * no `--topology`: the attached devices (`--platform` picks them; see
    `cli.py` for the default), or `--devices` fake CPU devices
    (XLA_FLAGS --xla_force_host_platform_device_count, set before JAX
    starts) where there is no accelerator: the fallback without libtpu.
    XLA:CPU's buffer assignment differs from XLA:TPU's (fusion, layouts,
    rematerialisation), so those figures are indicative only
    (`cpu_indicative_only` in the JSON line).

Limits (read before trusting a number):
  * `cost_analysis()` counts the body of a scanned layer loop once and a
    Pallas kernel (splash attention) not at all, so the step-time bound is
    taken from max(compiled, analytic model FLOPs).
  * Memory excludes the runtime's own reservations, the input pipeline and
    other programs resident at the same time (e.g. the evaluator's rows
    while training). Keep a margin (the check flags > 90% of HBM).
  * The merge step is compiled with synthetic evaluation rows of the
    config's shape (eval.batch_size rows of the sequence length per batch,
    `--eval_batches` batches); real suites only change the scan length.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from demix_jax import models
from demix_jax.evals import rows as rows_lib
from demix_jax.merging import engine as engine_lib
from demix_jax.merging import methods
from demix_jax.merging import store as store_lib
from demix_jax.models import attention as attention_lib
from demix_jax.training import config as train_config
from demix_jax.training import optim
from demix_jax.training import sharding
from demix_jax.training import step as step_lib

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
    mixtures: mixtures one merge call scores (the evaluator's chunk, the
      config's rounded up to a multiple of the mixture shards), or one
      generation call merges and decodes; None for the train step.
    resident_bytes: buffers of other programs live during this one (the
      component store while generating); counted by `fits`, not in total.
    read_bytes: bytes per device one decode step reads from HBM (weights
      and KV cache); None except for decode.
    tokens_per_call: tokens one decode call generates per row (None
      except for decode).
    error: XLA's refusal when the program did not compile for lack of
      memory (then total_bytes is the memory it asked for).
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
  mixtures: int | None = None
  resident_bytes: int = 0
  read_bytes: int | None = None
  tokens_per_call: int | None = None
  error: str | None = None

  def fits(self, hbm_bytes: float) -> bool:
    return self.total_bytes + self.resident_bytes <= FIT_FRACTION * hbm_bytes


def report_from_compiled(name: str, compiled, mesh) -> CompileReport:
  """Reads memory_analysis() and cost_analysis() of a compiled step."""
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
      backend=mesh.devices.flat[0].platform,
  )


def compile_train_step(
    model_cfg: models.ModelConfig,
    optim_cfg: optim.OptimConfig,
    train_cfg: train_config.TrainConfig,
    devices: Sequence[Any] | None = None,
):
  """Lowers and compiles the trainer's step on abstract state.

  Args:
    model_cfg: the model.
    optim_cfg: the optimizer.
    train_cfg: batch, seq_len, mesh, rules, accumulation.
    devices: devices of the mesh (default all).

  Returns:
    (CompileReport, the jax Compiled object).
  """
  layout = step_lib.train_layout(model_cfg, optim_cfg, train_cfg, devices)
  compiled = step_lib.lower_train_step(model_cfg, train_cfg, layout).compile()
  return report_from_compiled("train", compiled, layout.mesh), compiled


def compile_merge_step(
    model_cfg: models.ModelConfig,
    n_components: int,
    mesh_axes: Mapping[str, int],
    rules,
    *,
    seq_len: int,
    eval_batch_size: int,
    eval_batches: int = 1,
    chunk_size: int = 8,
    spec: methods.MergeSpec | None = None,
    with_base: bool = True,
    devices: Sequence[Any] | None = None,
):
  """Lowers and compiles the engine's merge+evaluate chunk function.

  The evaluator is built over an abstract store (`ComponentStore.abstract`:
  shapes with the store's shardings) and synthetic rows of the configured
  shape (real suites only change the scan length), then lowered for one
  chunk of mixtures with `MixtureEvaluator.lower_chunk`.

  Args:
    model_cfg: the components' model config.
    n_components: K (the number of candidates).
    mesh_axes: mesh axis -> size.
    rules: logical axis rules (the `mixtures` rule shards the chunk).
    seq_len: row length.
    eval_batch_size: rows per forward (config.eval.batch_size).
    eval_batches: row batches per call (the scan length).
    chunk_size: mixtures per call (config.merge.chunk_size).
    spec: merge method (default linear).
    with_base: also hold the base model (the pipeline always does).
    devices: devices of the mesh (default all).

  Returns:
    (CompileReport, the jax Compiled object).
  """
  mesh = sharding.create_mesh(mesh_axes, devices)
  rules = sharding.check_rules(rules, mesh)
  abstract = jax.eval_shape(
      lambda: models.init_params(model_cfg, jax.random.key(0))
  )
  store = store_lib.ComponentStore.abstract(
      abstract,
      [f"c{i}" for i in range(n_components)],
      with_base=with_base,
      mesh=mesh,
      rules=rules,
      logical_axes=models.param_logical_axes(model_cfg),
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
  # The evaluator traces its chunk with no mesh set, so splash (a Pallas
  # kernel XLA cannot partition) is told the mesh and the mixture axes here:
  # the vmapped mixtures fold into the kernel's rows, each device scoring
  # its own mixture (`attention.shard_rows`). The pipeline's evaluator needs
  # the same context around its chunk trace to run splash on a pod.
  with attention_lib.shard_rows(mesh, _rule_axes(rules, "mixtures")):
    compiled = ev.lower_chunk().compile()
  report = report_from_compiled("merge", compiled, mesh)
  report.mixtures = ev.chunk
  return report, compiled


def _rule_axes(rules, name: str):
  """The mesh axes the logical `name` maps to under `rules` (or None)."""
  for k, v in rules or ():
    if k == name:
      return v
  return None


def step_time_bound(flops: float | None, peak_flops: float) -> float | None:
  """Seconds one step needs at least if the chip ran at its peak FLOP/s
  (a bound from the compiled FLOPs, not a measurement)."""
  if not flops or not peak_flops:
    return None
  return flops / peak_flops


def summary(
    reports: Sequence[CompileReport],
    *,
    topology: str,
    config: str,
    hbm_bytes: int,
    peak_flops: float,
    model_flops: Mapping[str, float] | None = None,
    hbm_bandwidth: float = 0.0,
) -> dict[str, Any]:
  """The check's last line: {"topology", "config", "steps": {name: {...}}}.

  Per step: fits, bytes_per_device (total), hbm_bytes, flops (compiled, per
  device, as XLA counts them: a scanned loop body once), the byte
  breakdown, model_flops (the step's useful FLOPs per device where known: 6 N
  tokens plus attention for training), step_time_bound_s = max(flops,
  model_flops) / peak and mfu_bound = model_flops / max(flops, model_flops):
  bounds if the chip ran at peak, not measurements.
  The merge step also records `mixtures` (the chunk one call scores).
  Steps with buffers of other programs resident (generation: the store)
  record `resident_bytes`, counted by `fits`. The decode step records
  `read_bytes` (per device per token step) and `hbm_bound_s` = its
  `tokens_per_call` x read_bytes / hbm_bandwidth (bytes/s), and its
  step_time_bound_s is the larger of the FLOP and the HBM bound.
  """
  steps = {}
  for r in reports:
    useful = (model_flops or {}).get(r.name)
    # XLA's cost_analysis counts the body of a scanned layer loop once and
    # leaves out Pallas kernels, so it undercounts a scanned model by about
    # n_layers. The work a step must do is at least the analytic model
    # FLOPs: bound by the larger of the two, so MFU bounds stay <= 1.
    work = max(r.flops or 0.0, useful or 0.0) or None
    bound = step_time_bound(work, peak_flops)
    hbm_bound = None
    if r.read_bytes is not None and hbm_bandwidth > 0:
      hbm_bound = (r.tokens_per_call or 1) * r.read_bytes / hbm_bandwidth
      bound = max(bound or 0.0, hbm_bound)
    steps[r.name] = {
        "fits": r.fits(hbm_bytes),
        "bytes_per_device": r.total_bytes,
        "hbm_bytes": int(hbm_bytes),
        "flops": r.flops,
        "argument_bytes": r.argument_bytes,
        "output_bytes": r.output_bytes,
        "temp_bytes": r.temp_bytes,
        "code_bytes": r.code_bytes,
        "alias_bytes": r.alias_bytes,
        "mesh": r.mesh,
        "backend": r.backend,
        "step_time_bound_s": bound,
        "model_flops": useful,
        "mfu_bound": (useful / work) if useful and work else None,
    }
    if r.mixtures is not None:
      steps[r.name]["mixtures"] = r.mixtures
    if r.resident_bytes:
      steps[r.name]["resident_bytes"] = r.resident_bytes
    if r.error:
      steps[r.name]["error"] = r.error
    if r.read_bytes is not None:
      steps[r.name]["read_bytes"] = r.read_bytes
      steps[r.name]["tokens_per_call"] = r.tokens_per_call
      steps[r.name]["hbm_bound_s"] = hbm_bound
  return {"topology": topology, "config": config, "steps": steps}


def parse_mesh(text: str) -> dict[str, int]:
  """'data:8,fsdp:8' -> {'data': 8, 'fsdp': 8} (order kept)."""
  out = {}
  for part in filter(None, (p.strip() for p in text.split(","))):
    name, sep, size = (s.strip() for s in part.partition(":"))
    if not sep or not name:
      raise ValueError(f"--mesh entry {part!r} must be name:size")
    try:
      n = int(size)
    except ValueError:
      raise ValueError(
          f"--mesh entry {part!r}: the size {size!r} is not an integer"
      ) from None
    if n == 0 or n < -1:
      raise ValueError(f"--mesh entry {part!r}: a size is positive or -1")
    if name in out:
      raise ValueError(f"--mesh names the axis {name!r} twice")
    out[name] = n
  return out


def _fmt_bytes(n: int) -> str:
  return f"{n / 2**30:9.3f} GiB"


def format_reports(
    reports: Sequence[CompileReport], hbm_gb: float = 0.0
) -> str:
  """A human-readable table of the reports (the step-time and MFU bounds,
  which need the model FLOPs, are printed from `summary`'s result)."""
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
    ) + ((("resident (store)", r.resident_bytes),) if r.resident_bytes else ()):
      lines.append(f"  {label:<18s}{_fmt_bytes(v)}")
    lines.append(
        "  flops per device  "
        + (f"{r.flops:.3e}" if r.flops is not None else "unknown")
        + " (XLA cost_analysis: a scanned layer loop counts once, Pallas"
        " kernels not at all)"
    )
    if hbm_gb > 0:
      verdict = "fits" if r.fits(hbm_gb * 2**30) else "DOES NOT FIT"
      if r.resident_bytes:
        verdict += " (with the resident store)"
      lines.append(
          f"  {verdict} in {hbm_gb:g} GiB HBM (limit " f"{FIT_FRACTION:.0%})"
      )
  return "\n".join(lines)


def force_cpu_devices(n: int) -> None:
  """Asks XLA:CPU for n fake devices.

  Effective only before JAX starts a backend (importing JAX does not start
  one; the first device query does), hence an environment variable.
  """
  flag = f"--xla_force_host_platform_device_count={n}"
  old = os.environ.get("XLA_FLAGS", "")
  kept = " ".join(
      f
      for f in old.split()
      if not f.startswith("--xla_force_host_platform_device_count")
  )
  os.environ["XLA_FLAGS"] = f"{kept} {flag}".strip()


def mesh_size(axes: Mapping[str, int]) -> int:
  """Devices a mesh needs; 0 when one axis is -1 (inferred from devices)."""
  sizes = [int(v) for v in axes.values()]
  return 0 if -1 in sizes else int(math.prod(sizes))
