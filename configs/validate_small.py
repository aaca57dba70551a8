r"""Validation at CPU scale: do merged proxies rank mixtures like training?

Command:

  python -m demix_jax.main --config=configs/validate_small.py \
      --workdir=workdir/validate_small

Hardware: one CPU machine (2 cores). The table it printed and how long it
took, with the date and the machine: README.md, "Validation: does the
merged proxy predict training?". `:runlocal` (6 references, 3 twins, a
few steps) is the slow test's reduced variant.

What it does (the paper's Table 2, small): trains a base (the 229,824-
parameter `tiny_230k` model for 30 tokens per parameter, the base sweep's
best point in docs/recipe_study.md) and three components (general, math,
code; beta = 0.5) on the offline corpora,
then 24 reference models from the base, one per mixture drawn uniformly
over the simplex, each for the component budget, and the first 12 a second
time with another data order (the noise ceiling). Merged proxies (linear,
plus TIES and beta = 0 as ablations, at three component budgets) and
trained proxies (checkpoints of the references at 1/16, 1/8 and 1/4 of
their budget, as the official code does) are scored with the same
evaluator, and compared with the references: Spearman rho per domain and
macro with bootstrap 90% intervals, top-25% rho, capability recovery,
pairwise decision accuracy, regret, cost in training tokens, and the
components' delta and loss barriers. The components keep the demo's
`optim`: in docs/recipe_study.md (run with this config) that recipe ranked
best.
Outputs: workdir/validate/table.json, table.md, rho_vs_tokens.png.
"""

import ml_collections

from configs import demo
from demix_jax import config_lib

_STEP = 16 * 128  # tokens per step of the demo's batch


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the small validation config (`runlocal`: a few steps)."""
  arg = config_lib.parse_arg(arg, runlocal=False, references=24, twins=12)
  c = demo.pipeline_defaults("runlocal" if arg.runlocal else None)
  c.stages = ("base", "components", "validate")
  c.validate.num_references = arg.references
  c.validate.twins = arg.twins
  # References spread over the simplex (Dirichlet(1)), not around the
  # code-heavy token prior: drawn around the prior they differ less than two
  # trainings of one mixture do (their noise ceiling is in the README's
  # validation section), and no ranking can be checked.
  c.validate.sampler = "uniform"
  c.validate.merge_methods = ("linear", "ties")
  c.validate.betas = (0.0,)
  if arg.runlocal:
    c.validate.num_references = min(arg.references, 6)
    c.validate.twins = 3
    c.validate.proxy_fractions = (1 / 4, 1 / 2)
    c.validate.merge_methods = ("linear",)
    c.validate.betas = ()
    return c
  # The base sweep's winner (docs/recipe_study.md): the tiny_230k model, its
  # base trained for 30 tokens per parameter (3,367 steps, 6.9M tokens; G
  # repeats 6.6 times, above data.max_epochs, which the base run warns of).
  demo.small_base(c, 30)
  c.components.tokens = _STEP * 96
  c.components.budgets = (_STEP * 24, _STEP * 48, _STEP * 96)
  c.components.use_budget = _STEP * 96
  c.validate.reference_tokens = 0  # = components.tokens, as in the paper
  # Epoch caps for the runs this config trains (a reference is 96 steps):
  # no source repeats 4 times there at any alpha, so the caps are 1.0 and
  # the references cover the whole simplex.
  c.search.cap_run_tokens = _STEP * 96
  c.validate.proxy_fractions = (1 / 16, 1 / 8, 1 / 4)
  c.train.eval_every_steps = 0  # references are scored by the evaluator
  c.train.checkpoint_every_steps = 48
  return c
