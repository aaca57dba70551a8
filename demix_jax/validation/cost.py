"""Cost of a mixture search in training tokens and FLOPs (paper Table 2).

FLOPs use the standard dense-transformer estimates for a model of N
parameters: training costs 6 * N * tokens (forward + backward), an
evaluation forward pass 2 * N * tokens. Costs are reported as *training-token
equivalents*: the training tokens that would cost the same FLOPs, so the
merged and trained proxy families sit on one axis.

* DeMix: N_components * component_tokens (the "Pre-Cost"), plus the base
  model's tokens only if `count_base` (the paper does not count the base: it
  is shared with every method, since trained proxies and reference runs also
  start from it), plus n_proxies * the cost of evaluating one proxy. Merging
  itself (a weighted sum of the component weights, ~2 * K * N FLOPs) is
  negligible next to one evaluation pass and is not counted.
* Trained proxies (RegMix; CLIMB = RegMix with rounds): n_proxies *
  tokens_per_proxy, plus their evaluation only if `count_eval` (the paper's
  Table 2 does not charge trained proxies for benchmarking).

Evaluation cost of one proxy, two conventions:
* FLOP ratio (default): one pass over `eval_tokens` tokens costs
  2 * N * eval_tokens = 6 * N * (eval_tokens / 3), i.e. eval_tokens / 3
  training tokens;
* the paper's: a fixed `benchmark_tokens` per run (0.01B at 1.7B scale; its
  Table 1 measures 0.013B), e.g. 7 x 30B + 112 x 0.01B = 211.12B.

Generated text (exact match, pass@k: `merging.generative`): every prompt
token is one prefill position and every generated token one decode step of
the (merged) model, each a forward pass of ~2 * N FLOPs like a scored row
token, so `generation_tokens(prompt, generated)` = prompt + generated
tokens are added to `eval_tokens` under the FLOP-ratio convention (attention
over the KV cache is left out, as it is for the rows; merging once per
chunk of mixtures is as negligible as for scoring). The paper's fixed
`benchmark_tokens` charge stands for the whole benchmarking run, generation
included. `Cost.generated_tokens_per_proxy` keeps them visible on their own.

`total_flops` is always 6 * N * total_tokens, which equals the training
FLOPs plus 2 * N * eval_tokens per evaluation under the FLOP-ratio
convention.
"""

from __future__ import annotations

import dataclasses

# Paper convention: one benchmarking run of a 1.7B proxy ~ 0.01B training
# tokens (Table 2's "0.01†").
PAPER_BENCHMARK_TOKENS = 0.01e9


def training_flops(n_params: float, tokens: float) -> float:
  """6 * N * tokens: forward and backward pass of a dense model."""
  return 6.0 * n_params * tokens


def eval_flops(n_params: float, tokens: float) -> float:
  """2 * N * tokens: one forward pass."""
  return 2.0 * n_params * tokens


def generation_tokens(prompt_tokens: float, generated_tokens: float) -> float:
  """Forward-pass tokens of generating: prefill positions + decode steps."""
  if prompt_tokens < 0 or generated_tokens < 0:
    raise ValueError(
        f"token counts must be >= 0, got {prompt_tokens}, {generated_tokens}"
    )
  return float(prompt_tokens) + float(generated_tokens)


def eval_token_equivalent(
    eval_tokens: float,
    *,
    benchmark_tokens: float | None = None,
    generated_tokens: float = 0.0,
) -> float:
  """Training tokens that cost as much as evaluating one proxy.

  Args:
    eval_tokens: tokens the evaluator runs through the model per proxy.
    benchmark_tokens: if given, the fixed per-run charge of the paper's
      convention (PAPER_BENCHMARK_TOKENS at paper scale), used instead.
    generated_tokens: forward-pass tokens of generating from the proxy
      (`generation_tokens`), on top of `eval_tokens`.

  Returns:
    (eval_tokens + generated_tokens) / 3 (the FLOP ratio 2N / 6N), or
    `benchmark_tokens`.
  """
  if benchmark_tokens is not None:
    return float(benchmark_tokens)
  return (eval_tokens + generated_tokens) / 3.0


@dataclasses.dataclass(frozen=True)
class Cost:
  """Cost of one method at one budget, in training-token equivalents.

  Attributes:
    pre_tokens: training before any proxy exists (DeMix: components, plus
      the base if counted; trained proxies: 0).
    n_proxies: proxies the method evaluates.
    tokens_per_proxy: cost of one proxy (DeMix: its evaluation; trained:
      its training, plus its evaluation if counted).
    total_tokens: pre_tokens + n_proxies * tokens_per_proxy.
    total_flops: 6 * n_params * total_tokens.
    generated_tokens_per_proxy: forward-pass tokens of generating from one
      proxy (prompt + generated; part of its evaluation, 0 without
      generative metrics).
  """

  pre_tokens: float
  n_proxies: int
  tokens_per_proxy: float
  total_tokens: float
  total_flops: float
  generated_tokens_per_proxy: float = 0.0


def _check(n_proxies: int, n_params: float) -> None:
  if n_proxies < 0:
    raise ValueError(f"n_proxies={n_proxies} must be >= 0")
  if n_params <= 0:
    raise ValueError(f"n_params={n_params} must be > 0")


def demix_cost(
    n_components: int,
    component_tokens: float,
    n_proxies: int,
    *,
    n_params: float,
    eval_tokens: float = 0.0,
    benchmark_tokens: float | None = None,
    base_tokens: float = 0.0,
    count_base: bool = False,
    generated_tokens: float = 0.0,
) -> Cost:
  """Cost of DeMix: components (+ base) + evaluating merged proxies.

  Args:
    n_components: N, one component per candidate dataset.
    component_tokens: training tokens of each component.
    n_proxies: merged proxies evaluated by the search.
    n_params: model parameters (for FLOPs).
    eval_tokens: tokens of one evaluation pass (FLOP-ratio convention).
    benchmark_tokens: fixed per-proxy charge (paper convention) instead.
    base_tokens: training tokens of the shared base model.
    count_base: add base_tokens (the paper does not).
    generated_tokens: forward-pass tokens of generating from one proxy
      (`generation_tokens`; FLOP-ratio convention).

  Returns:
    The Cost.
  """
  _check(n_proxies, n_params)
  pre = n_components * component_tokens + (base_tokens if count_base else 0.0)
  per = eval_token_equivalent(
      eval_tokens,
      benchmark_tokens=benchmark_tokens,
      generated_tokens=generated_tokens,
  )
  total = pre + n_proxies * per
  return Cost(
      float(pre),
      int(n_proxies),
      float(per),
      float(total),
      training_flops(n_params, total),
      float(generated_tokens),
  )


def trained_proxy_cost(
    n_proxies: int,
    tokens_per_proxy: float,
    *,
    n_params: float,
    eval_tokens: float = 0.0,
    benchmark_tokens: float | None = None,
    count_eval: bool = False,
    generated_tokens: float = 0.0,
) -> Cost:
  """Cost of trained proxies (RegMix / CLIMB): n_proxies * tokens_per_proxy.

  Args:
    n_proxies: proxies trained (one per sampled mixture).
    tokens_per_proxy: training tokens of each proxy.
    n_params: model parameters (for FLOPs).
    eval_tokens: tokens of one evaluation pass (if count_eval).
    benchmark_tokens: fixed per-proxy evaluation charge instead (if
      count_eval).
    count_eval: also charge each proxy's evaluation (the paper does not).
    generated_tokens: forward-pass tokens of generating from one proxy (if
      count_eval).

  Returns:
    The Cost.
  """
  _check(n_proxies, n_params)
  per = float(tokens_per_proxy)
  if count_eval:
    per += eval_token_equivalent(
        eval_tokens,
        benchmark_tokens=benchmark_tokens,
        generated_tokens=generated_tokens,
    )
  total = n_proxies * per
  return Cost(
      0.0,
      int(n_proxies),
      per,
      float(total),
      training_flops(n_params, total),
      float(generated_tokens) if count_eval else 0.0,
  )
