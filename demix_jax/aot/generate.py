"""Compile check of merged-proxy decoding (the generative targets).

`compile_generation` lowers, on abstract values, the three programs that
`merging.generative.GenerativeEvaluator` runs for each chunk of
`eval.generation.mixtures_per_call` mixtures, in the pipeline's order and
with the pipeline's shardings:

  generate_merge: `evals.generation.merge_many(merge)`, the linear (or
    configured) merge of the component store (`ComponentStore.abstract`,
    the store's shardings) vmapped over the chunk; its compiled output
    shardings are the merged params' layout.
  prefill: `evals.generation.kernels(...)[0]`, the vmapped
    `models.decode.prefill` of one batch of `eval.generation.batch_size`
    prompts at the longest prompt (`max_prompt_tokens`) with the cache
    sized for `max_new_tokens` (the largest shape the pipeline compiles).
    Prompts, lengths and keys are split over the `batch` rule as the
    Generator places them (`generation.row_sharding`); the prompt runs in
    chunks (`models.decode.prefill_chunk`).
  decode: `kernels(...)[1]`, one host call of `steps_per_call` tokens
    (`models.decode.decode_steps`), on the prefill's compiled output
    layout, donating the state as it does on an accelerator.

While they run, the component store (K stacked components and the base)
stays resident: its bytes per device are reported beside each program's
own (`CompileReport.resident_bytes`) and count toward `fits`.

`decode_read_bytes` is what one decode step reads from HBM per device:
the decode program's arguments (every merged weight and the whole KV
cache are read once per generated token). Divided by the chip's HBM
bandwidth it bounds the step time from below, beside the FLOP bound.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from demix_jax import aot
from demix_jax import models
from demix_jax.evals import generation as generation_lib
from demix_jax.merging import methods
from demix_jax.merging import store as store_lib
from demix_jax.models import decode
from demix_jax.training import sharding

GEN_STEPS = ("generate_merge", "prefill", "decode")
_SUFFIX = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}


def required_bytes(message: str) -> int | None:
  """The bytes an XLA:TPU out-of-memory error says the program needs.

  XLA:TPU refuses to compile a program larger than the chip's HBM
  ("RESOURCE_EXHAUSTED: Ran out of memory ... the total memory required
  for HLO temporaries (3.95T) exceeds available HBM (95.74G)"); the first
  figure is read (None if the message has none).
  """
  m = re.search(r"required[^(]*\((\d+(?:\.\d+)?)([KMGTP]?)\)", message)
  if not m:
    return None
  return int(float(m.group(1)) * _SUFFIX.get(m.group(2), 1))


def _compile(name: str, lowered, mesh):
  """(report, compiled), or (a not-fitting report, None) if XLA refuses
  the program for lack of memory (its figure as temp_bytes)."""
  try:
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    need = required_bytes(str(e)) or 0
    r = aot.CompileReport(
        name=name,
        argument_bytes=0,
        output_bytes=0,
        temp_bytes=need,
        code_bytes=0,
        alias_bytes=0,
        total_bytes=need,
        flops=None,
        mesh={k: int(v) for k, v in mesh.shape.items()},
        backend=mesh.devices.flat[0].platform,
    )
    r.error = str(e).strip().splitlines()[0][:300]
    return r, None
  return aot.report_from_compiled(name, compiled, mesh), compiled


def _abstract(tree, shardings):
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      tree,
      shardings,
  )


def _tree_bytes_per_device(tree) -> int:
  """Bytes one device holds of a pytree of sharded ShapeDtypeStructs."""
  total = 0
  for x in jax.tree.leaves(tree):
    shape = x.sharding.shard_shape(x.shape) if x.sharding else x.shape
    total += math.prod(shape) * x.dtype.itemsize  # key dtypes too
  return int(total)


def compile_generation(
    model_cfg: models.ModelConfig,
    n_components: int,
    mesh_axes,
    rules,
    gen: generation_lib.GenerationConfig,
    *,
    spec: methods.MergeSpec | None = None,
    with_base: bool = True,
    devices: Sequence[Any] | None = None,
) -> list[aot.CompileReport]:
  """Lowers and compiles merge, prefill and decode of one mixture chunk.

  Args:
    model_cfg: the components' model config.
    n_components: K.
    mesh_axes: mesh axis -> size.
    rules: logical axis rules (the store's layout).
    gen: `config.eval.generation` (batch, prompt and token limits, steps
      per call, mixtures per call, sampling).
    spec: merge method (default linear).
    with_base: hold the base model in the store (the pipeline does).
    devices: devices of the mesh (default all; a topology's for XLA:TPU).

  Returns:
    Reports named generate_merge, prefill and decode, in that order; each
    carries the store's resident bytes; decode its HBM read bytes per
    step. A program XLA refuses for lack of memory gets a not-fitting
    report (`error` set, the bytes XLA asked for as temp_bytes) and the
    programs after it, which need its output layout, are left out.
  """
  spec = spec or methods.MergeSpec()
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
  resident = _tree_bytes_per_device((store.stacked, store.base))
  replicated = NamedSharding(mesh, P())
  m, b = gen.mixtures_per_call, gen.batch_size
  platform = mesh.devices.flat[0].platform

  # The evaluator's merge (merging.generative.GenerativeEvaluator).
  def merge(stacked_and_base, alpha):
    stacked, base = stacked_and_base
    return store_lib.merge_stacked(spec, stacked, base, alpha)

  alphas = jax.ShapeDtypeStruct(
      (m, n_components), jnp.float32, sharding=replicated
  )
  merged_r, merged_c = _compile(
      "generate_merge",
      generation_lib.merge_many(merge).lower(
          (store.stacked, store.base), alphas
      ),
      mesh,
  )
  reports = [merged_r]
  if merged_c is not None:
    merged_shapes = jax.eval_shape(
        jax.vmap(merge, in_axes=(None, 0)), (store.stacked, store.base), alphas
    )
    merged = _abstract(merged_shapes, merged_c.output_shardings)

  sampling = decode.Sampling(
      temperature=gen.temperature, top_k=gen.top_k, eos_id=1, pad_id=0
  )
  prefill, steps = generation_lib.kernels(
      model_cfg,
      sampling,
      gen.steps_per_call,
      gen.max_new_tokens,
      True,
      platform != "cpu",
  )
  p = gen.max_prompt_tokens
  # The rows as the Generator places them (`generation.row_sharding`).
  rows = generation_lib.row_sharding(mesh, rules, b)
  prompts = jax.ShapeDtypeStruct((b, p), jnp.int32, sharding=rows)
  lengths = jax.ShapeDtypeStruct((b,), jnp.int32, sharding=rows)
  key_shape = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), b))
  keys = jax.ShapeDtypeStruct(key_shape.shape, key_shape.dtype, sharding=rows)
  if merged_c is not None:
    prefill_r, prefill_c = _compile(
        "prefill", prefill.lower(merged, prompts, lengths, keys), mesh
    )
    reports.append(prefill_r)
    if prefill_c is not None:
      state_shapes = jax.eval_shape(prefill, merged, prompts, lengths, keys)
      state = _abstract(state_shapes, prefill_c.output_shardings)
      decode_r, decode_c = _compile("decode", steps.lower(merged, state), mesh)
      reports.append(decode_r)
      if decode_c is not None:
        # Read per generated token: every merged weight and the cache.
        decode_r.read_bytes = _tree_bytes_per_device((merged, state))
        decode_r.tokens_per_call = gen.steps_per_call

  for r in reports:
    name = r.name
    r.mixtures = m
    # The merge's arguments are the store itself; only what it drops
    # (e.g. the base, unused by the linear merge) is resident beside them.
    r.resident_bytes = (
        max(0, resident - r.argument_bytes)
        if name == "generate_merge"
        else resident
    )
  return reports


def model_flops(
    model_cfg: models.ModelConfig,
    gen: generation_lib.GenerationConfig,
    n_devices: int,
) -> dict[str, float]:
  """Useful FLOPs per device of prefill and of one decode call.

  prefill: a forward of every prompt token of the chunk (2 N per token)
  plus causal attention over the prompt (2 x 2 P d_attn per token, halved).
  decode: `steps_per_call` tokens per row, each a forward (2 N) plus
  attention over the filled cache (2 x 2 S d_attn, S = prompt + limit, an
  upper bound on the slots a token attends to).
  """
  n = models.num_params(model_cfg)
  d_attn = model_cfg.n_layers * model_cfg.n_heads * model_cfg.head_dim
  p = gen.max_prompt_tokens
  s = p + gen.max_new_tokens
  rows = gen.mixtures_per_call * gen.batch_size
  pre = rows * p * (2 * n + 2 * d_attn * p)
  dec = rows * gen.steps_per_call * (2 * n + 4 * d_attn * s)
  return {"prefill": pre / n_devices, "decode": dec / n_devices}
