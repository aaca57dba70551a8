"""Packed evaluation rows score exactly what one pair per row scores.

The same logical rows are evaluated packed (several pairs to a row,
`EvalSuite.build(pack=True)`) and unpacked (`pack=False`) by the same
evaluator code; every target of `score_rows` must agree.

Tolerance (fixed, stated once): RTOL = 1e-5 relative on every per-row NLL
sum and every target. The forward is float32 and a pair sees exactly the
tokens it sees alone (attention stays within its segment, positions restart
per pair), so only the order of float32 additions differs: the sum over a
row's slot instead of over its own row, and the attention softmax's
reductions over a longer (masked) key axis. Measured here (XLA:CPU): per-row
relative differences at most 1.4e-7, targets at most 4.7e-8, for the linear
merge, the chunked LM head and TIES alike. Accuracies, which are argmaxes,
agree exactly.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from demix_jax.evals import rows
from demix_jax.evals import scoring
from demix_jax.merging import engine as engine_lib
from demix_jax.merging import methods
from demix_jax.merging import nll as nll_lib
from demix_jax.merging import store as store_lib
from demix_jax.training import sharding

RTOL = 1e-5
T = 32
ALPHAS = np.array(
    [[1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.6, 0.1, 0.3], [0.0, 0.5, 0.5]],
    np.float32,
)


def _groups(vocab, seed=0):
  """MC items (shared contexts, 4 choices), gold rows, held-out rows with
  several documents and trailing padding: pairs of 3..20 tokens."""
  rng = np.random.default_rng(seed)
  toks = lambda n: [int(t) for t in rng.integers(2, vocab, n)]
  ctx, cont, doc, choice, gold = [], [], [], [], []
  for d in range(6):
    c = toks(int(rng.integers(1, 12)))
    for j in range(4):
      ctx.append(c)
      cont.append(toks(int(rng.integers(1, 8))))
      doc.append(d)
      choice.append(j)
      gold.append(j == d % 4)
  mc = rows.RowSet(
      name="piqa",
      kind="mc",
      domain="general",
      **rows.pack_pairs(ctx, cont, T),
      doc=np.array(doc, np.int32),
      choice=np.array(choice, np.int32),
      gold=np.array(gold),
      n_bytes=np.array([2.0 * len(c) + 1 for c in cont]),
  )
  n = 5
  ctx = [toks(int(rng.integers(2, 10))) for _ in range(n)]
  cont = [toks(int(rng.integers(4, 12))) for _ in range(n)]
  bpb = rows.RowSet(
      name="gsm8k",
      kind="bpb",
      domain="math",
      **rows.pack_pairs(ctx, cont, T),
      doc=np.arange(n, dtype=np.int32),
      choice=np.zeros(n, np.int32),
      gold=np.ones(n, bool),
      n_bytes=rng.uniform(10, 40, n),
  )
  seg = np.ones((3, T), np.int32)
  seg[0, 20:] = 2  # two documents
  seg[1, 25:] = 0  # trailing padding: pairs get packed into its tail
  seg[2, 10:] = 2
  seg[2, 18:] = 0
  held = rows.heldout_rows(
      "code",
      rng.integers(2, vocab, (3, T)),
      n_bytes=np.array([40.0, 45.0, 50.0]),
      segment_ids=seg,
  )
  return [mc, bpb, held]


def _evaluators(tiny, cfg=None, spec=methods.LINEAR, **kw):
  cfg = cfg or tiny.cfg
  base, comps = tiny.components()
  store = kw.pop("store", None) or store_lib.ComponentStore.from_params(
      comps, ["a", "b", "c"], base=base
  )
  groups = _groups(cfg.vocab_size)
  out = []
  for pack in (True, False):
    suite = rows.EvalSuite.build(groups, batch_size=4, pack=pack)
    out.append(
        engine_lib.MixtureEvaluator(
            cfg, store, suite, spec=spec, chunk_size=2, **kw
        )
    )
  return out, comps


def _assert_rows_equal(packed, plain):
  packed, plain = np.asarray(packed), np.asarray(plain)
  assert packed.shape == plain.shape
  zero = plain == 0  # the suite's padding rows
  np.testing.assert_array_equal(packed[..., zero], 0.0)
  np.testing.assert_allclose(packed, plain, rtol=RTOL, atol=0)


def _assert_scores_equal(packed, plain):
  assert sorted(packed) == sorted(plain)
  for t in plain:
    if t.endswith("/acc") or t.endswith("/acc_norm"):
      np.testing.assert_array_equal(packed[t], plain[t], err_msg=t)
    else:
      np.testing.assert_allclose(
          packed[t], plain[t], rtol=RTOL, atol=0, err_msg=t
      )


def test_packing_really_packs(tiny):
  (ev, plain), _ = _evaluators(tiny)
  s = ev.suite
  assert s.packed.n_slots >= 3
  assert s.n_eval_rows * 2 <= plain.suite.n_eval_rows
  assert s.real_tokens == plain.suite.real_tokens
  assert s.real_tokens < s.n_eval_rows * T <= plain.suite.n_eval_rows * T


def test_packed_mixture_scores_equal_unpacked(tiny):
  (ev, plain), comps = _evaluators(tiny)
  _assert_rows_equal(ev.evaluate_nll(ALPHAS), plain.evaluate_nll(ALPHAS))
  _assert_scores_equal(ev.evaluate(ALPHAS), plain.evaluate(ALPHAS))
  # One model's forward (final runs, baselines) goes the same way.
  _assert_rows_equal(
      ev.evaluate_params_nll(comps[1]), plain.evaluate_params_nll(comps[1])
  )
  _assert_scores_equal(
      ev.evaluate_params(comps[1]), plain.evaluate_params(comps[1])
  )


def test_packed_equals_unpacked_with_chunked_head_and_ties(tiny):
  cfg = dataclasses.replace(tiny.cfg, loss_chunk=8)
  (ev, plain), _ = _evaluators(tiny, cfg=cfg)
  _assert_scores_equal(ev.evaluate(ALPHAS), plain.evaluate(ALPHAS))
  spec = methods.MergeSpec("ties", density=0.7)
  (ev, plain), _ = _evaluators(tiny, spec=spec)
  assert not ev.merge_in_forward
  _assert_rows_equal(ev.evaluate_nll(ALPHAS), plain.evaluate_nll(ALPHAS))


def test_packed_rows_over_a_mesh_and_the_lowered_chunk(tiny):
  mesh = sharding.create_mesh({"data": -1})
  rules = (("mixtures", "data"), ("batch", "data"))
  base, comps = tiny.components()
  store = store_lib.ComponentStore.from_params(
      comps, base=base, mesh=mesh, rules=rules
  )
  (ev, plain), _ = _evaluators(tiny, store=store, mesh=mesh, rules=rules)
  _assert_rows_equal(ev.evaluate_nll(ALPHAS), plain.evaluate_nll(ALPHAS))
  _assert_rows_equal(
      ev.evaluate_params_nll(comps[0]), plain.evaluate_params_nll(comps[0])
  )
  compiled = ev.lower_chunk().compile()
  shardings = compiled.input_shardings[0]
  got = compiled(
      jax.device_put(ALPHAS[: ev.chunk], shardings[0]),
      store.stacked,
      store.base,
      jax.device_put(ev.suite.batched(), shardings[3]),
  )
  np.testing.assert_array_equal(
      np.asarray(got), ev.evaluate_nll(ALPHAS[: ev.chunk])
  )


def test_objective_on_a_packed_suite(tiny):
  # The gradient path is a linear function of the per-pair sums: its value
  # on the packed suite is the packed evaluator's target.
  (ev, plain), _ = _evaluators(tiny)
  targets = ["domain/math", "heldout/bpb", "piqa/bpb"]
  f = ev.make_objective(targets)
  g = plain.make_objective(targets)
  s = ev.evaluate(ALPHAS[1:2])
  want = np.mean([s[t][0] for t in targets])
  val, grad = f.value_and_grad(ALPHAS[1])
  val_plain, grad_plain = g.value_and_grad(ALPHAS[1])
  np.testing.assert_allclose(float(val), want, rtol=RTOL)
  np.testing.assert_allclose(float(val), float(val_plain), rtol=RTOL)
  np.testing.assert_allclose(grad, grad_plain, rtol=RTOL, atol=1e-7)
  w = scoring.linear_weights(ev.suite, "piqa/bpb")
  assert w.shape == (ev.suite.n_rows,)
  np.testing.assert_allclose(
      ev.evaluate_nll(ALPHAS[1:2])[0] @ w, s["piqa/bpb"][0], rtol=RTOL
  )


@pytest.mark.parametrize("max_pairs", [1, 2])
def test_slot_limit_changes_layout_not_scores(tiny, max_pairs):
  (ev, plain), comps = _evaluators(tiny)
  suite = rows.EvalSuite.build(
      _groups(tiny.cfg.vocab_size), 4, max_pairs_per_row=max_pairs
  )
  assert suite.packed.n_slots == max_pairs
  few = engine_lib.MixtureEvaluator(tiny.cfg, ev.store, suite, chunk_size=2)
  _assert_rows_equal(
      few.evaluate_params_nll(comps[2]), plain.evaluate_params_nll(comps[2])
  )


@pytest.mark.parametrize("n_slots", [1, 3, 8, 13, 20])
def test_slot_sums_blocks_equal_per_slot_sums(n_slots):
  # Slot counts below, at and across nll.SLOT_BLOCK (8).
  rng = np.random.default_rng(n_slots)
  v = rng.normal(size=(4, 64)).astype(np.float32)
  ids = np.sort(rng.integers(0, n_slots, (4, 64)), axis=1).astype(np.int32)
  got = jax.jit(nll_lib.slot_sums)(v, ids, np.arange(n_slots, dtype=np.int32))
  want = np.array(
      [[v[b][ids[b] == s].sum() for s in range(n_slots)] for b in range(4)]
  )
  assert got.shape == (4, n_slots)
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-5)
  np.testing.assert_array_equal(
      nll_lib.pair_sums(jnp.arange(4.0) + 1, jnp.array([2, -1, 0])),
      [3.0, 0.0, 1.0],
  )
