"""The Qwen3-style decoder, its loss and its named presets."""

from demix_jax.models.loss import next_token_nll
from demix_jax.models.presets import PRESETS
from demix_jax.models.presets import SIZE_FIELDS
from demix_jax.models.presets import get_preset
from demix_jax.models.presets import num_params
from demix_jax.models.transformer import ModelConfig
from demix_jax.models.transformer import attention_mask
from demix_jax.models.transformer import forward
from demix_jax.models.transformer import init_params
from demix_jax.models.transformer import param_logical_axes

__all__ = [
    "ModelConfig",
    "PRESETS",
    "SIZE_FIELDS",
    "attention_mask",
    "forward",
    "get_preset",
    "init_params",
    "next_token_nll",
    "num_params",
    "param_logical_axes",
]
