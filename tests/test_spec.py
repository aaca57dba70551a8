"""The run spec: every config field is checked, before any work.

The property test walks every leaf of the demo config and gives it a value
of the wrong kind (and, for numbers, an out-of-range one): `resolve` must
refuse each with a ConfigError that names that field. The table below holds
the bad inputs a new user actually tried, each of which used to fail only
after training (or never).
"""

import math

import pytest

from configs import demo
from demix_jax import config_lib
from demix_jax import spec as spec_lib

# Leaves whose value is a dict checked entry by entry (walk stops there).
_DICT_LEAVES = {
    "data.sources",
    "data.pretrain_mixture",
    "final.fixed_mixtures",
    "search.constraints",
    "search.domain_weights",
    "eval.domain_metrics",
    "mesh.axes",
}


def _leaves(d, prefix=""):
  for k, v in d.items():
    path = f"{prefix}{k}"
    if isinstance(v, dict) and path not in _DICT_LEAVES:
      yield from _leaves(v, path + ".")
    else:
      yield path, v


def _set(d, dotted, value):
  *parents, last = dotted.split(".")
  for p in parents:
    d = d[p]
  d[last] = value


def _bad_values(path, value):
  """Values of the wrong kind for this leaf (each must be refused)."""
  if isinstance(value, bool):
    return ["maybe", 3]
  if isinstance(value, int):
    return ["many", -7, 2.5]
  if isinstance(value, float):
    return ["x", float("nan"), -1e30]
  if isinstance(value, str):
    return [12345, "definitely-not-a-valid-value"]
  if isinstance(value, (list, tuple)):
    return ["nope", 7]
  if isinstance(value, dict):
    return [5, "nope"]
  raise AssertionError(f"no bad values for {path}={value!r}")


def _config():
  return config_lib.to_dict(demo.get_config("runlocal"))


# Leaves where a value of the wrong kind is meaningful: none today. A leaf
# listed here must say why.
_ACCEPTS_ANY = {}

_CASES = [
    (path, bad)
    for path, value in _leaves(_config())
    for bad in _bad_values(path, value)
    if path not in _ACCEPTS_ANY
]


def test_walk_covers_every_section():
  sections = {p.split(".")[0] for p, _ in _CASES}
  assert sections == set(_config()), sorted(set(_config()) - sections)
  assert len(_CASES) > 200


@pytest.mark.parametrize("path,bad", _CASES, ids=lambda x: repr(x)[:40])
def test_every_field_rejects_a_bad_value(path, bad):
  config = _config()
  _set(config, path, bad)
  with pytest.raises(config_lib.ConfigError) as err:
    spec_lib.resolve(config, num_devices=1)
  top = path.split(".")[0]
  assert err.value.field.startswith(top), (path, bad, str(err.value))
  assert "Fix:" in str(err.value)


# (override, field named in the error) -- the cases of issue 18 and friends.
_TABLE = [
    ({"search.objective": "heldout_bpbx"}, "search.objective"),
    ({"final.baselines": ("natural", "nope")}, "final.baselines[1]"),
    (
        {"validate.merge_methods": ("linear", "foo")},
        "validate.merge_methods[1]",
    ),
    ({"optim.peak_lr": 0.0}, "optim.peak_lr"),
    ({"components.use_budget": 1234}, "components.use_budget"),
    (
        {"search.constraints": {"general": 0.9, "math": 0.9}},
        "search.constraints",
    ),
    ({"data.tokenizer.path": "missing.model"}, "data.tokenizer.path"),
    ({"merge.method": "spherical"}, "merge.method"),  # renamed: karcher
    ({"merge.method": "della", "merge.epsilon": 0.2}, "merge"),
    ({"merge.method": "multislerp"}, None),
    # An ablation method with merge.*'s values: DELLA needs density > epsilon.
    (
        {"validate.merge_methods": ("linear", "della"), "merge.density": 0.005},
        "validate.merge_methods[1]",
    ),
    ({"search.surrogate": "gp"}, None),  # accepted: gp is a surrogate
    ({"merge.method": "karcher"}, None),  # accepted: a merge method
    ({"merge.method": "breadcrumbs_ties"}, None),
    (
        {"search.method": "gradient", "search.gradient.enabled": False},
        "search.method",
    ),
    ({"search.rounds": 9}, "search.rounds"),
    ({"eval.domain_metrics": {"code": "acc"}}, "eval.domain_metrics.code"),
    ({"eval.domain_metrics": {"general": "acc_norm"}}, None),
    # Generative metrics (issue 15): each where its benchmarks allow it.
    ({"eval.domain_metrics": {"code": "pass@1"}}, None),
    ({"eval.domain_metrics": {"math": "exact_match"}}, None),
    (
        {"eval.domain_metrics": {"general": "exact_match"}},
        "eval.domain_metrics.general",
    ),
    ({"eval.domain_metrics": {"math": "pass@1"}}, "eval.domain_metrics.math"),
    (
        {"eval.domain_metrics": {"code": "exact_match"}},
        "eval.domain_metrics.code",
    ),
    ({"eval.domain_metrics": {"code": "pass@0"}}, "eval.domain_metrics.code"),
    ({"eval.domain_metrics": {"code": "pass@k"}}, "eval.domain_metrics.code"),
    ({"eval.domain_metrics": {"code": "loss"}}, "eval.domain_metrics.code"),
    # pass@k needs n >= k samples; several samples need sampling.
    (
        {"eval.domain_metrics": {"code": "pass@10"}},
        "eval.generation.num_samples",
    ),
    (
        {
            "eval.domain_metrics": {"code": "pass@10"},
            "eval.generation.num_samples": 10,
        },
        "eval.generation.num_samples",
    ),
    (
        {
            "eval.domain_metrics": {"code": "pass@10"},
            "eval.generation.num_samples": 10,
            "eval.generation.temperature": 0.8,
        },
        None,
    ),
    # A sampled pass@1 from one sample is fine.
    (
        {
            "eval.domain_metrics": {"code": "pass@1"},
            "eval.generation.temperature": 0.8,
        },
        None,
    ),
    # The gradient cannot choose alpha for a generated-text objective ...
    (
        {
            "eval.domain_metrics": {"code": "pass@1"},
            "search.method": "gradient",
        },
        "search.method",
    ),
    (
        {
            "eval.domain_metrics": {"math": "exact_match"},
            "search.objective": "gsm8k/exact_match",
            "search.method": "gradient",
        },
        "search.gradient.enabled",
    ),
    # ... unless the generative domain weighs nothing in the composite.
    (
        {
            "eval.domain_metrics": {"code": "pass@1"},
            "search.method": "gradient",
            "search.domain_weights": {"code": 0.0},
        },
        None,
    ),
    # ... and it refines the bpb part when the surrogate picks alpha.
    ({"eval.domain_metrics": {"code": "pass@1", "math": "exact_match"}}, None),
    (
        {"search.domain_weights": {"poetry": 1.0}},
        "search.domain_weights.poetry",
    ),
    ({"eval.benchmarks": ("arc_easy", "mmlu")}, "eval.benchmarks[1]"),
    ({"data.candidates": ("general", "nope")}, "data.candidates[1]"),
    ({"mesh.rules": (("batch", "pipeline"),)}, "mesh.rules[0]"),
    (
        {"final.fixed_mixtures": {"mine": {"general": -1.0}}},
        "final.fixed_mixtures.mine.general",
    ),
    ({"data.tokenizer.vocab_size": 100_000}, "data.tokenizer.vocab_size"),
    # Below the byte-fallback floor of a trained tokenizer (no data needed).
    ({"data.tokenizer.vocab_size": 200}, "data.tokenizer.vocab_size"),
    # ... but with a tokenizer file the size comes from the file.
    (
        {
            "data.tokenizer.vocab_size": 200,
            "data.tokenizer.path": "configs/demo.py",
        },
        None,
    ),
    ({"stages": ("base", "bake")}, "stages[1]"),
    ({"validate.proxy_fractions": (0.5, 1.5)}, "validate.proxy_fractions[1]"),
    ({"search.concentration_range": (5.0, 0.5)}, "search.concentration_range"),
]


@pytest.mark.parametrize("overrides,field", _TABLE, ids=lambda x: repr(x)[:50])
def test_table_of_bad_inputs(overrides, field):
  config = _config()
  for k, v in overrides.items():
    _set(config, k, v)
  if field is None:
    spec_lib.resolve(config, num_devices=1)
    return
  with pytest.raises(config_lib.ConfigError) as err:
    spec_lib.resolve(config, num_devices=1)
  assert err.value.field == field, str(err.value)


def test_spec_is_typed_and_frozen():
  spec = spec_lib.resolve(demo.get_config(), num_devices=1)
  assert spec.search.objective.targets == (
      "domain/general",
      "domain/code",
      "domain/math",
  )
  assert "heldout/math/bpb" in spec.eval.targets
  assert spec.validate.reference_tokens == spec.budgets.component_tokens
  with pytest.raises(AttributeError):
    spec.seed = 3  # frozen
  assert math.isclose(spec.data.beta, 0.5)


def test_result_hashes_ignore_speed_and_logging_fields():
  from demix_jax.stages import registry  # pylint: disable=g-import-not-at-top

  a = spec_lib.resolve(demo.get_config("runlocal"))
  config = _config()
  config["merge"]["chunk_size"] = 3
  config["train"]["log_every_steps"] = 7
  config["train"]["checkpoint_every_steps"] = 5
  config["mesh"]["axes"] = {"data": 1, "fsdp": -1, "tensor": 1}
  b = spec_lib.resolve(config)
  config["search"]["temperature"] = 0.5
  c = spec_lib.resolve(config)
  for stage in (s for s in registry.STAGES if s.reused):
    assert stage.config_hash(a) == stage.config_hash(b)
  assert registry.get("components").config_hash(a) == registry.get(
      "components"
  ).config_hash(c)
  assert registry.get("search").config_hash(a) != registry.get(
      "search"
  ).config_hash(c)
  # Worker processes read other documents (tests/data/test_workers.py).
  config = _config()
  config["data"]["worker_count"] = 2
  d = spec_lib.resolve(config)
  for stage in (s for s in registry.STAGES if s.reused and s.reads_data):
    assert stage.config_hash(a) != stage.config_hash(d)


def test_cli_refuses_before_work(tmp_path, cli):
  """Exit code 2, the field and the fix, and nothing written."""
  proc = cli(
      "--config=configs/demo.py:runlocal",
      f"--workdir={tmp_path}",
      "--config.search.objective=heldout_bpbx",
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "config.search.objective" in proc.stderr
  assert "Fix:" in proc.stderr
  assert not (tmp_path / "config.json").exists()
  assert not (tmp_path / "base").exists()


@pytest.mark.parametrize("name", ["qwen3_1p7b", "qwen3_8b"])
def test_paper_configs_use_the_paper_metrics(name):
  """The shipped qwen3 configs, as they are (README "Metrics")."""
  import importlib  # pylint: disable=g-import-not-at-top

  c = importlib.import_module(f"configs.{name}").get_config()
  spec = spec_lib.resolve(c)
  assert spec.eval.domain_metrics == {
      "general": "acc_norm",
      "code": "pass@1",
      "math": "exact_match",
  }
  for t in (
      "humaneval/pass@1",
      "mbpp/pass@1",
      "gsm8k/exact_match",
      "minerva_math/exact_match",
      "arc_easy/acc_norm",
  ):
    assert t in spec.eval.targets
  assert spec.eval.generative and spec.search.gradient is None
  assert spec.eval.generation.max_new_tokens == 1024
  # Without the gradient line the spec names the field to change.
  c = importlib.import_module(f"configs.{name}").get_config()
  c.search.gradient.enabled = True
  with pytest.raises(config_lib.ConfigError) as err:
    spec_lib.resolve(c)
  assert err.value.field == "search.gradient.enabled"


def test_generation_fields_are_read_and_hashed():
  from demix_jax.stages import registry  # pylint: disable=g-import-not-at-top

  config = _config()
  a = spec_lib.resolve(config)
  g = a.eval.generation
  assert (g.max_new_tokens, g.temperature, g.num_samples) == (512, 0.0, 1)
  assert a.eval.sandbox.memory_bytes == 1024 << 20
  assert not a.eval.generative
  # Every eval.generation field can change generated text or its verdict
  # (batching changes float sums, hence greedy argmaxes; sandbox limits and
  # parallelism decide timeouts): "eval" is hashed whole.
  for path, value in (
      ("max_new_tokens", 7),
      ("batch_size", 3),
      ("sandbox.workers", 1),
  ):
    config = _config()
    _set(config, f"eval.generation.{path}", value)
    b = spec_lib.resolve(config)
    assert registry.get("search").config_hash(a) != registry.get(
        "search"
    ).config_hash(b)
    assert registry.get("components").config_hash(a) == registry.get(
        "components"
    ).config_hash(b)
