"""KV-cache decoding equals full re-forward decoding, token for token.

The parity model is trained for a few seconds on counting sequences
(x_{t+1} = x_t + step mod 59), so its next-token distributions are peaked
and argmax is decided by clear margins (checked), not by float noise.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from demix_jax import models
from demix_jax.models import decode
from tests import kit

CFG = kit.tiny_model(vocab_size=61, n_heads=4, n_kv_heads=2, head_dim=8)
P, N = 8, 12
LENGTHS = np.array([3, 7, 5, 1, 8], np.int32)  # left-padded to P


def random_params(cfg, seed):
  """N(0, 0.02) weights and unit norm scales, shaped like `init_params`
  (built in numpy: flax's init is slow on a busy CPU)."""
  shapes = jax.eval_shape(lambda: models.init_params(cfg, jax.random.key(0)))
  rng = np.random.default_rng(seed)

  def leaf(path, s):
    if "scale" in jax.tree_util.keystr(path):
      return np.ones(s.shape, s.dtype)
    return (0.02 * rng.standard_normal(s.shape)).astype(s.dtype)

  return jax.tree_util.tree_map_with_path(leaf, shapes)


def _counting(rng, n, t):
  start = rng.integers(0, 59, size=(n, 1))
  step = rng.integers(1, 4, size=(n, 1))
  return ((start + step * np.arange(t)[None]) % 59 + 2).astype(np.int32)


@pytest.fixture(scope="module")
def trained():
  params = random_params(CFG, 0)
  opt = optax.adam(1e-2)
  state = opt.init(params)
  b, t = 16, 16
  pos = jnp.broadcast_to(jnp.arange(t), (b, t))
  seg = jnp.ones((b, t), jnp.int32)

  @jax.jit
  def step(p, s, x):
    def loss(p):
      lg = models.forward(CFG, p, x, pos, seg)
      return optax.softmax_cross_entropy_with_integer_labels(
          lg[:, :-1], x[:, 1:]
      ).mean()

    val, g = jax.value_and_grad(loss)(p)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s, val

  rng = np.random.default_rng(0)
  for _ in range(80):
    params, state, val = step(params, state, jnp.asarray(_counting(rng, b, t)))
  assert float(val) < 1.5, f"tiny model did not train (loss {float(val)})"
  return params


def _prompts(seed=1):
  seqs = _counting(np.random.default_rng(seed), len(LENGTHS), P)
  prompts = np.zeros((len(LENGTHS), P), np.int32)
  for b, n in enumerate(LENGTHS):
    prompts[b, P - n :] = seqs[b, :n]
  return prompts


def _keys(b, seed=0):
  return jax.random.split(jax.random.key(seed), b)


_PREFILL = jax.jit(decode.prefill, static_argnums=(0, 5))
_STEPS = jax.jit(decode.decode_steps, static_argnums=(0, 3, 4))


def _kv_decode(params, prompts, lengths, sampling, n=N, chunk=None):
  st = _PREFILL(
      CFG,
      params,
      jnp.asarray(prompts),
      jnp.asarray(lengths),
      _keys(len(lengths)),
      n,
  )
  for _ in range(n // (chunk or n)):
    st = _STEPS(CFG, params, st, chunk or n, sampling)
  return st


def _naive_greedy(params, prompts, lengths, n=N):
  """Argmax decoding by re-running the full forward at every step."""
  b = len(lengths)
  s = P + n
  toks = np.zeros((b, s), np.int32)
  toks[:, :P] = prompts
  fwd = jax.jit(lambda t, q, g: models.forward(CFG, params, t, q, g))
  logits = []
  for i in range(n):
    cur = P + i
    segs = np.zeros((b, s), np.int32)
    pos = np.zeros((b, s), np.int32)
    for r, ln in enumerate(lengths):
      segs[r, P - ln : cur] = 1
      pos[r, P - ln : cur] = np.arange(cur - (P - ln))
    lg = np.asarray(fwd(toks, pos, segs))[:, cur - 1]
    toks[:, cur] = lg.argmax(-1)
    logits.append(lg)
  return toks[:, P:], np.stack(logits, 1)


def test_cached_forward_equals_forward_on_left_padded_rows():
  params = random_params(CFG, 3)
  prompts = _prompts()
  offsets = P - LENGTHS
  s = P + 4
  segs = (np.arange(s)[None] >= offsets[:, None]).astype(np.int32)
  pos = np.maximum(np.arange(P)[None] - offsets[:, None], 0)
  shape = (CFG.n_layers, len(LENGTHS), s, CFG.n_kv_heads, CFG.head_dim)
  cache = (jnp.zeros(shape), jnp.zeros(shape))
  got, (k, _) = jax.jit(decode.forward_cached, static_argnums=0)(
      CFG, params, prompts, pos, segs, cache, jnp.int32(0)
  )
  want = models.forward(CFG, params, prompts, pos, segs[:, :P])
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
  assert np.all(np.asarray(k[:, :, P:]) == 0)  # unwritten slots untouched


def test_kv_cache_greedy_equals_naive_reforward(trained):
  prompts = _prompts()
  want, want_logits = _naive_greedy(trained, prompts, LENGTHS)
  top2 = np.sort(want_logits, -1)[..., -2:]
  assert np.min(top2[..., 1] - top2[..., 0]) > 1e-3  # no near-ties
  st = _kv_decode(trained, prompts, LENGTHS, decode.Sampling(eos_id=-1))
  np.testing.assert_array_equal(np.asarray(st.tokens), want)
  assert int(st.steps) == N and int(st.index) == P + N
  # The model learned the task: rows continue their counting sequence.
  assert len({tuple(r) for r in want}) == len(LENGTHS)


def test_decoding_in_chunks_equals_one_call(trained):
  prompts = _prompts(2)
  samp = decode.Sampling(eos_id=-1)
  one = _kv_decode(trained, prompts, LENGTHS, samp)
  chunked = _kv_decode(trained, prompts, LENGTHS, samp, chunk=3)
  np.testing.assert_array_equal(one.tokens, chunked.tokens)


def test_eos_ends_a_row_and_pads_it(trained):
  prompts = _prompts()
  free = np.asarray(
      _kv_decode(trained, prompts, LENGTHS, decode.Sampling(eos_id=-1)).tokens
  )
  eos = int(free[0, 2])
  st = _kv_decode(trained, prompts, LENGTHS, decode.Sampling(eos_id=eos))
  toks = np.asarray(st.tokens)
  first = int(np.argmax(free[0] == eos))
  np.testing.assert_array_equal(toks[0, : first + 1], free[0, : first + 1])
  assert np.all(toks[0, first + 1 :] == 0) and bool(st.done[0])
  for r in range(1, len(LENGTHS)):
    if eos not in free[r]:
      np.testing.assert_array_equal(toks[r], free[r])


def test_padding_rows_are_done_and_change_nothing(trained):
  prompts = _prompts()
  samp = decode.Sampling(eos_id=-1)
  base = np.asarray(_kv_decode(trained, prompts, LENGTHS, samp).tokens)
  padded = np.concatenate([prompts, np.zeros((2, P), np.int32)])
  lengths = np.concatenate([LENGTHS, [0, 0]]).astype(np.int32)
  st = _kv_decode(trained, padded, lengths, samp)
  np.testing.assert_array_equal(np.asarray(st.tokens)[: len(LENGTHS)], base)
  assert np.all(np.asarray(st.tokens)[len(LENGTHS) :] == 0)


def test_sampling_is_seeded_and_top1_is_greedy(trained):
  prompts = _prompts()
  hot = decode.Sampling(temperature=5.0, eos_id=-1)
  a = np.asarray(_kv_decode(trained, prompts, LENGTHS, hot).tokens)
  b = np.asarray(_kv_decode(trained, prompts, LENGTHS, hot).tokens)
  np.testing.assert_array_equal(a, b)
  greedy = _kv_decode(trained, prompts, LENGTHS, decode.Sampling(eos_id=-1))
  assert not np.array_equal(a, np.asarray(greedy.tokens))
  top1 = dataclasses.replace(hot, top_k=1)
  c = _kv_decode(trained, prompts, LENGTHS, top1)
  np.testing.assert_array_equal(c.tokens, greedy.tokens)


@pytest.mark.parametrize("chunk", [2, 4])
def test_prefill_in_chunks_equals_one_piece(chunk):
  # The prompt run `chunk` tokens at a time writes the same cache and
  # leaves the same next-token logits as one piece of P tokens.
  params = random_params(CFG, 3)
  prompts, lengths = jnp.asarray(_prompts()), jnp.asarray(LENGTHS)
  keys = _keys(len(LENGTHS))
  one = decode.prefill(CFG, params, prompts, lengths, keys, N, chunk=P)
  parts = decode.prefill(CFG, params, prompts, lengths, keys, N, chunk=chunk)
  for a, b in (
      (one.cache_k, parts.cache_k),
      (one.cache_v, parts.cache_v),
      (one.logits, parts.logits),
  ):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  with pytest.raises(ValueError, match="does not divide"):
    decode.prefill(CFG, params, prompts, lengths, keys, N, chunk=3)


def test_prefill_chunk_divides_the_prompt():
  assert decode.prefill_chunk(7168) == 512
  assert decode.prefill_chunk(64) == 64
  assert decode.prefill_chunk(768) == 384
  assert 7000 % decode.prefill_chunk(7000) == 0
