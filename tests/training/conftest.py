"""Trainer tests: a persistent XLA compilation cache.

Many tests build the same tiny train step (same shapes and mesh); the cache
lets later ones skip XLA:CPU compilation, which dominates their run time on
a 2-core machine. It changes no numerics.
"""

import os
import tempfile

import jax

jax.config.update(
    "jax_compilation_cache_dir",
    os.path.join(tempfile.gettempdir(), "demix_jax_test_xla_cache"),
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
