"""Tests of the learning-rate schedule and the weight-decay mask."""

import jax
import numpy as np
import pytest

from demix_jax import models
from demix_jax.training import optim
from tests import kit


def test_schedule_warmup_cosine_floor():
  cfg = optim.OptimConfig(peak_lr=3e-4, min_lr_ratio=0.2, warmup_steps=10)
  s = optim.learning_rate_schedule(cfg, 110)
  assert float(s(0)) == 0.0
  np.testing.assert_allclose(float(s(5)), 1.5e-4, rtol=1e-6)
  np.testing.assert_allclose(float(s(10)), 3e-4, rtol=1e-6)
  np.testing.assert_allclose(float(s(60)), 0.6 * 3e-4 + 0.0, rtol=1e-5)
  np.testing.assert_allclose(float(s(110)), 6e-5, rtol=1e-6)
  np.testing.assert_allclose(float(s(500)), 6e-5, rtol=1e-6)
  with pytest.raises(ValueError, match="min_lr_ratio"):
    optim.learning_rate_schedule(optim.OptimConfig(min_lr_ratio=1.5), 10)


def test_decay_mask():
  cfg = kit.tiny_model(d_model=16, head_dim=8, d_ff=32, tie_embeddings=False)
  shapes = jax.eval_shape(lambda: models.init_params(cfg, jax.random.key(0)))
  m = optim.decay_mask(shapes)
  assert not m["embed"] and not m["lm_head"]
  assert not m["final_norm"]["scale"]
  assert not m["layers"]["attn_norm"]["scale"]
  assert not m["layers"]["attn"]["q_norm"]["scale"]
  assert m["layers"]["attn"]["q_proj"] and m["layers"]["mlp"]["up_proj"]
  m2 = optim.decay_mask(shapes, decay_embeddings=True)
  assert m2["embed"] and m2["lm_head"] and not m2["final_norm"]["scale"]
