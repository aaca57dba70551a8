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
        ("validate.sampler", "prior", "validate.sampler"),
    ],
)
def test_bad_recipe_fields_are_named(field, value, match):
  with pytest.raises(spec_lib.ConfigError, match=match):
    _resolve(**{field: value})


def test_components_optim_is_hashed_for_the_components_stage():
  from demix_jax.stages import registry  # pylint: disable=g-import-not-at-top

  a = _resolve()
  b = _resolve(**{"components.optim.peak_lr": 1e-4})
  assert registry.get("base").config_hash(a) == registry.get(
      "base"
  ).config_hash(b)
  assert registry.get("components").config_hash(a) != registry.get(
      "components"
  ).config_hash(b)


def _workspace(tmp_path, counts, **over):
  from demix_jax import workspace  # pylint: disable=g-import-not-at-top

  ws = workspace.Workspace(_resolve(**over), tmp_path)
  ws.data.__dict__["token_counts"] = counts  # a cached_property: no data read
  return ws


def test_epoch_caps_assume_the_sum_of_the_token_counts(tmp_path):
  counts = {"general": 1000, "math": 100, "code": 4000}
  ws = _workspace(tmp_path, counts, **{"data.max_epochs": 4.0})
  beta, total = ws.spec.data.beta, 5100
  assert ws.bounds.cap_run_tokens == total
  b = ws.bounds.alpha_bounds()
  cap = dict(zip(ws.candidates, b.upper))
  # The official caps: max_epochs * T_i / (sum T) / (1 - beta), G padded.
  assert cap["math"] == pytest.approx(4 * 100 / total / (1 - beta))
  assert cap["general"] == pytest.approx(
      min(1.0, (4 * 1000 / total - beta) / (1 - beta))
  )
  assert cap["code"] == 1.0
  fixed = _workspace(
      tmp_path, counts, **{"search.cap_run_tokens": 100, "data.max_epochs": 4.0}
  )
  assert fixed.bounds.cap_run_tokens == 100
  assert list(fixed.bounds.alpha_bounds().upper) == [1.0, 1.0, 1.0]


def test_prior_tokens_set_the_prior_caps_and_natural_mixture(tmp_path):
  counts = {"general": 1000, "math": 100, "code": 4000}
  # The paper's "Uniform" prior: general = the sum of the others.
  ws = _workspace(
      tmp_path,
      counts,
      **{"search.prior_tokens": {"general": 4100.0}, "data.max_epochs": 4.0},
  )
  assert ws.bounds.prior_tokens == {
      "general": 4100.0,
      "math": 100.0,
      "code": 4000.0,
  }
  assert ws.bounds.natural_alpha["general"] == pytest.approx(0.5)
  assert ws.bounds.cap_run_tokens == 8200
  with pytest.raises(spec_lib.ConfigError, match="search.prior_tokens.wiki"):
    _resolve(**{"search.prior_tokens": {"wiki": 1.0}})
  with pytest.raises(spec_lib.ConfigError, match="search.prior_tokens.math"):
    _resolve(**{"search.prior_tokens": {"math": 0.0}})


def test_validation_sampler_spreads_references_over_the_simplex(tmp_path):
  from demix_jax.stages import search as search_stage  # pylint: disable=g-import-not-at-top

  counts = {"general": 1000, "math": 100, "code": 4000}
  ws = _workspace(tmp_path, counts, **{"search.cap_run_tokens": 100})
  prior = search_stage.sample_pool(ws.spec, ws, 7, size=400)
  spread = search_stage.sample_pool(ws.spec, ws, 7, size=400, sampler="uniform")
  # Around the prior, most mass stays on code (the largest source); the
  # uniform draw puts a third on each candidate on average.
  assert prior[:, 2].mean() > 0.6
  assert abs(spread.mean(0) - 1 / 3).max() < 0.05
