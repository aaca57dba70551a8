"""Batched merge + evaluate: score many mixtures per compiled call.

For a mixture alpha (one weight per component), the proxy model is the merge
of the stacked components (DeMix Eq. 6 for the default linear method). The
evaluator never writes a merged model anywhere: the merged weights are formed
on device inside one compiled function, which returns the summed NLL of every
logical evaluation row (`demix_jax.evals.rows`: one (context, continuation)
pair or held-out sequence, run packed several to a row and summed per pair,
`merging.nll`) for a chunk of mixtures; every
target (accuracy, bits per byte, loss, domain scores) is then computed from
those sums (`demix_jax.evals.scoring`).

Layout of one compiled call (`chunk` mixtures, R rows in batches of B):

  vmap over the chunk's mixtures (axis sharded over `mixtures` devices)
    merge the non-layer leaves (embedding, final norm, head) -> one copy
    scan over row batches
      model forward with `layer_transform`: inside the layer scan each
      [K, ...] layer slice is merged to one layer, used, and dropped, so at
      most one merged layer per mixture of the chunk is live at a time.

The host loops over fixed-size chunks (the last one padded), so M only sets
the number of calls: one compilation serves the whole search and peak memory
is set by the chunk size, not by M (on CPU small chunks are as fast as a
full vmap and far smaller: docs/platform_notes.md, cpu-chunks).

Linear merging is the fast path above. Other methods (TIES, DARE, ...) merge
the whole tree once per mixture and chunk (`merge_in_forward=False`), which
avoids redoing their per-tensor sorts for every row batch at the cost of one
merged model per mixture in the chunk.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from demix_jax import multihost
from demix_jax.evals import rows as rows_lib
from demix_jax.evals import scoring
from demix_jax.merging import methods
from demix_jax.merging import nll as nll_lib
from demix_jax.merging import objective as objective_lib
from demix_jax.merging import store as store_lib
from demix_jax.models import attention as attention_lib
from demix_jax.models import transformer

Params = Any
# Keys of `EvalSuite.batched()` that are not per row batch (not scanned).
_UNSCANNED = ("slots", "pair_slot")


def _axes_size(mesh: Mesh, entry) -> int:
  if entry is None:
    return 1
  entries = (entry,) if isinstance(entry, str) else tuple(entry)
  return math.prod(mesh.shape[e] for e in entries)


def _abstract(tree: Any) -> Any:
  """Shapes, dtypes and shardings of arrays (ShapeDtypeStructs kept)."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(
          x.shape, x.dtype, sharding=getattr(x, "sharding", None)
      ),
      tree,
  )


def _rule(rules, name: str):
  for k, v in rules or ():
    if k == name:
      return v
  return None


class MixtureEvaluator:
  """Scores mixtures of the stored components on an evaluation suite.

  Attributes:
    chunk: mixtures per compiled call (a multiple of the mixture shards).
    targets: names of every target `evaluate` returns.
  """

  def __init__(
      self,
      model_cfg: transformer.ModelConfig,
      store: store_lib.ComponentStore,
      suite: rows_lib.EvalSuite,
      *,
      spec: methods.MergeSpec = methods.LINEAR,
      chunk_size: int = 8,
      mesh: Mesh | None = None,
      rules: Sequence[tuple[str, Any]] = (),
      domain_metrics: Mapping[str, str] | None = None,
      merge_in_forward: bool | None = None,
      vmap_width: int = 1,
  ):
    """Builds the evaluator (compiles lazily, once, on the first call).

    Args:
      model_cfg: the components' model config.
      store: the stacked components (and base).
      suite: the evaluation rows.
      spec: merge method (default linear).
      chunk_size: mixtures per compiled call (rounded up to a multiple of
        the devices the `mixtures` rule shards over).
      mesh: optional mesh; mixtures are sharded over the `mixtures` rule.
      rules: logical axis rules (with `mesh`).
      domain_metrics: {domain: metric} for the domain scores.
      merge_in_forward: merge layer by layer inside the forward (default:
        True for linear, False otherwise).
      vmap_width: mixtures vmapped together inside a device's part of the
        chunk (`lax.map(..., batch_size=vmap_width)` loops over the rest).
        1 (a sequential loop) suits CPU (docs/platform_notes.md); larger widths
        feed bigger matmuls to accelerators.
    """
    if chunk_size <= 0:
      raise ValueError(f"merge.chunk_size must be positive, got {chunk_size}")
    if spec.needs_base and store.base is None:
      raise ValueError(f"merge method {spec.method!r} needs the base model")
    self.cfg = model_cfg
    self.store = store
    self.suite = suite
    self.spec = spec
    self.mesh = mesh
    self.rules = tuple(rules)
    self.domain_metrics = dict(domain_metrics or {})
    self.merge_in_forward = (
        spec.method == "linear"
        if merge_in_forward is None
        else merge_in_forward
    )
    self.targets = scoring.target_names(suite, self.domain_metrics)
    shards, mix_entry, batch_entry = 1, None, None
    if mesh is not None:
      mix_entry = _rule(self.rules, "mixtures")
      batch_entry = _rule(self.rules, "batch")
      shards = _axes_size(mesh, mix_entry)
    self.chunk = -(-chunk_size // shards) * shards
    self.shards = shards
    if vmap_width <= 0:
      raise ValueError(f"vmap_width must be positive, got {vmap_width}")
    self.vmap_width = min(vmap_width, self.chunk // shards)
    # Rows go to the devices on first use (`_device_rows`), not here, so an
    # evaluator over an abstract store can be lowered for devices that hold
    # no arrays (`lower_chunk`).
    self._host_rows = suite.batched()
    self._on_device: dict[str, Any] = {}
    if mesh is not None:
      self._alpha_sharding = NamedSharding(mesh, P(mix_entry, None))
      self._out_sharding = NamedSharding(mesh, P(mix_entry, None))
      self._local_sharding = NamedSharding(mesh, P(mix_entry, None, None))
      self._rows_sharding = NamedSharding(mesh, P())
      bsz = suite.batch_size
      row_entry = (
          batch_entry if bsz % _axes_size(mesh, batch_entry) == 0 else None
      )
      self._param_rows_sharding = NamedSharding(mesh, P(None, row_entry))
    else:
      self._alpha_sharding = self._out_sharding = None
      self._local_sharding = None
      self._rows_sharding = self._param_rows_sharding = None
    self._chunk_fn = jax.jit(self._chunk_impl)
    self._params_fn = jax.jit(self._rows_of_params)
    self._objectives: dict[Any, Callable] = {}

  # ------------------------------------------------------------ compiled

  def _rows(self, params, layer_transform, batches) -> jax.Array:
    """[R] row NLLs of one model over all row batches (a scan).

    `batches` is `EvalSuite.batched()`: with `slot_ids`, `slots` and
    `pair_slot` (packed rows) each row is summed per slot and the slots
    are mapped back to the logical rows; without them (unpacked rows, and
    the objective's subsets) each row is one sum.
    """
    cfg = self.cfg
    packed = "pair_slot" in batches
    scanned = {k: v for k, v in batches.items() if k not in _UNSCANNED}

    def body(carry, b):
      if cfg.loss_chunk:  # no [B, T, V] logits (models.memory)
        tok = nll_lib.chunked_token_nll(cfg, params, layer_transform, b)
        slot = nll_lib.shift_left(b["slot_ids"]) if packed else None
      else:
        logits = transformer.forward(
            cfg,
            params,
            b["tokens"],
            b["positions"],
            b["segment_ids"],
            layer_transform=layer_transform,
        )
        tok = nll_lib.token_nll(logits, b["tokens"], b["target_mask"])
        slot = b["slot_ids"][:, 1:] if packed else None
      if packed:
        return carry, nll_lib.slot_sums(tok, slot, batches["slots"])
      return carry, jnp.sum(tok, axis=-1)

    _, out = jax.lax.scan(body, None, scanned)
    if packed:
      return nll_lib.pair_sums(out.reshape(-1), batches["pair_slot"])
    return out.reshape(-1)

  def _rows_of_params(self, params, batches):
    # Splash (TPU) needs a shard_map, and this trace has no mesh set: name
    # ours, rows split over the batch rule (see attention.shard_rows). A
    # context only splash reads; the XLA and cuDNN paths ignore it.
    with attention_lib.shard_rows(
        self.mesh, _rule(self.rules, "batch"), fold_vmapped=False
    ):
      return self._rows(params, None, batches)

  def _differentiable_rows(self, alpha, stacked, base, batches):
    # The gradient objective: splash sharded over the batch rule, with no
    # vmap folding (custom_vmap has no reverse-mode rule).
    with attention_lib.shard_rows(
        self.mesh, _rule(self.rules, "batch"), fold_vmapped=False
    ):
      return self._rows_of_mixture(alpha, stacked, base, batches)

  def _rows_of_mixture(self, alpha, stacked, base, batches) -> jax.Array:
    """[R] row NLLs of the merge of one mixture."""
    spec = self.spec
    if not self.merge_in_forward:
      merged = store_lib.merge_stacked(spec, stacked, base, alpha)
      return self._rows(merged, None, batches)
    params = store_lib.merge_outer(spec, stacked, base, alpha)
    n_layers = jax.tree.leaves(stacked[store_lib.LAYERS])[0].shape[0]
    params[store_lib.LAYERS] = {
        "stack": stacked[store_lib.LAYERS],
        "base": None if base is None else base[store_lib.LAYERS],
        "index": jnp.arange(n_layers, dtype=jnp.int32),
    }

    def layer_transform(sl):
      return store_lib.merge_layer(
          spec, stacked, sl["stack"], sl["base"], sl["index"], alpha
      )

    return self._rows(params, layer_transform, batches)

  def _chunk_impl(self, alphas, stacked, base, batches):
    # Splash folds the vmapped mixtures into its rows and runs one
    # shard_map over the mixture axes (attention.shard_rows).
    with attention_lib.shard_rows(self.mesh, _rule(self.rules, "mixtures")):
      return self._chunk_body(alphas, stacked, base, batches)

  def _chunk_body(self, alphas, stacked, base, batches):
    # [C, K] -> [shards, C / shards, K]: the shard axis is vmapped (and
    # sharded over the mixture devices); each device loops over its part,
    # vmap_width mixtures at a time.
    c, k = alphas.shape
    local = alphas.reshape(self.shards, c // self.shards, k)
    if self._alpha_sharding is not None:
      local = jax.lax.with_sharding_constraint(local, self._local_sharding)

    def one(a):
      return self._rows_of_mixture(a, stacked, base, batches)

    def per_shard(a_local):
      # lax.map with batch_size vmaps even at width 1, and size-1 batched
      # matmuls are slower on XLA:CPU than plain ones: a plain map at 1.
      if self.vmap_width == 1:
        return jax.lax.map(one, a_local)
      return jax.lax.map(one, a_local, batch_size=self.vmap_width)

    if self.shards == 1:
      out = per_shard(local[0])
    else:
      out = jax.vmap(per_shard)(local)
    out = out.reshape(c, -1)
    if self._out_sharding is not None:
      out = jax.lax.with_sharding_constraint(out, self._out_sharding)
    return out

  def _device_rows(self, kind: str):
    """The row batches on device: "mixtures" (replicated) or "params"
    (split over the batch rule, for one model's forward)."""
    if kind not in self._on_device:
      if self.mesh is None:  # one copy on the default device serves both
        rows = jax.device_put(self._host_rows)
        self._on_device = {"mixtures": rows, "params": rows}
      else:
        sh = {  # 1-d index arrays are replicated
            k: (
                self._param_rows_sharding
                if kind == "params" and k not in _UNSCANNED
                else self._rows_sharding
            )
            for k in self._host_rows
        }
        self._on_device[kind] = jax.device_put(self._host_rows, sh)
    return self._on_device[kind]

  def lower_chunk(self) -> jax.stages.Lowered:
    """The per-chunk program of `evaluate_nll`, lowered on abstract inputs.

    Every argument is a `jax.ShapeDtypeStruct` carrying its sharding; no
    array is read or placed (the store may itself hold ShapeDtypeStructs,
    see `ComponentStore.abstract`). That is what lets the compile check
    measure a model that does not fit this host, and compile for the
    devices of a compile-only topology (`jax.experimental.topologies`).
    Call `.compile()` on the result.
    """
    alphas = jax.ShapeDtypeStruct(
        (self.chunk, self.store.k), jnp.float32, sharding=self._alpha_sharding
    )
    rows = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            x.shape,
            jax.dtypes.canonicalize_dtype(x.dtype),
            sharding=self._rows_sharding,
        ),
        self._host_rows,
    )
    return self._chunk_fn.lower(
        alphas, _abstract(self.store.stacked), _abstract(self.store.base), rows
    )

  # ---------------------------------------------------------------- API

  def row_nll_evaluator(self) -> MixtureEvaluator:
    """Itself: every target here comes from the row NLLs."""
    return self

  def generation_stats(self) -> dict[str, float]:
    """{}: this evaluator generates no text."""
    return {}

  def _check_alphas(self, alphas) -> np.ndarray:
    a = np.asarray(alphas, np.float32)
    if a.ndim == 1:
      a = a[None]
    k = self.store.k
    if a.ndim != 2 or a.shape[1] != k:
      raise ValueError(
          f"alphas must be [M, {k}] (one weight per component "
          f"{self.store.names}), got shape {a.shape}"
      )
    if not np.all(np.isfinite(a)) or np.any(a < 0):
      raise ValueError("alphas must be finite and non-negative")
    if np.any(a.sum(1) <= 0):
      raise ValueError("every mixture needs a positive weight sum")
    return a

  def evaluate_nll(
      self, alphas, progress: Callable[[int, int], None] | None = None
  ) -> np.ndarray:
    """Row NLL sums of every mixture.

    Args:
      alphas: [M, K] mixture weights (each row normalised by the merge,
        except for methods that use weights as given, see
        `methods.MergeSpec.normalize`).
      progress: optional callback(done, total) after each chunk.

    Returns:
      float32 [M, R].
    """
    a = self._check_alphas(alphas)
    m, c = a.shape[0], self.chunk
    out = np.zeros((m, self.suite.n_rows), np.float32)
    for start in range(0, m, c):
      part = a[start : start + c]
      n = part.shape[0]
      if n < c:  # pad with a valid mixture; results dropped
        part = np.concatenate([part, np.repeat(part[:1], c - n, 0)])
      x = (
          jax.device_put(part, self._alpha_sharding)
          if self._alpha_sharding is not None
          else jnp.asarray(part)
      )
      res = self._chunk_fn(
          x,
          self.store.stacked,
          self.store.base,
          self._device_rows("mixtures"),
      )
      # np.asarray blocks on every call: back-to-back dispatch can deadlock
      # XLA:CPU collectives with many fake devices (docs/platform_notes.md).
      # to_numpy gathers the mixture shards held by other hosts.
      out[start : start + n] = multihost.to_numpy(res)[:n]
      if progress is not None:
        progress(min(start + c, m), m)
    return out

  def evaluate(self, alphas, progress=None) -> dict[str, np.ndarray]:
    """Every target for every mixture.

    Args:
      alphas: [M, K] mixture weights.
      progress: optional callback(done, total).

    Returns:
      {target name: float64 [M]}; names in `self.targets`.
    """
    nll = self.evaluate_nll(alphas, progress)
    return scoring.score_rows(nll, self.suite, self.domain_metrics)

  def evaluate_params_nll(self, params: Params) -> np.ndarray:
    """Row NLL sums [R] of one already-merged (or trained) model."""
    return multihost.to_numpy(
        self._params_fn(params, self._device_rows("params"))
    )

  def evaluate_params(self, params: Params) -> dict[str, float]:
    """Every target for one model (the final run, baselines, components)."""
    s = scoring.score_rows(
        self.evaluate_params_nll(params), self.suite, self.domain_metrics
    )
    return {k: float(v) for k, v in s.items()}

  def make_objective(
      self, targets: Sequence[str] | Mapping[str, float] | None = None
  ) -> objective_lib.BoundObjective:
    """A jitted, differentiable objective alpha [K] -> scalar (minimise).

    The objective is sum_t c_t * target_t(alpha) over bits-per-byte or loss
    targets (which are linear in the row NLLs, so the value equals what
    `evaluate` reports for them). Gradients flow through the merge into
    alpha (the linear merge normalises alpha by its sum first). Cached per
    target set, so a search asking again reuses the compiled program.

    Args:
      targets: names (equal weights 1/n) or {name: weight}. Default: the
        mean over domains present of `domain/<d>` (all bpb by default), plus
        nothing else; if the suite has no benchmarks, "heldout/bpb".

    Returns:
      f(alpha) -> float32 scalar; lower is better.
    """
    targets = objective_lib.target_weights(
        targets, self.targets, self.domain_metrics
    )
    key = tuple(sorted(targets.items()))
    if key not in self._objectives:
      self._objectives[key] = objective_lib.bind(
          self._differentiable_rows,
          self.store,
          self.suite,
          targets,
          self.domain_metrics,
          self.mesh,
      )
    return self._objectives[key]
