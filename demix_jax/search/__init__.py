"""Mixture search: candidate pool, surrogates, rounds, gradient search.

Modules:
  pool        DeMix's Dirichlet sampler and uniform sampling, hard bounds.
  objective   composite percentile rank (lower is better) or one target.
  surrogates  LightGBM / Ridge / GP / bootstrap ensemble, cross-validation.
  rounds      iterative search with resumable state -> alpha*.
  state       crash-safe search files.
  gradient    mirror descent on alpha through a differentiable proxy.
"""
