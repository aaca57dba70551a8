"""Validation: do merged proxies rank mixtures like real training does?

`metrics` (consistency metrics, mixture rank), `cost` (training-token and
FLOP accounting), `harness` (`run_validation`: reference runs, trained-proxy
baselines, merged proxies), `tables` (markdown tables and the plot).
"""
