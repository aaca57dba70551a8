r"""The paper's Table 3 at CPU scale: DeMix against RegMix, CLIMB and fixed.

Command:

  python -m demix_jax.main --config=configs/table3_small.py \
      --workdir=workdir/table3_small

Hardware: one CPU machine (2 cores). The table it printed, how long it took
and on which machine: docs/table3.md (linked from the README).
`:runlocal` (the demo's tiny twin, a few steps per run) is the slow
end-to-end test's variant.

What it does (DeMix, arXiv 2602.00747, Table 3, small), with the demo's
model, data and benchmarks and shorter runs: a base (60 steps on general
data) and three 40-step components (general, math, code; beta = 0.5),
then three searches over the same pool with the same surrogate, objective
and top-k averaging:

  demix:   28 merged proxies (rounds of 16/8/4), no training per proxy;
  regmix:  12 trained proxies in one round (RegMix);
  climb:   14 trained proxies in rounds of 8/4/2 (CLIMB without its
           clustering step: the candidate datasets are given).

Each trained proxy is 10 steps (20,480 tokens) from the base: RegMix's
proxies train 120 steps in all and CLIMB's 140, against the 120 of the
three components, as in the paper, where 112 x 2B or 28 x 8B proxy tokens
stand against 7 x 30B component tokens. The two methods draw the same
first pool rows, so the runs they share are trained once (each method's
cost counts them all). Then every mixture is trained for 30 steps from the
base: the three found ones, `natural` (the token-count prior; the paper's
"Uniform" row is this prior), `uniform` (equal weight on each component)
and `heuristic` (the paper's Table 11 "Heuristic-2", general 0.400, math
0.235, code 0.365 after summing its tiers: the paper does not say which
hand-set mixture its Table 3 row is). The report ranks the final runs on
each of the nine benchmarks (bits per byte) and averages the ranks (the
macro-average rank of Table 3), beside the training tokens each method
spent finding its mixture.
"""

import ml_collections

from configs import demo
from demix_jax import config_lib

_STEP = 16 * 128  # tokens per step of the demo's batch

# The paper's RegMix and CLIMB rows of Table 3 (App. B: tokens per proxy,
# proxies, CLIMB's 3 rounds), as `search.baselines` for the qwen3 configs:
# set it there with "baselines" in `stages` (docs/table3.md).
PAPER_METHODS = {
    "regmix_112x2B": {
        "kind": "regmix",
        "proxies": 112,
        "tokens_per_proxy": 2_000_000_000,
    },
    "regmix_28x8B": {
        "kind": "regmix",
        "proxies": 28,
        "tokens_per_proxy": 8_000_000_000,
    },
    "regmix_56x8B": {
        "kind": "regmix",
        "proxies": 56,
        "tokens_per_proxy": 8_000_000_000,
    },
    "climb_112x2B": {
        "kind": "climb",
        "proxies": 64,
        "rounds": 3,
        "tokens_per_proxy": 2_000_000_000,
    },
    "climb_28x8B": {
        "kind": "climb",
        "proxies": 16,
        "rounds": 3,
        "tokens_per_proxy": 8_000_000_000,
    },
    "climb_56x8B": {
        "kind": "climb",
        "proxies": 32,
        "rounds": 3,
        "tokens_per_proxy": 8_000_000_000,
    },
}


def component_mixture(alpha: dict[str, float], beta: float) -> dict:
  """Source weights of a component mixture: each non-general component
  keeps its `beta` share of general data (as the merged proxy does)."""
  general = alpha["general"] + beta * (1.0 - alpha["general"])
  out = {"general": general}
  out.update({k: (1.0 - beta) * v for k, v in alpha.items() if k != "general"})
  return out


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the small Table 3 config (`runlocal`: a few steps per run)."""
  arg = config_lib.parse_arg(arg, runlocal=False)
  c = demo.pipeline_defaults("runlocal" if arg.runlocal else None)
  c.stages = ("base", "components", "search", "baselines", "final", "report")
  # The paper's search: the surrogate's top-k average, no gradient step.
  c.search.gradient.enabled = False
  beta = c.data.beta
  c.final.fixed_mixtures = ml_collections.ConfigDict(
      {
          "uniform": component_mixture(
              {"general": 1 / 3, "math": 1 / 3, "code": 1 / 3}, beta
          ),
          "heuristic": component_mixture(
              {"general": 0.400, "math": 0.235, "code": 0.365}, beta
          ),
      }
  )
  if arg.runlocal:
    per_proxy = 8 * 64 * 4  # 4 steps of the runlocal batch
    c.search.baselines = ml_collections.ConfigDict(
        {
            "regmix": {
                "kind": "regmix",
                "proxies": 4,
                "tokens_per_proxy": per_proxy,
            },
            "climb": {
                "kind": "climb",
                "proxies": 4,
                "rounds": 2,
                "tokens_per_proxy": per_proxy,
            },
        }
    )
    return c
  # Every run warms up for 4 steps: a 10-step proxy would otherwise spend
  # all of its steps in the demo's 20-step warmup.
  c.optim.warmup_steps = 4
  c.components.optim.warmup_steps = 4
  c.base.tokens = _STEP * 60
  c.components.tokens = _STEP * 40
  c.components.budgets = (_STEP * 20, _STEP * 40)
  c.components.use_budget = _STEP * 40
  c.final.tokens = _STEP * 30
  c.search.baselines = ml_collections.ConfigDict(
      {
          "regmix": {
              "kind": "regmix",
              "proxies": 12,
              "tokens_per_proxy": _STEP * 10,
          },
          "climb": {
              "kind": "climb",
              "proxies": 8,
              "rounds": 3,
              "tokens_per_proxy": _STEP * 10,
          },
      }
  )
  c.train.checkpoint_every_steps = 40
  return c
