"""Generation driver: stops, limits, batching, seeded samples, mixtures."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from demix_jax import models
from demix_jax.evals import generation
from demix_jax.evals import tasks
from demix_jax.merging import methods
from demix_jax.training import sharding
from tests import kit

# Untied: a tied random model just repeats its input.
CFG = kit.tiny_model(
    vocab_size=260, n_heads=4, n_kv_heads=2, head_dim=8, tie_embeddings=False
)


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


class Bytes:
  """One token per UTF-8 byte (ids 2..257); 1 = EOS, 0 = padding."""

  eos_id, pad_id = 1, 0

  def encode(self, text):
    return [b + 2 for b in text.encode("utf-8")]

  def decode(self, ids):
    return bytes(i - 2 for i in ids if 2 <= i < 258).decode("utf-8", "replace")


_GENERATORS = {}


def _gen(**kw):
  """A shared Generator per setting (each compiles its kernels once)."""
  base = dict(max_new_tokens=8, batch_size=4, prompt_bucket=8, steps_per_call=4)
  base.update(kw)
  key = tuple(sorted(base.items()))
  if key not in _GENERATORS:
    _GENERATORS[key] = generation.Generator(
        CFG, Bytes(), generation.GenerationConfig(**base)
    )
  return _GENERATORS[key]


@pytest.fixture(scope="module")
def components():
  return [random_params(CFG, i) for i in range(2)]


REQS = [
    generation.Request("def f(x):", (), 8),
    generation.Request("a", (), 8),
    generation.Request("The answer is", (), 8),
    generation.Request("xyz" * 5, (), 8),
    generation.Request("q", (), 8),
]


def test_token_limits_per_request(components):
  reqs = [REQS[0], generation.Request("a", (), 3), REQS[2]]
  out = _gen().generate(components[0], reqs)
  assert [len(o) for o in out] == [1] * len(reqs)
  for req, (c,) in zip(reqs, out):
    assert c.finish in ("length", "eos")
    if c.finish == "length":
      assert c.n_tokens == req.max_new_tokens
  # The config caps every request's own limit.
  capped = generation.requests_for(
      tasks.read_gen_items("gsm8k", max_items=1),
      generation.GenerationConfig(max_new_tokens=3),
  )
  assert capped[0].max_new_tokens == 3


def test_stop_sequence_cuts_and_ends(components):
  free = _gen().generate(components[0], REQS[:1])[0][0].text
  assert len(free) >= 4
  stop = free[2:4]
  cut = free[: free.index(stop)]
  req = generation.Request(REQS[0].prompt, (stop,), 8)
  c = _gen().generate(components[0], [req])[0][0]
  assert c.text == cut and c.finish == "stop"


def test_batching_and_bucketing_do_not_change_results(components):
  a = _gen(batch_size=2).generate(components[0], REQS)
  b = _gen(prompt_bucket=32).generate(components[0], REQS)
  assert [[x.text for x in r] for r in a] == [[x.text for x in r] for r in b]


def test_sampling_is_seeded_per_request_and_sample(components):
  kw = dict(temperature=2.0, num_samples=3)
  a = _gen(batch_size=2, seed=7, **kw).generate(components[0], REQS)
  b = _gen(batch_size=4, seed=7, **kw).generate(components[0], REQS)
  assert a == b and all(len(r) == 3 for r in a)
  assert len({c.text for c in a[0]}) > 1  # samples differ
  c = _gen(batch_size=4, seed=8, **kw).generate(components[0], REQS)
  assert c != a


def test_mixtures_batched_equal_merging_one_at_a_time(components):
  stacked = methods.stack_params(components)
  alphas = [[1.0, 0.0], [0.0, 1.0], [0.3, 0.7]]
  gen = _gen(mixtures_per_call=2)
  many = gen.generate_mixtures(REQS, alphas, stacked=stacked)
  one = [
      gen.generate(methods.linear(stacked, jnp.asarray(a)), REQS)
      for a in alphas
  ]
  assert many == one
  assert many[0] == gen.generate(components[0], REQS)
  assert many[0] != many[1]
  by_fn = gen.generate_mixtures(
      REQS, alphas, params_for=lambda a: methods.linear(stacked, a)
  )
  assert by_fn == one
  assert gen.tokens_generated > 0


def test_requests_for_benchmark_items():
  items = tasks.read_gen_items("minerva_math", max_items=2)
  cfg = generation.GenerationConfig(max_new_tokens=600)
  reqs = generation.requests_for(items, cfg)
  assert [r.max_new_tokens for r in reqs] == [600, 600]
  assert reqs[0].stop == items[0].stop and reqs[0].prompt == items[0].prompt


@pytest.mark.parametrize(
    "kw",
    [dict(batch_size=0), dict(temperature=-1.0), dict(num_samples=2)],
)
def test_config_validation(kw):
  with pytest.raises(ValueError):
    generation.GenerationConfig(**kw)


def test_rows_split_over_a_mesh_change_nothing(components):
  # The pipeline's Generator gets the store's mesh and rules: rows go to
  # the devices of the `batch` rule (sampled, so the keys travel too).
  mesh = sharding.create_mesh({"data": 2, "fsdp": 2}, jax.devices()[:4])
  rules = (("batch", ("data", "fsdp")),)
  kw = dict(temperature=2.0, num_samples=2)
  cfg = generation.GenerationConfig(
      max_new_tokens=8, batch_size=4, prompt_bucket=8, steps_per_call=4, **kw
  )
  gen = generation.Generator(CFG, Bytes(), cfg, mesh=mesh, rules=rules)
  assert gen.rows_sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
  stacked = methods.stack_params(components)
  alphas = [[1.0, 0.0], [0.3, 0.7]]
  ref = _gen(**kw).generate_mixtures(REQS, alphas, stacked=stacked)
  on_mesh = jax.device_put(
      stacked, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  )
  assert gen.generate_mixtures(REQS, alphas, stacked=on_mesh) == ref
  # Rows that do not divide over the devices stay replicated.
  odd = generation.row_sharding(mesh, rules, 6)
  assert odd.spec == jax.sharding.PartitionSpec()
  assert generation.row_sharding(None, rules, 4) is None
