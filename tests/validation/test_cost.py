"""Cost accounting against the paper's Table 2 and hand-computed FLOPs."""

import pytest

from demix_jax.validation import cost

N_PARAMS = 1.7e9


@pytest.mark.parametrize(
    "component_b, total_b",
    [(2, 15.12), (10, 71.12), (30, 211.12), (50, 351.12)],
)
def test_demix_paper_convention(component_b, total_b):
  c = cost.demix_cost(
      7,
      component_b * 1e9,
      112,
      n_params=N_PARAMS,
      benchmark_tokens=cost.PAPER_BENCHMARK_TOKENS,
  )
  assert c.pre_tokens == pytest.approx(7 * component_b * 1e9, rel=1e-12)
  assert c.tokens_per_proxy == pytest.approx(0.01e9, rel=1e-12)
  assert c.total_tokens == pytest.approx(total_b * 1e9, rel=1e-12)
  assert round(c.total_tokens / 1e9) == round(total_b)  # Table 2's column
  assert c.total_flops == pytest.approx(6 * N_PARAMS * total_b * 1e9, rel=1e-12)


@pytest.mark.parametrize(
    "per_proxy_b, total_b", [(2, 224), (4, 448), (8, 896), (12, 1344)]
)
def test_trained_proxies_paper(per_proxy_b, total_b):
  c = cost.trained_proxy_cost(112, per_proxy_b * 1e9, n_params=N_PARAMS)
  assert c.pre_tokens == 0
  assert c.total_tokens == pytest.approx(total_b * 1e9, rel=1e-12)


def test_paper_ratio_6_4x():
  demix = cost.demix_cost(
      7, 30e9, 112, n_params=N_PARAMS, benchmark_tokens=0.01e9
  )
  trained = cost.trained_proxy_cost(112, 12e9, n_params=N_PARAMS)
  assert trained.total_tokens / demix.total_tokens == pytest.approx(
      6.366, abs=1e-3
  )


def test_flop_ratio_convention():
  # 3M evaluation tokens cost 2N * 3M = 6N * 1M: 1M training tokens.
  c = cost.demix_cost(3, 10e6, 20, n_params=1e6, eval_tokens=3e6)
  assert c.tokens_per_proxy == pytest.approx(1e6)
  assert c.total_tokens == pytest.approx(30e6 + 20e6)
  assert c.total_flops == pytest.approx(
      cost.training_flops(1e6, 30e6) + 20 * cost.eval_flops(1e6, 3e6)
  )
  assert cost.training_flops(2.0, 5.0) == 60.0
  assert cost.eval_flops(2.0, 5.0) == 20.0


def test_base_and_trained_eval_switches():
  kw = dict(n_params=1e6, eval_tokens=3e6)
  without = cost.demix_cost(3, 10e6, 20, **kw, base_tokens=100e6)
  with_base = cost.demix_cost(
      3, 10e6, 20, **kw, base_tokens=100e6, count_base=True
  )
  assert with_base.total_tokens - without.total_tokens == pytest.approx(100e6)
  plain = cost.trained_proxy_cost(20, 5e6, **kw)
  charged = cost.trained_proxy_cost(20, 5e6, **kw, count_eval=True)
  assert plain.total_tokens == pytest.approx(100e6)
  assert charged.total_tokens == pytest.approx(100e6 + 20e6)
  paper = cost.trained_proxy_cost(
      20, 5e6, n_params=1e6, count_eval=True, benchmark_tokens=0.5e6
  )
  assert paper.tokens_per_proxy == pytest.approx(5.5e6)


def test_bad_inputs():
  with pytest.raises(ValueError, match="n_proxies"):
    cost.trained_proxy_cost(-1, 1e6, n_params=1e6)
  with pytest.raises(ValueError, match="n_params"):
    cost.demix_cost(7, 1e6, 10, n_params=0)


def test_generated_tokens_are_charged_as_forward_tokens():
  # 1M prompt + 2M generated tokens per proxy: 3M forward positions, i.e.
  # 1M training tokens on top of the 3M scored row tokens' 1M.
  gen = cost.generation_tokens(1e6, 2e6)
  assert gen == 3e6
  c = cost.demix_cost(
      3, 10e6, 20, n_params=1e6, eval_tokens=3e6, generated_tokens=gen
  )
  assert c.tokens_per_proxy == pytest.approx(2e6)
  assert c.generated_tokens_per_proxy == 3e6
  assert c.total_flops == pytest.approx(
      cost.training_flops(1e6, 30e6) + 20 * cost.eval_flops(1e6, 6e6)
  )
  # The paper's fixed per-run charge already stands for generation.
  paper = cost.demix_cost(
      3, 10e6, 20, n_params=1e6, benchmark_tokens=1e4, generated_tokens=gen
  )
  assert paper.tokens_per_proxy == 1e4
  # Trained proxies are charged for it only with their evaluation.
  kw = dict(n_params=1e6, eval_tokens=3e6, generated_tokens=gen)
  assert cost.trained_proxy_cost(20, 5e6, **kw).total_tokens == 100e6
  charged = cost.trained_proxy_cost(20, 5e6, **kw, count_eval=True)
  assert charged.total_tokens == pytest.approx(100e6 + 20 * 2e6)
  with pytest.raises(ValueError):
    cost.generation_tokens(-1, 0)
