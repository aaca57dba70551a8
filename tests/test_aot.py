"""The compile check: steps lower and compile on fake devices, never run.

The CLI runs in a subprocess because it must set the fake-device count
before JAX starts (this test process already has its own devices). The
library's lowering runs in-process on abstract values only: `jax.device_put`
is made to fail while it runs, so a step that placed a concrete array (and
so could not compile for a compile-only topology) would fail the test.
"""

import dataclasses
import json
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from demix_jax import aot
from demix_jax import models
from demix_jax.merging import methods
from demix_jax.training import config as train_config
from demix_jax.training import optim
from tests import kit
from tests.kit import ROOT


def _aot(*args, timeout: float = kit.HANG_GUARD_S):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # the CLI sets the device count itself
  env["JAX_PLATFORMS"] = "cpu"
  return kit.run_cli(*args, module="demix_jax.aot", env=env, timeout=timeout)


def _summary(proc):
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _check_positive(rep, mesh):
  assert rep["mesh"] == mesh
  assert rep["backend"] == "cpu"
  assert rep["argument_bytes"] > 0
  assert rep["temp_bytes"] > 0
  assert rep["bytes_per_device"] > 0
  assert rep["flops"] is None or rep["flops"] > 0


TINY = kit.tiny_model()


def test_parse_mesh():
  assert aot.parse_mesh("data:8,fsdp:8") == {"data": 8, "fsdp": 8}
  assert list(aot.parse_mesh("fsdp:2, data:-1")) == ["fsdp", "data"]
  with pytest.raises(ValueError, match="name:size"):
    aot.parse_mesh("data8")


@pytest.mark.slow
def test_runlocal_steps_compile():
  s = _summary(
      _aot("--config=configs/demo.py:runlocal", "--devices=4", "--hbm_gb=16")
  )
  mesh = {"data": 4, "fsdp": 1, "tensor": 1}
  for name in ("train", "merge"):
    _check_positive(s["steps"][name], mesh)
    assert s["steps"][name]["fits"]
  # The train step donates params and optimizer state: they alias outputs.
  assert s["steps"]["train"]["alias_bytes"] > 0
  assert s["cpu_indicative_only"]


@pytest.mark.slow
def test_qwen3_1p7b_train_step_compiles_on_a_small_mesh():
  # The real model at a tiny batch (4 x 128) on 4 fake devices, FSDP 4.
  s = _summary(
      _aot(
          "--config=configs/qwen3_1p7b.py",
          "--mesh=data:1,fsdp:4,tensor:1",
          "--devices=4",
          "--global_batch=4",
          "--seq_len=128",
          "--steps=train",
          "--hbm_gb=95",
      )
  )
  rep = s["steps"]["train"]
  _check_positive(rep, {"data": 1, "fsdp": 4, "tensor": 1})
  # ~1.7B fp32 params + 2 Adam moments, a quarter per device (FSDP 4):
  # about 3 x 1.7e9 x 4 B / 4 = 5.1e9 B of arguments, minus nothing big.
  assert 4.0e9 < rep["argument_bytes"] < 6.5e9
  assert "merge" not in s["steps"]


@pytest.mark.slow
def test_hbm_check_fails_a_too_small_device():
  proc = _aot(
      "--config=configs/demo.py:runlocal",
      "--devices=2",
      "--steps=train",
      "--hbm_gb=0.0001",
  )
  assert proc.returncode == 1
  assert "DOES NOT FIT" in proc.stdout
  assert (
      json.loads(proc.stdout.strip().splitlines()[-1])["steps"]["train"]["fits"]
      is False
  )


def test_library_import_defines_no_flags():
  code = (
      "import sys; from absl import flags; import demix_jax.aot; "
      "names = set(flags.FLAGS); "
      "assert not names & {'config', 'hbm_gb', 'mesh', 'steps'}, names; "
      "assert 'demix_jax.aot.__main__' not in sys.modules"
  )
  proc = subprocess.run(
      [sys.executable, "-c", code],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture
def no_device_put(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError("the compile check placed a concrete array")

  monkeypatch.setattr(jax, "device_put", refuse)


def test_train_step_lowers_on_abstract_values(no_device_put):
  train_cfg = train_config.TrainConfig(
      global_batch_size=4,
      seq_len=16,
      total_tokens=4 * 16 * 3,
      grad_accum_steps=2,
      mesh_axes={"data": 1, "fsdp": 1, "tensor": 1},
  )
  rep, compiled = aot.compile_train_step(
      TINY, optim.OptimConfig(), train_cfg, devices=jax.devices()[:1]
  )
  assert rep.name == "train" and rep.mesh == {"data": 1, "fsdp": 1, "tensor": 1}
  # Params and the optimizer state are donated: they alias outputs.
  assert rep.argument_bytes > 0 and rep.alias_bytes > 0
  assert compiled is not None


@pytest.mark.parametrize("method", ["linear", "ties"])
def test_merge_step_lowers_on_an_abstract_store(no_device_put, method):
  rep, _ = aot.compile_merge_step(
      TINY,
      3,
      {"data": 1},
      (("mixtures", "data"),),
      seq_len=16,
      eval_batch_size=2,
      eval_batches=2,
      chunk_size=2,
      spec=methods.MergeSpec(method),
      devices=jax.devices()[:1],
  )
  # 3 stacked float32 components, plus the base where the method reads it
  # (linear does not; jit drops the unused argument).
  n = models.num_params(TINY)
  models_held = 4 if methods.MergeSpec(method).needs_base else 3
  assert models_held * n * 4 <= rep.argument_bytes < (models_held + 1) * n * 4
  assert rep.name == "merge" and rep.temp_bytes > 0


def test_mesh_size():
  assert aot.mesh_size({"data": 2, "fsdp": 4}) == 8
  assert aot.mesh_size({"data": -1, "fsdp": 4}) == 0
  assert np.isclose(aot.FIT_FRACTION, 0.9)


def test_topology_names():
  from demix_jax.aot import topology

  chip, chips = topology.parse("v5p-64")
  assert chips == 32 and chip.hbm_bytes == 95 * 2**30
  assert topology.physical_shape(chip, chips) == (2, 4, 4)
  assert topology.physical_shape(*topology.parse("v5p-128")) == (4, 4, 4)
  assert topology.physical_shape(*topology.parse("v4-8")) == (1, 2, 2)
  assert topology.physical_shape(*topology.parse("v5litepod-16")) == (4, 4)
  assert topology.physical_shape(*topology.parse("v6e-64")) == (8, 8)
  for bad in ("v5p-63", "v7-8", "v5e-16", "v5litepod-12"):
    with pytest.raises(ValueError):
      topology.parse(bad)


def test_summary_has_the_issue_fields():
  rep = aot.CompileReport(
      name="train",
      argument_bytes=10,
      output_bytes=5,
      temp_bytes=100,
      code_bytes=1,
      alias_bytes=5,
      total_bytes=111,
      flops=2e12,
      mesh={"data": 2},
      backend="tpu",
  )
  s = aot.summary(
      [rep],
      topology="v5p-64",
      config="c.py",
      hbm_bytes=1000,
      peak_flops=1e12,
      model_flops={"train": 1e12},
  )
  st = s["steps"]["train"]
  assert (s["topology"], s["config"]) == ("v5p-64", "c.py")
  assert st["fits"] and st["bytes_per_device"] == 111
  assert st["hbm_bytes"] == 1000 and st["flops"] == 2e12
  assert st["step_time_bound_s"] == 2.0 and st["mfu_bound"] == 0.5
  assert not aot.summary(
      [rep], topology="", config="", hbm_bytes=100, peak_flops=0
  )["steps"]["train"]["fits"]


def test_summary_records_the_merge_chunk():
  kw = dict(
      argument_bytes=1,
      output_bytes=1,
      temp_bytes=1,
      code_bytes=0,
      alias_bytes=0,
      total_bytes=3,
      flops=1e9,
      mesh={"data": 32},
      backend="tpu",
  )
  train = aot.CompileReport(name="train", **kw)
  merge = aot.CompileReport(name="merge", mixtures=32, **kw)
  s = aot.summary(
      [train, merge],
      topology="v5p-64",
      config="c.py",
      hbm_bytes=100,
      peak_flops=1e12,
      model_flops={"merge": 4e9},
  )["steps"]
  assert s["merge"]["mixtures"] == 32 and "mixtures" not in s["train"]
  # Bound from the larger of XLA's and the model's count.
  assert s["merge"]["step_time_bound_s"] == 4e9 / 1e12
  assert s["train"]["step_time_bound_s"] == 1e9 / 1e12


# --- The command line: no backend started, bad input refused -------------

# Runs the CLI with the default backend made to fail: any call that starts
# it (jax.devices(), jax.process_count(), an eager op) raises. --topology is
# served by a private XLA:CPU client standing in for the compile-only
# devices (a real topology needs libtpu: tests/test_tpu_compile.py).
_NO_BACKEND = """
import runpy, sys
from jax._src import xla_bridge
from jax._src.lib import xla_client
from demix_jax.aot import topology

def refuse(*args, **kwargs):
  raise RuntimeError("the default backend was started")

xla_bridge.backends = refuse
client = xla_client.make_cpu_client(num_devices=4)
topology.libtpu_available = lambda: True
topology.devices = lambda name: (client.devices(), topology.parse(name)[0])
sys.argv = ["demix_jax.aot"] + sys.argv[1:]
runpy.run_module("demix_jax.aot", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_topology_compile_never_starts_the_default_backend():
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run(
      [
          sys.executable,
          "-c",
          _NO_BACKEND,
          "--config=configs/demo.py:runlocal",
          "--topology=v5litepod-4",
          "--steps=train,generate",
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  s = _summary(proc)
  assert "the default backend was started" not in proc.stderr
  assert "topology v5litepod-4: 4 devices on 1 hosts" in proc.stderr
  assert s["topology"] == "v5litepod-4" and s["hbm_gb"] == 16
  assert s["steps"]["train"]["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1}
  # Generation compiles beside it, and the cost plan is printed from the
  # bounds (a topology gives the chip's peak and HBM bandwidth).
  assert s["steps"]["decode"]["hbm_bound_s"] > 0
  assert {"generate_merge", "prefill"} <= set(s["steps"])
  assert "cost plan on 4 chips" in proc.stdout
  assert s["plan"]["stages"]["base"]["chip_hours_bound"] > 0


def test_layout_takes_the_process_count_from_the_devices(monkeypatch):
  def refuse():
    raise AssertionError("jax.process_count() starts the default backend")

  monkeypatch.setattr(jax, "process_count", refuse)
  train_cfg = train_config.TrainConfig(
      global_batch_size=4,
      seq_len=16,
      total_tokens=4 * 16 * 3,
      mesh_axes={"data": 2, "fsdp": 1, "tensor": 1},
  )
  from demix_jax.training import step as step_lib

  layout = step_lib.train_layout(
      TINY, optim.OptimConfig(), train_cfg, jax.devices()[:2]
  )
  assert layout.host_batch_size == 4  # one process holds both devices
  from demix_jax.aot import topology

  fake = [types.SimpleNamespace(process_index=i // 4) for i in range(16)]
  assert topology.process_count(fake) == 4


@pytest.mark.parametrize(
    "args,needles",
    [
        (["--mesh=data8"], ["--mesh", "name:size", "Fix"]),
        (["--mesh=data:x"], ["--mesh", "'x' is not an integer"]),
        (["--steps=trian"], ["--steps", "did you mean train"]),
        (["--devices=two"], ["devices", "--helpshort"]),
        (["--devices=4", "--topology=v5p-8"], ["--devices", "--topology"]),
        (["--topology=v5e-16"], ["v5litepod-N", "--topology=v5litepod-16"]),
        (["--config=configs/nope.py"], ["--config", "cannot load"]),
        (["--config.train.nope=1"], ["override", "nope"]),
        (["--config.train.global_batch_size=-3"], ["global_batch_size"]),
    ],
)
def test_bad_input_exits_2_naming_the_flag(args, needles):
  if not any(a.startswith("--config=") for a in args):
    args = ["--config=configs/demo.py:runlocal", *args]
  proc = _aot(*args, timeout=120)
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")]
  for needle in needles:
    assert needle in line, line
  assert proc.stdout == ""  # nothing compiled


def test_flag_checks_in_process(capsys):
  from demix_jax.aot import cli
  from demix_jax.aot import topology

  def refused(fn, *args):
    with pytest.raises(SystemExit) as e:
      fn(*args)
    assert e.value.code == 2
    return capsys.readouterr().err

  assert "positive or -1" in refused(cli.check_mesh, "data:0")
  assert "twice" in refused(cli.check_mesh, "data:2,data:2")
  assert "needs 2" in refused(cli.check_devices, 4, "", {"data": 2})
  assert "--devices=-1" in refused(cli.check_devices, -1, "", None)
  assert "cpu, tpu" in refused(cli.choose_platform, "", "tpux", {})
  assert "drop --platform" in refused(cli.choose_platform, "v5p-8", "tpu", {})
  assert "--steps is empty" in refused(cli.check_steps, [""])
  assert cli.check_mesh("data:2, fsdp:-1") == {"data": 2, "fsdp": -1}
  cli.check_devices(2, "", {"data": 2})  # consistent: no exit
  cli.check_devices(4, "", None)  # no --mesh: the config's, checked later
  for typo, meant in [
      ("v5p-63", "v5p-64"),
      ("v6e16", "v6e-16"),
      ("V5P-64", "v5p-64"),
      ("v5lite-8", "v5litepod-8"),
      ("trillium-4", "v6e-4"),
  ]:
    assert topology.closest(typo) == meant
    assert f"--topology={meant}?" in refused(cli.check_topology, typo)
  names = topology.known_names()
  assert "v5p-64" in names and "v6e-256" in names and "v4-4096" in names
  for name in names:
    topology.parse(name)  # every listed name is accepted


def test_platform_choice(tmp_path, monkeypatch):
  from demix_jax.aot import cli

  dev = tmp_path / "dev"
  dev.mkdir()
  libtpu = {"found": False}
  monkeypatch.setattr(
      cli.importlib.util,
      "find_spec",
      lambda name: object() if libtpu["found"] else None,
  )
  choose = lambda topo, plat, env: cli.choose_platform(
      topo, plat, env, str(dev)
  )
  # With a topology the default backend is the CPU, whatever else is set.
  assert choose("v5p-64", "", {"JAX_PLATFORMS": "tpu"}) == "cpu"
  assert choose("", "", {}) is None  # JAX's choice: nothing TPU-like here
  assert choose("", "", {"JAX_PLATFORMS": "cuda"}) is None  # the user's
  assert choose("", "cuda", {}) == "cuda"
  libtpu["found"] = True  # libtpu installed, no TPU: no TPU start-up noise
  assert choose("", "", {}) == "cpu"
  (dev / "accel0").write_text("")
  assert choose("", "", {}) == "tpu"  # a TPU VM


# A stand-in for the libtpu package: it reports when JAX asks it for the
# library in order to start a TPU backend (what prints libtpu's start-up
# errors on a machine without a TPU).
_FAKE_LIBTPU = """
import inspect, os, sys

def get_library_path():
  callers = {f.function for f in inspect.stack()}
  if callers & {"tpu_client_timer_callback", "make_tpu_client"}:
    print("FAKE LIBTPU: unexpected worker hostname", file=sys.stderr)
  return os.path.join(os.path.dirname(__file__), "libtpu.so")
"""


def test_with_libtpu_but_no_tpu_the_cli_starts_no_tpu_backend(tmp_path):
  pkg = tmp_path / "libtpu"
  pkg.mkdir()
  (pkg / "__init__.py").write_text(_FAKE_LIBTPU)
  (pkg / "libtpu.so").write_text("not a library")
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  env.pop("JAX_PLATFORMS", None)  # as a user runs it
  env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
  # The config's rules name an fsdp axis this mesh lacks: refused (exit 2)
  # right after the backend started, before anything compiles.
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "demix_jax.aot",
          "--config=configs/demo.py:runlocal",
          "--mesh=data:1",
          "--steps=train",
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "FAKE LIBTPU" not in proc.stderr
  assert proc.stderr.startswith("error: mesh.rules"), proc.stderr[-2000:]


# --- Generation: merge, prefill and decode of merged proxies ------------


def test_generation_lowers_on_an_abstract_store(no_device_put):
  from demix_jax.aot import generate
  from demix_jax.evals import generation

  gen = generation.GenerationConfig(
      max_new_tokens=8,
      batch_size=4,
      max_prompt_tokens=16,
      prompt_bucket=8,
      steps_per_call=4,
      mixtures_per_call=2,
  )
  rules = (("batch", ("data", "fsdp")), ("embed", "fsdp"))
  reps = generate.compile_generation(
      TINY, 3, {"data": 2, "fsdp": 2}, rules, gen, devices=jax.devices()[:4]
  )
  assert [r.name for r in reps] == list(generate.GEN_STEPS)
  n = models.num_params(TINY)
  # The store (3 stacked components + base, float32) stays resident; the
  # embed rule shards it over fsdp = 2 (norm scales too), so half of it.
  store = 4 * n * 4
  for r in reps[1:]:
    assert store / 2 <= r.resident_bytes < store
    assert r.mixtures == 2 and r.temp_bytes > 0
  # The KV cache: k and v of [L, M, B, S, kv, hd] float32, the rows split
  # over data x fsdp (4 devices): a quarter per device, in the prefill's
  # outputs and in what each decode token reads.
  cache = 2 * TINY.n_layers * 2 * 4 * (16 + 8) * TINY.n_kv_heads
  cache *= TINY.head_dim * 4
  prefill, decode = reps[1], reps[2]
  assert cache / 4 <= prefill.output_bytes < cache / 2
  assert decode.read_bytes >= cache / 4 and decode.tokens_per_call == 4
  # XLA:CPU: no donation (the Generator donates on accelerators only).
  assert decode.alias_bytes == 0


def test_required_bytes_reads_xla_tpu_refusals():
  from demix_jax.aot import generate

  msg = (
      "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory"
      " required for HLO temporaries (3.95T) exceeds available HBM (95.74G)."
  )
  assert generate.required_bytes(msg) == int(3.95 * 2**40)
  assert generate.required_bytes("something else") is None


def _report(name, **kw):
  base = dict(
      argument_bytes=10,
      output_bytes=0,
      temp_bytes=10,
      code_bytes=0,
      alias_bytes=0,
      total_bytes=20,
      flops=1e9,
      mesh={"data": 32},
      backend="tpu",
  )
  base.update(kw)
  return aot.CompileReport(name=name, **base)


def test_summary_bounds_decode_by_hbm_bandwidth():
  dec = _report("decode", read_bytes=2e9, tokens_per_call=64, resident_bytes=75)
  s = aot.summary(
      [dec],
      topology="v5p-64",
      config="c.py",
      hbm_bytes=100,
      peak_flops=1e12,
      model_flops={"decode": 1e10},
      hbm_bandwidth=2765e9,
  )["steps"]["decode"]
  assert s["hbm_bound_s"] == pytest.approx(64 * 2e9 / 2765e9)
  # HBM, not FLOPs, bounds decoding (0.046 s vs 0.01 s).
  assert s["step_time_bound_s"] == s["hbm_bound_s"]
  assert s["read_bytes"] == 2e9 and s["resident_bytes"] == 75
  # 20 + 75 > 90% of 100: the resident store counts toward fitting.
  assert not s["fits"]
  assert _report("decode").fits(100)


def _plan_steps(**missing):
  steps = {
      "train": {"step_time_bound_s": 10.0, "model_flops": 2e12},
      "merge": {"step_time_bound_s": 1.0, "model_flops": 2e11, "mixtures": 32},
      "generate_merge": {"step_time_bound_s": 0.5, "model_flops": None},
      "prefill": {"step_time_bound_s": 2.0, "model_flops": 4e11},
      "decode": {
          "step_time_bound_s": 0.4,
          "model_flops": 1e10,
          "hbm_bound_s": 0.4,
      },
  }
  for k in missing:
    steps[k] = {"step_time_bound_s": None, "error": "RESOURCE_EXHAUSTED"}
  return steps


def test_cost_plan_multiplies_the_bounds_out():
  from configs import qwen3_1p7b
  from demix_jax import spec as spec_lib
  from demix_jax.aot import plan as plan_lib

  spec = spec_lib.resolve(qwen3_1p7b.get_config())
  p = plan_lib.cost_plan(
      spec, _plan_steps(), chips=32, peak_flops=1e12, mfu=0.4
  )
  hours = lambda s: s * 32 / 3600
  st = p["stages"]
  # 50B tokens at 512 x 8192 per step, 10 s per step at the bound; at 40%
  # the model FLOPs (2e12 / 1e12 = 2 s) / 0.4 = 5 s per step.
  steps = -(-50e9 // (512 * 8192))
  assert st["base"]["steps"] == steps
  assert st["base"]["chip_hours_bound"] == pytest.approx(hours(steps * 10))
  assert st["base"]["chip_hours_at_mfu"] == pytest.approx(hours(steps * 5))
  assert st["components"]["runs"] == 7
  assert st["components"]["tokens"] == 7 * spec.budgets.component_tokens
  assert st["search"]["proxies"] == 112
  # Generation: code (HumanEval 164, MBPP 500) and math (GSM8K capped at
  # 1000, MATH-500) decode; rows at 512 and 1024 tokens.
  assert plan_lib.generation_rows(spec) == {512: 164 + 500 + 1000, 1024: 500}
  g = spec.eval.generation
  chunk = 0.5 + sum(
      -(-n // g.batch_size) * (2.0 + -(-lim // g.steps_per_call) * 0.4)
      for lim, n in ((512, 1664), (1024, 500))
  )
  rows = plan_lib.eval_rows(spec)
  merge = -(-rows // spec.eval.batch_size) * 1.0 / 32
  per_proxy = merge + chunk / g.mixtures_per_call
  assert st["search"]["chip_hours_bound"] == pytest.approx(
      hours(112 * per_proxy)
  )
  assert st["search"]["prompt_tokens_per_proxy"] == 2164 * 7168
  total = sum(s["chip_hours_bound"] for s in st.values())
  assert p["total_demix"]["chip_hours_bound"] == pytest.approx(total)
  assert list(p["table2"]) == ["2B", "4B", "8B", "12B"]
  t2 = p["table2"]["2B"]
  assert t2["tokens"] == 112 * 2e9
  assert t2["chip_hours_bound"] > st["search"]["chip_hours_bound"]
  assert "cost plan on 32 chips" in plan_lib.format_plan(p)
  # A step that did not compile leaves its stages without a figure.
  q = plan_lib.cost_plan(
      spec, _plan_steps(prefill=1), chips=32, peak_flops=1e12
  )
  assert q["stages"]["search"]["chip_hours_bound"] is None
  assert q["stages"]["search"]["missing_steps"] == ["prefill"]
  assert q["total_demix"]["chip_hours_bound"] is None
  assert q["stages"]["base"]["chip_hours_bound"] is not None


def test_cost_plan_of_the_table6_transfer_costs_base_and_final():
  """qwen3_8b takes the 1.7B run's mixture: no components, no search."""
  from configs import qwen3_8b
  from demix_jax import spec as spec_lib
  from demix_jax.aot import plan as plan_lib

  spec = spec_lib.resolve(qwen3_8b.get_config())
  p = plan_lib.cost_plan(
      spec, _plan_steps(), chips=64, peak_flops=1e12, mfu=0.4
  )
  assert list(p["stages"]) == ["base", "final"]
  assert p["not_in_run"] == ["components", "search"]
  total = sum(s["chip_hours_bound"] for s in p["stages"].values())
  assert p["total_demix"]["chip_hours_bound"] == pytest.approx(total)
  assert p["stages"]["final"]["runs"] == 2  # the 1.7B mixture + natural
  text = plan_lib.format_plan(p)
  assert "components    not in this config's stages" in text
  assert "final.mixture_from = gs://YOUR_BUCKET/demix/qwen3_1p7b" in text
  # The same config searching at 8B costs every stage again.
  full = dataclasses.replace(
      spec, stages=("base", "components", "search", "final")
  )
  q = plan_lib.cost_plan(full, _plan_steps(), chips=64, peak_flops=1e12)
  assert list(q["stages"]) == ["base", "components", "search", "final"]
  assert q["total_demix"]["chip_hours_bound"] > total


def test_cost_plan_counts_every_final_seed():
  from configs import qwen3_1p7b
  from demix_jax import spec as spec_lib
  from demix_jax.aot import plan as plan_lib

  c = qwen3_1p7b.get_config()
  one = plan_lib.cost_plan(
      spec_lib.resolve(c), _plan_steps(), chips=32, peak_flops=1e12
  )
  c.final.seeds = 2
  two = plan_lib.cost_plan(
      spec_lib.resolve(c), _plan_steps(), chips=32, peak_flops=1e12
  )
  assert two["stages"]["final"]["runs"] == 2 * one["stages"]["final"]["runs"]
  assert two["stages"]["final"]["chip_hours_bound"] == pytest.approx(
      2 * one["stages"]["final"]["chip_hours_bound"]
  )
