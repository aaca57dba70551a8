"""Text generation from (merged) proxies: batched, KV-cached, jitted.

  gen = Generator(model_cfg, vocab, GenerationConfig(...))
  outs = gen.generate(params, requests)                 # one model
  outs = gen.generate_mixtures(requests, alphas, stacked=stacked_params)

`requests` are `Request(prompt, stop, max_new_tokens)` (`requests_for`
makes them from `tasks.GenItem`s: the benchmark's stop sequences and token
limit, capped by `GenerationConfig.max_new_tokens`). Each request yields
`num_samples` `Completion`s (text cut at the first stop sequence, the
number of generated tokens, and why it ended).

How it runs: requests x samples become rows; rows with the same token
limit are batched `batch_size` at a time (short batches padded with empty
rows), prompts are LEFT-padded to a multiple of `prompt_bucket` (see
`models.decode` for why left) and cut from the left to `max_prompt_tokens`.
`models.decode.prefill` and `decode_steps` are jitted once per (batch,
prompt length, token limit) shape; the host decodes `steps_per_call`
tokens per call, then checks the stop strings of the unfinished rows on
the decoded text and marks rows done, until every row is done or the
limit is reached. EOS ends a row on device.

Mixtures: `generate_mixtures` merges once per chunk of `mixtures_per_call`
mixtures (`merge(stacked, alpha)`, default the linear merge
`merging.methods.linear`, vmapped over the chunk inside one jit), then
decodes the whole chunk under `jax.vmap` (the mixture axis leads the
params and the state; prompts and sampling keys are shared, so mixtures
are compared on common random numbers). `params_for(alpha)` instead gives
one merged params pytree per mixture, decoded one at a time.

Sampling (temperature > 0) is seeded per (request, sample): row keys are
`fold_in(fold_in(key(seed), request index), sample index)`, so results do
not depend on the batching.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Protocol, Sequence, cast

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from demix_jax import multihost
from demix_jax.evals import tasks
from demix_jax.merging import methods as merge_methods
from demix_jax.models import decode
from demix_jax.models import transformer

Params = Any


class TextCodec(Protocol):
  """What generation needs of a tokenizer (`data.tokenizer.Vocab` fits)."""

  @property
  def eos_id(self) -> int:
    ...

  @property
  def pad_id(self) -> int:
    ...

  def encode(self, text: str) -> list[int]:
    ...

  def decode(self, ids: list[int]) -> str:
    ...


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
  """Generation settings (the fields of `config.eval.generation`).

  Attributes:
    max_new_tokens: cap on every request's token limit.
    temperature: 0 = greedy; > 0 samples (for pass@k).
    top_k: sample among the k most likely tokens (0 = all).
    num_samples: completions per request (pass@k needs n >= k).
    seed: sampling seed.
    batch_size: rows (request x sample) per decode call.
    max_prompt_tokens: longer prompts lose their beginning.
    prompt_bucket: padded prompt length is a multiple of this.
    steps_per_call: tokens decoded between host-side stop checks.
    mixtures_per_call: mixtures merged and decoded together.
  """

  max_new_tokens: int = 512
  temperature: float = 0.0
  top_k: int = 0
  num_samples: int = 1
  seed: int = 0
  batch_size: int = 16
  max_prompt_tokens: int = 1024
  prompt_bucket: int = 64
  steps_per_call: int = 32
  mixtures_per_call: int = 4

  def __post_init__(self):
    for name in (
        "max_new_tokens",
        "num_samples",
        "batch_size",
        "max_prompt_tokens",
        "prompt_bucket",
        "steps_per_call",
        "mixtures_per_call",
    ):
      if getattr(self, name) < 1:
        raise ValueError(f"eval.generation.{name} must be >= 1")
    if self.temperature < 0 or self.top_k < 0:
      raise ValueError("eval.generation temperature and top_k must be >= 0")
    if self.num_samples > 1 and self.temperature == 0:
      raise ValueError(
          "eval.generation.num_samples > 1 needs temperature > 0 (greedy "
          "samples are all the same)"
      )


@dataclasses.dataclass(frozen=True)
class Request:
  """One prompt to continue.

  Attributes:
    prompt: text.
    stop: stop sequences (generation ends at the first; it is cut off).
    max_new_tokens: token limit (capped by GenerationConfig).
  """

  prompt: str
  stop: tuple[str, ...] = ()
  max_new_tokens: int = 512


@dataclasses.dataclass(frozen=True)
class Completion:
  """One generated continuation.

  Attributes:
    text: decoded text, cut before the first stop sequence.
    n_tokens: tokens the device generated for it (EOS included; for the
      cost table); a row cut by a stop string counts the tokens decoded
      until the host saw it (at most `steps_per_call - 1` past the stop).
    finish: "stop", "eos" or "length".
  """

  text: str
  n_tokens: int
  finish: str


def requests_for(
    items: Sequence[tasks.GenItem], cfg: GenerationConfig
) -> list[Request]:
  """Requests for benchmark items: their stops and token limits."""
  return [
      Request(it.prompt, it.stop, min(it.max_gen_toks, cfg.max_new_tokens))
      for it in items
  ]


@functools.lru_cache(maxsize=64)
def kernels(
    cfg: transformer.ModelConfig,
    sampling: decode.Sampling,
    n_steps: int,
    limit: int,
    many: bool,
    donate: bool,
):
  """(prefill, decode_steps) jitted for these static settings, shared by
  every Generator; vmapped over a leading mixture axis of the params (and
  the state) when `many`; `donate` hands the state's buffers (the KV
  cache) to the decode call's output (not on XLA:CPU, which cannot reuse
  them). jit compiles once more per batch/prompt shape. The compile check
  (`demix_jax.aot.generate`) lowers these same functions."""

  def pre(params, prompts, lengths, keys):
    return decode.prefill(cfg, params, prompts, lengths, keys, limit)

  def steps(params, state):
    return decode.decode_steps(cfg, params, state, n_steps, sampling)

  if many:
    pre = jax.vmap(pre, in_axes=(0, None, None, None))
    steps = jax.vmap(steps)
  return jax.jit(pre), jax.jit(steps, donate_argnums=(1,) if donate else ())


@functools.lru_cache(maxsize=16)
def merge_many(merge: Callable[[Params, jax.Array], Params]):
  """`merge` vmapped over a chunk of mixtures and jitted, once per merge
  function (a new jit per call would retrace and recompile every time)."""
  return jax.jit(jax.vmap(merge, in_axes=(None, 0)))


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def row_sharding(mesh, rules, batch_size: int) -> NamedSharding | None:
  """Where a batch's rows (prompts, lengths, keys) go on a mesh: split
  over the devices of the `batch` rule when they divide `batch_size`,
  else replicated; None without a mesh. The prefill and decode programs
  follow the rows, so each device holds its rows' share of the KV cache
  and of the attention scores."""
  if mesh is None:
    return None
  entry = None
  for k, v in rules or ():
    if k == "batch":
      entry = v
  names = () if entry is None else (entry,) if isinstance(entry, str) else entry
  size = 1
  for n in names:
    size *= mesh.shape[n]
  if not names or batch_size % size:
    return NamedSharding(mesh, P())
  return NamedSharding(mesh, P(tuple(names)))


class Generator:
  """Generates from one model or from many merged mixtures.

  Args:
    model_cfg: the decoder's config.
    codec: the tokenizer (encode/decode/eos_id/pad_id).
    cfg: generation settings.
    mesh, rules: where the params live (the component store's mesh and
      logical rules); the rows are split over the `batch` rule
      (`row_sharding`). None: the default device.
  """

  def __init__(
      self,
      model_cfg: transformer.ModelConfig,
      codec: TextCodec,
      cfg: GenerationConfig = GenerationConfig(),
      mesh=None,
      rules=None,
  ):
    self.model_cfg = model_cfg
    self.codec = codec
    self.cfg = cfg
    self.rows_sharding = row_sharding(mesh, rules, cfg.batch_size)
    self.sampling = decode.Sampling(
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        eos_id=codec.eos_id,
        pad_id=codec.pad_id,
    )
    self.tokens_generated = 0

  # ---- jitted kernels (one compile per static shape) ----

  def _kernels(self, limit: int, many: bool):
    return kernels(
        self.model_cfg,
        self.sampling,
        self.cfg.steps_per_call,
        limit,
        many,
        jax.default_backend() != "cpu",
    )

  # ---- host side ----

  def _rows(self, requests: Sequence[Request]):
    """(request index, sample index, prompt ids, limit, key) per row."""
    base = jax.random.key(self.cfg.seed)
    rows = []
    for r, req in enumerate(requests):
      ids = self.codec.encode(req.prompt)[-self.cfg.max_prompt_tokens :]
      if not ids:
        raise ValueError(f"request {r}: empty prompt after tokenization")
      limit = min(req.max_new_tokens, self.cfg.max_new_tokens)
      for s in range(self.cfg.num_samples):
        key = jax.random.fold_in(jax.random.fold_in(base, r), s)
        rows.append((r, s, ids, limit, key))
    return rows

  def _batches(self, rows):
    by_limit = {}
    for row in rows:
      by_limit.setdefault(row[3], []).append(row)
    b = self.cfg.batch_size
    for limit in sorted(by_limit):
      group = by_limit[limit]
      for i in range(0, len(group), b):
        yield limit, group[i : i + b]

  def _arrays(self, batch):
    b = self.cfg.batch_size
    longest = max(len(row[2]) for row in batch)
    p = min(
        _round_up(longest, self.cfg.prompt_bucket), self.cfg.max_prompt_tokens
    )
    prompts = np.full((b, p), self.codec.pad_id, np.int32)
    lengths = np.zeros((b,), np.int32)
    keys = [jax.random.key(0)] * b
    for i, (_, _, ids, _, key) in enumerate(batch):
      prompts[i, p - len(ids) :] = ids
      lengths[i] = len(ids)
      keys[i] = key
    if self.rows_sharding is None:
      return jnp.asarray(prompts), jnp.asarray(lengths), jnp.stack(keys)
    # Every process holds the same rows (as the evaluator's rows); keys
    # travel as their uint32 data, a host array like the others.
    key_data = np.asarray(jax.random.key_data(jnp.stack(keys)))
    prompts, lengths, key_data = jax.device_put(
        (prompts, lengths, key_data), self.rows_sharding
    )
    return prompts, lengths, jax.random.wrap_key_data(key_data)

  def _finish(self, tokens: np.ndarray, stop: Sequence[str]):
    """(text, n_tokens, finish, done) of one row's tokens so far."""
    ids = [int(x) for x in tokens]
    eos = self.codec.eos_id
    if eos in ids:
      ids = ids[: ids.index(eos)]
      n, finish = len(ids) + 1, "eos"
    else:
      n, finish = len(ids), "length"
    text = self.codec.decode(ids)
    cut = tasks.truncate_at_stop(text, stop)
    if len(cut) < len(text):
      return cut, n, "stop", True
    return text, n, finish, finish == "eos"

  def _run_batch(self, params, batch, limit, stops, n_models: int, many: bool):
    """Decodes one batch; returns [model][row] Completions."""
    prefill, steps = self._kernels(limit, many)
    prompts, lengths, keys = self._arrays(batch)
    state = prefill(params, prompts, lengths, keys)
    n, shape = len(batch), (n_models, self.cfg.batch_size)
    done = np.zeros(shape, bool)
    done[:, n:] = True  # padding rows
    out: list[list[Completion | None]] = [[None] * n for _ in range(n_models)]
    while True:
      state = steps(params, state)
      # to_numpy gathers rows held by other hosts (every process decodes).
      taken = np.broadcast_to(multihost.to_numpy(state.steps), (n_models,))
      toks = multihost.to_numpy(state.tokens).reshape(shape + (-1,))
      for m in range(n_models):
        for i in range(n):
          if not done[m, i]:
            text, k, why, fin = self._finish(toks[m, i, : taken[m]], stops[i])
            if fin or taken[m] >= limit:
              done[m, i] = True
              out[m][i] = Completion(text, k, why)
      if done.all():
        break
      state = dataclasses.replace(
          state, done=jnp.asarray(done.reshape(state.done.shape))
      )
    # The loop ends once every real row is done, so every slot is filled.
    filled = cast(list[list[Completion]], out)
    self.tokens_generated += sum(c.n_tokens for row in filled for c in row)
    return filled

  def _generate(self, params, requests, many: bool, n_models: int):
    out = [
        [[None] * self.cfg.num_samples for _ in requests]
        for _ in range(n_models)
    ]
    for limit, batch in self._batches(self._rows(requests)):
      stops = [requests[row[0]].stop for row in batch]
      res = self._run_batch(params, batch, limit, stops, n_models, many)
      for m, comps in enumerate(res):
        for (r, s, *_), c in zip(batch, comps):
          out[m][r][s] = c
    return out

  def generate(
      self, params: Params, requests: Sequence[Request]
  ) -> list[list[Completion]]:
    """Completions of one model: [request][sample]."""
    return self._generate(params, requests, False, 1)[0]

  def generate_mixtures(
      self,
      requests: Sequence[Request],
      alphas,
      *,
      stacked: Params | None = None,
      merge: Callable[[Params, jax.Array], Params] | None = None,
      params_for: Callable[[np.ndarray], Params] | None = None,
  ) -> list[list[list[Completion]]]:
    """Completions of every mixture: [mixture][request][sample].

    Args:
      requests: the prompts.
      alphas: [M, K] mixture weights.
      stacked: component params with a leading [K] axis on every leaf
        (`merging.methods.stack_params`); merged per chunk on device.
      merge: (stacked, alpha [K]) -> params (default: the linear merge).
      params_for: alternatively, alpha -> merged params (one at a time).

    Returns:
      Per mixture, per request, its samples.
    """
    alphas = np.asarray(alphas, np.float32)
    if alphas.ndim != 2:
      raise ValueError(f"alphas must be [M, K], got shape {alphas.shape}")
    if (stacked is None) == (params_for is None):
      raise ValueError("give exactly one of stacked= or params_for=")
    if params_for is not None:
      return [self.generate(params_for(a), requests) for a in alphas]
    merged_chunk = merge_many(merge or merge_methods.linear)
    out = []
    c = self.cfg.mixtures_per_call
    for i in range(0, len(alphas), c):
      chunk = alphas[i : i + c]
      n = len(chunk)
      # A short last chunk repeats its last mixture: one compiled shape.
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], c - n, 0)])
      merged = merged_chunk(stacked, jnp.asarray(chunk))
      out.extend(self._generate(merged, requests, True, c)[:n])
      del merged
    return out
