"""A tiny model trained to reproduce canonical HumanEval solutions scores
pass@1 > 0 through generation (KV cache, stop sequences) and the sandbox,
from a merged mixture too, and through the evaluator the pipeline's stages
use (`merging.generative.GenerativeEvaluator` around the row-NLL
`MixtureEvaluator`; test_generative_search runs it in the search stage)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from demix_jax import models
from demix_jax.evals import benchmarks
from demix_jax.evals import generation
from demix_jax.evals import sandbox
from demix_jax.evals import tasks
from demix_jax.merging import engine
from demix_jax.merging import evaluator as evaluator_lib
from demix_jax.merging import generative
from demix_jax.merging import methods
from demix_jax.merging import store as store_lib
from tests import kit

IDS = ("HumanEval/23", "HumanEval/45", "HumanEval/53")  # the shortest
CFG = kit.tiny_model(
    vocab_size=260,
    d_model=64,
    n_heads=4,
    n_kv_heads=2,
    d_ff=128,
    tie_embeddings=False,
)


class Bytes:
  eos_id, pad_id = 1, 0

  def encode(self, text):
    return [b + 2 for b in text.encode("utf-8")]

  def decode(self, ids):
    return bytes(i - 2 for i in ids if 2 <= i < 258).decode("utf-8", "replace")


def _train(items, steps=100, t=288):
  """Fits prompt -> canonical solution + closing fence + EOS."""
  codec = Bytes()
  x = np.zeros((len(items), t), np.int32)
  seg, pos = np.zeros_like(x), np.zeros_like(x)
  w = np.zeros(x.shape, np.float32)
  for r, it in enumerate(items):
    p = codec.encode(it.prompt)
    ids = p + codec.encode(it.reference + "\n```\n") + [codec.eos_id]
    x[r, : len(ids)], seg[r, : len(ids)] = ids, 1
    pos[r, : len(ids)] = np.arange(len(ids))
    w[r, len(p) - 1 : len(ids) - 1] = 1.0  # loss on the completion only
  x, seg, pos, w = map(jnp.asarray, (x, seg, pos, w))
  params = models.init_params(CFG, jax.random.key(0))
  opt = optax.adam(3e-3)
  state = opt.init(params)

  @jax.jit
  def step(p, s):
    def loss(p):
      lg = models.forward(CFG, p, x, pos, seg)
      nll = optax.softmax_cross_entropy_with_integer_labels(
          lg[:, :-1], x[:, 1:]
      )
      return (nll * w[:, :-1]).sum() / w.sum()

    val, g = jax.value_and_grad(loss)(p)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s, val

  for _ in range(steps):
    params, state, val = step(params, state)
  return params, float(val)


@pytest.mark.slow
def test_trained_tiny_model_passes_through_generation_and_sandbox():
  items = [i for i in tasks.read_gen_items("humaneval") if i.native_id in IDS]
  params, loss = _train(items)
  assert loss < 0.1
  gen = generation.Generator(
      CFG,
      Bytes(),
      generation.GenerationConfig(
          max_new_tokens=40,
          batch_size=4,
          steps_per_call=16,
          max_prompt_tokens=512,
          mixtures_per_call=2,
      ),
  )
  limits = sandbox.SandboxLimits(timeout_s=30, cpu_s=10, workers=2)
  reqs = generation.requests_for(items, gen.cfg)
  outs = gen.generate(params, reqs)
  assert all(o[0].finish == "stop" for o in outs)  # cut at "\n```"
  score = tasks.score(items, [[o[0].text] for o in outs], limits)
  assert score.score > 0, score.reasons

  # Mixtures: the trained model merged with an untrained one.
  other = models.init_params(CFG, jax.random.key(1))
  stacked = methods.stack_params([params, other])
  by_mix = gen.generate_mixtures(
      reqs, [[1.0, 0.0], [0.0, 1.0]], stacked=stacked
  )
  assert by_mix[0] == outs
  pass1 = [
      tasks.score(items, [[o[0].text] for o in m], limits).score for m in by_mix
  ]
  assert pass1[0] == score.score and pass1[1] == 0.0

  # The same, through the stages' evaluator: rows scored by the engine,
  # the merge of each chunk decoded, programs run, domain/code averaged.
  suite = benchmarks.build_suite(
      ("humaneval",), Bytes().encode, "bytes", 288, 4, max_items=4
  )
  dm = {"code": "pass@1"}
  inner = engine.MixtureEvaluator(
      CFG,
      store_lib.ComponentStore.from_params([params, other]),
      suite,
      chunk_size=2,
      domain_metrics=generative.nll_domain_metrics(dm),
  )
  ev = generative.GenerativeEvaluator(
      inner,
      Bytes(),
      {"humaneval": items},
      domain_metrics=dm,
      generation=gen.cfg,
      sandbox=limits,
  )
  assert "humaneval/pass@1" in ev.targets and "humaneval/bpb" in ev.targets
  s = ev.evaluate(np.array([[1.0, 0.0], [0.0, 1.0]]))
  np.testing.assert_array_equal(s["humaneval/pass@1"], pass1)
  np.testing.assert_array_equal(s["domain/code"], pass1)
  # Its bits per byte are the plain evaluator's.
  np.testing.assert_array_equal(
      s["humaneval/bpb"],
      inner.evaluate(np.array([[1.0, 0.0], [0.0, 1.0]]))["humaneval/bpb"],
  )
  one = ev.evaluate_params(params)
  assert one["humaneval/pass@1"] == score.score > 0
  assert ev.generation_stats()["models"] == 3
  # Both implement the stages' Evaluator protocol; the loss barriers read
  # the row-NLL one inside.
  assert isinstance(ev, evaluator_lib.Evaluator)
  assert isinstance(inner, evaluator_lib.Evaluator)
  assert ev.row_nll_evaluator() is inner
  assert inner.row_nll_evaluator() is inner
  assert inner.generation_stats() == {}
  assert ev.store is inner.store and ev.suite is inner.suite
