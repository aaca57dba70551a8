"""The components' own optimizer recipe and the validation's twins."""

import pytest

from configs import demo
from demix_jax import spec as spec_lib


def _resolve(**over):
  c = demo.get_config("runlocal")
  for k, v in over.items():
    node = c
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v
  return spec_lib.resolve(c)


def test_components_optim_overrides_only_the_components():
  s = _resolve(
      **{"components.optim.peak_lr": 3e-4, "components.optim.min_lr_ratio": 1.0}
  )
  assert s.component_optim.peak_lr == 3e-4
  assert s.component_optim.min_lr_ratio == 1.0
  # Everything else is optim's, and optim itself is untouched.
  assert s.component_optim.weight_decay == s.optim.weight_decay
  assert s.optim.peak_lr == demo.get_config("runlocal").optim.peak_lr
  assert s.optim.min_lr_ratio == 0.2


def test_components_optim_missing_means_optim():
  c = demo.get_config("runlocal")
  del c.components["optim"]
  s = spec_lib.resolve(c)
  assert s.component_optim == s.optim


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("components.optim.peak_lr", 0.0, "components.optim.peak_lr"),
        ("components.optim.min_lr_ratio", 1.5, "components.optim.min_lr_ratio"),
        ("components.optim.lr", 1e-3, "components.optim"),
        ("validate.twins", 2, "validate.twins"),
        ("validate.twins", 99, "validate.twins"),
    ],
)
def test_bad_recipe_fields_are_named(field, value, match):
  with pytest.raises(spec_lib.ConfigError, match=match):
    _resolve(**{field: value})


def test_components_optim_is_hashed_for_the_components_stage():
  from demix_jax import pipeline  # pylint: disable=g-import-not-at-top

  a = _resolve()
  b = _resolve(**{"components.optim.peak_lr": 1e-4})
  assert pipeline.stage_hash(a, "base") == pipeline.stage_hash(b, "base")
  assert pipeline.stage_hash(a, "components") != pipeline.stage_hash(
      b, "components"
  )
