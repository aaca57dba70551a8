r"""The compile check's command line (see the package docstring).

  python -m demix_jax.aot --config=configs/qwen3_1p7b.py --topology=v5p-64 \
      [--mesh=data:2,fsdp:16] [--devices=N] [--hbm_gb=95] \
      [--global_batch=512] [--seq_len=8192] [--steps=train,merge,generate] \
      [--mfu=0.4]

Flags live here, not in the library, so importing `demix_jax.aot` defines
none. Every flag is checked first (exit 2 naming the flag and the fix,
`cli.py`). With --topology the default backend is never started: devices,
hosts and chips come from the topology, so the command runs the same on
worker 0 of a multi-host slice (where starting the TPU would wait for every
host) and on a laptop; the default backend is pinned to the CPU. The
fake-device count must be set before JAX starts a backend, which is why
`main` sets it before it touches any device.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Mapping, Sequence

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from demix_jax import aot
from demix_jax import spec as spec_lib
from demix_jax.aot import cli
from demix_jax.aot import generate as generate_lib
from demix_jax.aot import plan as plan_lib
from demix_jax.aot import topology
from demix_jax.config_lib import ConfigError
from demix_jax.models import attention as attention_lib
from demix_jax.training import config as train_config
from demix_jax.training import flops as flops_lib
from demix_jax.training import sharding

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
_TOPOLOGY = flags.DEFINE_string(
    "topology",
    "",
    "Compile with XLA:TPU for a Cloud TPU slice (v4-N, v5litepod-N, v5p-N, "
    "v6e-N) on compile-only devices (needs libtpu: requirements-tpu.txt); "
    "sets --hbm_gb from the chip. Empty: the attached devices, or fake CPU "
    "devices.",
)
_STEPS = flags.DEFINE_list(
    "steps",
    ["train", "merge", "generate"],
    "Steps to compile: train, merge, generate (the merged proxies'"
    " decoding: merge, prefill and decode programs).",
)
_MFU = flags.DEFINE_float(
    "mfu",
    0.4,
    "Efficiency of the cost plan's second column: the fraction of each"
    " step's bound reached (MFU for the compute-bound steps).",
)
_PLATFORM = flags.DEFINE_string(
    "platform",
    "",
    "Without --topology: the backend to compile for (cpu, tpu, cuda, rocm);"
    " default JAX_PLATFORMS, else the TPU on a TPU VM, else the CPU where"
    " libtpu is installed, else JAX's choice. With --topology the default"
    " backend is always the CPU (never started for the compile).",
)


def run_checks(
    config,
    *,
    mesh_axes: Mapping[str, int] | None = None,
    global_batch: int = 0,
    seq_len: int = 0,
    eval_batches: int = 1,
    steps: Sequence[str] = ("train", "merge", "generate"),
    devices=None,
) -> list[aot.CompileReport]:
  """Compiles the requested steps of a pipeline config.

  The config is read here, at the edge, so the library takes typed
  arguments only.

  Args:
    config: the pipeline ConfigDict (configs/*.py).
    mesh_axes: mesh override (default config.mesh.axes).
    global_batch: train.global_batch_size override (0 = config's).
    seq_len: data.seq_len override (0 = config's).
    eval_batches: row batches per merge call.
    steps: any of "train", "merge", "generate".
    devices: devices of the mesh (default all; a topology's for XLA:TPU).

  Returns:
    One CompileReport per step.
  """
  platform = devices[0].platform if devices else jax.default_backend()
  with attention_lib.target_platform(platform):
    return _run_checks(
        config, mesh_axes, global_batch, seq_len, eval_batches, steps, devices
    )


def _run_checks(
    config, mesh_axes, global_batch, seq_len, eval_batches, steps, devices
):
  unknown = sorted(set(steps) - set(cli.STEPS))
  if unknown:
    raise ValueError(f"--steps {unknown} unknown; use {', '.join(cli.STEPS)}")
  # The same resolved spec the pipeline trains from (one reading of the
  # config); device checks are skipped: --mesh/--topology set the devices.
  spec = spec_lib.resolve(config)
  model_cfg = spec.model
  axes = dict(mesh_axes or spec.mesh.axes)
  t = int(seq_len or spec.data.seq_len)
  out = []
  if "train" in steps:
    train_cfg = train_config.TrainConfig(
        global_batch_size=int(global_batch or spec.train.global_batch_size),
        seq_len=t,
        total_tokens=spec.budgets.base_tokens or t,
        grad_accum_steps=spec.train.grad_accum_steps,
        mesh_axes=axes,
        rules=spec.mesh.rules,
    )
    out.append(
        aot.compile_train_step(model_cfg, spec.optim, train_cfg, devices)[0]
    )
  if "merge" in steps:
    out.append(
        aot.compile_merge_step(
            model_cfg,
            len(spec.candidates),
            axes,
            spec.mesh.rules,
            seq_len=t,
            eval_batch_size=spec.eval.batch_size,
            eval_batches=eval_batches,
            chunk_size=spec.merge.chunk_size,
            spec=spec.merge.spec,
            devices=devices,
        )[0]
    )
  if "generate" in steps:
    out.extend(
        generate_lib.compile_generation(
            model_cfg,
            len(spec.candidates),
            axes,
            spec.mesh.rules,
            spec.eval.generation,
            spec=spec.merge.spec,
            devices=devices,
        )
    )
  return out


def _model_flops(config, reports, seq_len, global_batch) -> dict:
  """Useful FLOPs per device of each step.

  train: 6 N per token (training.flops) plus causal attention (6 x 2 T
  d_attn per token and layer, halved), over the global batch.
  merge: a forward, 2 N per token plus causal attention (2 x 2 T d_attn,
  halved), over every row of every mixture of the chunk. The merge itself
  (K x N multiply-adds per mixture and layer) is left out: under 0.1% of
  the forward at the paper's shapes.
  prefill, decode: `generate.model_flops` (a forward per prompt token;
  per decode call, a forward per generated token with attention over the
  cache).
  """
  spec = spec_lib.resolve(config)
  m = spec.model
  t = int(seq_len or spec.data.seq_len)
  b = int(global_batch or spec.train.global_batch_size)
  attn = m.n_layers * m.n_heads * m.head_dim * t  # 2 T d_attn / 2 per token
  per_token = flops_lib.train_flops_per_token(m)
  out = {}
  for r in reports:
    n = math.prod(r.mesh.values())
    if r.name == "train":
      out["train"] = (per_token + 6 * attn) * b * t / n
    elif r.name == "merge" and r.mixtures:
      rows = spec.eval.batch_size * _EVAL_BATCHES.value * r.mixtures
      out["merge"] = (per_token / 3 + 2 * attn) * rows * t / n
    elif r.name in ("prefill", "decode"):
      out[r.name] = generate_lib.model_flops(m, spec.eval.generation, n)[r.name]
  return out


def _print_bounds(
    steps: Mapping[str, dict], peak: float, bandwidth: float
) -> None:
  """Per step: the step-time and MFU bounds of the JSON line, labelled."""
  for name, st in steps.items():
    if st.get("error"):
      print(f"[{name}] did not compile: {st['error']}")
    if st.get("hbm_bound_s") is not None:
      print(
          f"[{name}] call time >= {st['hbm_bound_s']:.4f} s from HBM:"
          f" {st['tokens_per_call']} tokens x {st['read_bytes'] / 2**30:.2f}"
          f" GiB read per token (merged weights + KV cache) /"
          f" {bandwidth / 1e9:.0f} GB/s (chip HBM bandwidth, Cloud TPU docs)"
      )
    if st["step_time_bound_s"] is None:
      continue
    line = (
        f"[{name}] step time >= {st['step_time_bound_s']:.4g} s"
        f" (bound: max(compiled, model) FLOPs / {peak:.3g} FLOP/s peak"
    )
    if st["mfu_bound"] is not None:
      line += f"; model FLOPs {st['model_flops']:.3e} per device"
      line += f"), MFU <= {st['mfu_bound']:.1%} (bound, not a measurement"
      if (st["flops"] or 0) < st["model_flops"]:
        # Then the bound is the model FLOPs at peak and says MFU <= 100%.
        line += "; XLA's count is below the model FLOPs"
      line += ")"
    else:
      line += "; not a measurement)"
    print(line)


def _devices_and_chip(config, mesh_axes):
  """(devices or None, peak FLOP/s, HBM bytes, HBM bytes/s, chips).

  With --topology: the slice's compile-only devices (process and device
  counts come from them; the default backend is never started). Without:
  the attached devices, or --devices fake CPU devices.
  """
  hbm = _HBM_GB.value * 2**30
  if _TOPOLOGY.value:
    if not topology.libtpu_available():
      cli.fail(
          "--topology needs libtpu. Fix: pip install -r requirements-tpu.txt"
          " (or drop --topology to compile for fake CPU devices)"
      )
    devices, chip = topology.devices(_TOPOLOGY.value)
    print(
        f"topology {_TOPOLOGY.value}: {len(devices)} devices on"
        f" {topology.process_count(devices)} hosts (compile-only)",
        file=sys.stderr,
    )
    return (
        devices,
        chip.peak_bf16_flops,
        hbm or chip.hbm_bytes,
        chip.hbm_bandwidth,
        len(devices),
    )
  n = _DEVICES.value or aot.mesh_size(mesh_axes or dict(config.mesh.axes))
  if n:
    # Only affects the CPU backend; must precede JAX's backend start-up.
    aot.force_cpu_devices(n)
  if n and jax.default_backend() == "cpu" and jax.device_count() != n:
    cli.fail(
        f"asked for {n} CPU devices, JAX started with {jax.device_count()}"
        " (XLA_FLAGS sets another --xla_force_host_platform_device_count?)."
        f" Fix: unset XLA_FLAGS, or --devices={jax.device_count()}"
    )
  peak = float(config.train.get("peak_flops", 0.0) or 0.0)
  if jax.default_backend() == "cpu":
    peak = 0.0  # a TPU peak says nothing about a CPU compile
  return None, peak, hbm, 0.0, jax.device_count()


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}. Fix: pass --name=value")
  # Every flag is checked before JAX starts a backend or anything compiles.
  steps = cli.check_steps(_STEPS.value)
  mesh_axes = cli.check_mesh(_MESH.value)
  cli.check_devices(_DEVICES.value, _TOPOLOGY.value, mesh_axes)
  for name, holder in (
      ("hbm_gb", _HBM_GB),
      ("global_batch", _GLOBAL_BATCH),
      ("seq_len", _SEQ_LEN),
  ):
    if holder.value < 0:
      cli.fail(f"--{name}={holder.value} must be >= 0 (0: the config's)")
  if _EVAL_BATCHES.value < 1:
    cli.fail(f"--eval_batches={_EVAL_BATCHES.value} must be >= 1")
  if not 0 < _MFU.value <= 1:
    cli.fail(f"--mfu={_MFU.value} must be in (0, 1], e.g. --mfu=0.4")
  if _TOPOLOGY.value:
    cli.check_topology(_TOPOLOGY.value)
  platform = cli.choose_platform(_TOPOLOGY.value, _PLATFORM.value)
  if platform:
    jax.config.update("jax_platforms", platform)
  config = cli.load_config(_CONFIG)
  try:
    spec_lib.resolve(config)
  except ConfigError as e:
    cli.fail(str(e))
  devices, peak, hbm, bandwidth, chips = _devices_and_chip(config, mesh_axes)
  try:
    reports = run_checks(
        config,
        mesh_axes=mesh_axes,
        global_batch=_GLOBAL_BATCH.value,
        seq_len=_SEQ_LEN.value,
        eval_batches=_EVAL_BATCHES.value,
        steps=steps,
        devices=devices,
    )
  except (ConfigError, sharding.ShardingError) as e:
    # The mesh, batch or rules do not fit the devices: found before
    # anything compiled.
    cli.fail(f"{e}. Fix: change --mesh/--global_batch or the config")
  print(aot.format_reports(reports, hbm / 2**30))
  out = aot.summary(
      reports,
      topology=_TOPOLOGY.value or None,
      config=config_flags.get_config_filename(flags.FLAGS["config"]),
      hbm_bytes=int(hbm),
      peak_flops=peak,
      model_flops=_model_flops(
          config, reports, _SEQ_LEN.value, _GLOBAL_BATCH.value
      ),
      hbm_bandwidth=bandwidth,
  )
  _print_bounds(out["steps"], peak, bandwidth)
  if peak:
    plan = plan_lib.cost_plan(
        spec_lib.resolve(config),
        out["steps"],
        chips=chips,
        peak_flops=peak,
        mfu=_MFU.value,
        seq_len=_SEQ_LEN.value,
        global_batch=_GLOBAL_BATCH.value,
        eval_batches=_EVAL_BATCHES.value,
    )
    print(plan_lib.format_plan(plan))
    out["plan"] = plan
  out["hbm_gb"] = hbm / 2**30 if hbm else None
  out["cpu_indicative_only"] = all(r.backend == "cpu" for r in reports)
  print(json.dumps(out, sort_keys=True))
  if hbm and not all(st["fits"] for st in out["steps"].values()):
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
