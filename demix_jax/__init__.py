"""demix_jax: data-mixture search for LLM pre-training by model merging.

DeMix (arXiv 2602.00747) in JAX: train one component model per candidate
dataset, build the proxy for any mixture as a weighted merge of the
components, score many merged proxies on device, search with a surrogate,
and train on the mixture found. See README.md for the commands.
"""

__version__ = "0.1.0"
