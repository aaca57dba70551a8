"""Tests for demix_jax.config_lib and the shipped configs."""

import copy
import importlib
import json

import ml_collections
import pytest

from demix_jax import config_lib
from demix_jax import models
from demix_jax import spec as spec_lib


def _load(name, arg=None):
  module = importlib.import_module(f"configs.{name}")
  return module.get_config(arg)


def test_parse_arg_defaults_and_overrides():
  arg = config_lib.parse_arg(
      "runlocal,steps=10,lr=3e-4,name=abc",
      runlocal=False,
      steps=5,
      lr=1.0,
      name="x",
  )
  assert arg.runlocal is True
  assert arg.steps == 10 and isinstance(arg.steps, int)
  assert arg.lr == pytest.approx(3e-4)
  assert arg.name == "abc"
  empty = config_lib.parse_arg(None, runlocal=False)
  assert empty.runlocal is False


def test_parse_arg_int_to_float_and_unknown_key():
  arg = config_lib.parse_arg("lr=1", lr=0.5)
  assert isinstance(arg.lr, float) and arg.lr == 1.0
  with pytest.raises(config_lib.ConfigError, match="nope"):
    config_lib.parse_arg("nope=1", runlocal=False)
  with pytest.raises(config_lib.ConfigError, match="boolean"):
    config_lib.parse_arg("runlocal=3", runlocal=False)


@pytest.mark.parametrize("arg", [None, "runlocal"])
def test_demo_config_validates(arg):
  config = _load("demo", arg)
  for n in (1, 4):
    spec = spec_lib.resolve(config, num_devices=n)
    # The spec carries the config's values, typed.
    assert spec.model.d_model == config.model.d_model
    assert spec.model.vocab_size == config.model.vocab_size
    assert spec.data.tokenizer.vocab_size == config.model.vocab_size
    assert spec.train.global_batch_size == config.train.global_batch_size
    assert spec.budgets.base_tokens == config.base.tokens
    assert spec.budgets.use_budget in spec.budgets.component_budgets
    assert spec.data.candidates == tuple(config.data.candidates)
    assert set(spec.data.sources) == set(config.data.sources)
    assert spec.stages == tuple(config.stages)
    assert spec.search.objective.targets == (
        "domain/general",
        "domain/code",
        "domain/math",
    )
  # num_devices is checked: a batch that does not split over them fails.
  gbs = config.train.global_batch_size
  with pytest.raises(config_lib.ConfigError, match="global_batch_size"):
    spec_lib.resolve(config, num_devices=gbs + 1)
  if arg == "runlocal":  # the tiny twin is smaller than the default
    full = spec_lib.resolve(_load("demo"), num_devices=1)
    assert spec.budgets.base_tokens < full.budgets.base_tokens
    assert models.num_params(spec.model) < models.num_params(full.model)


def _without_design(d, design):
  d = copy.deepcopy(d)
  d["data"]["sources"]["crawl"].pop("corpus")
  d["data"]["sources"]["code"].pop("max_docs", None)
  d["search"].pop("sampler")
  for name in design["junk"]:
    d["data"]["sources"].pop(name)
  # What the junk tiers, the base and the final length change.
  d["data"].pop("candidates")
  d["final"].pop("fixed_mixtures")
  d["base"].pop("tokens")
  d["final"].pop("tokens")
  d["search"].pop("cap_run_tokens")
  d["optim"].pop("min_lr_ratio")
  return d


def test_demo_designs_differ_only_in_what_designs_names():
  from configs import demo  # pylint: disable=g-import-not-at-top

  default = config_lib.to_dict(_load("demo"))
  assert default == config_lib.to_dict(
      _load("demo", f"design={demo.DEFAULT_DESIGN}")
  )
  for n, design in demo.DESIGNS.items():
    c = config_lib.to_dict(_load("demo", f"design={n}"))
    assert c["data"]["sources"]["crawl"]["corpus"] == design["crawl"]
    assert c["search"]["sampler"] == design["sampler"]
    assert c["data"]["sources"]["code"].get("max_docs", 0) == (
        design["code_docs"]
    )
    junk = tuple(design["junk"])
    assert tuple(c["data"]["candidates"]) == (
        "general",
        "crawl",
        *junk,
        "math",
        "code",
    )
    for name, corpus in design["junk"].items():
      assert c["data"]["sources"][name] == {"kind": "offline", "corpus": corpus}
    uniform = c["final"]["fixed_mixtures"]["uniform"]
    k = len(c["data"]["candidates"])
    assert uniform["code"] == pytest.approx(0.5 / k)
    assert uniform["general"] == pytest.approx(0.5 + 0.5 / k)
    step = c["train"]["global_batch_size"] * c["data"]["seq_len"]
    assert c["final"]["tokens"] == step * design["final_steps"]
    assert c["search"]["cap_run_tokens"] == c["final"]["tokens"]
    assert c["optim"]["min_lr_ratio"] == design["min_lr_ratio"]
    # The components keep the paper's cosine floor in every design.
    assert c["components"]["optim"]["min_lr_ratio"] == 0.2
    params = models.num_params(
        spec_lib.resolve(_load("demo", f"design={n}"), num_devices=1).model
    )
    assert c["base"]["tokens"] / params == pytest.approx(
        design["base_tpp"], rel=0.01
    )
    # Nothing else differs: the objective and the other budgets are the same.
    default_design = demo.DESIGNS[demo.DEFAULT_DESIGN]
    assert _without_design(c, design) == _without_design(
        default, default_design
    )
  with pytest.raises(config_lib.ConfigError, match="unknown demo design"):
    _load("demo", "design=9")
  other = next(n for n in demo.DESIGNS if n != demo.DEFAULT_DESIGN)
  with pytest.raises(config_lib.ConfigError, match="runlocal takes no"):
    _load("demo", f"runlocal,design={other}")


def test_config_round_trip_json():
  config = _load("demo", "runlocal")
  as_dict = config_lib.to_dict(config)
  again = ml_collections.ConfigDict(json.loads(json.dumps(as_dict)))
  assert config_lib.to_dict(again) == as_dict
  assert config_lib.config_hash(config) == config_lib.config_hash(again)


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("train.global_batch_size", -4, "train.global_batch_size"),
        ("train.global_batch_size", 6, "train.global_batch_size"),
        ("model.n_kv_heads", 3, "model.n_kv_heads"),
        ("data.beta", 1.5, "data.beta"),
        ("optim.peak_lr", float("nan"), "optim.peak_lr"),
        ("search.sampler", "grid", "search.sampler"),
        ("data.general", "web", "data.general"),
    ],
)
def test_validate_names_the_field(field, value, match):
  config = _load("demo", "runlocal")
  section, key = field.split(".")
  config[section][key] = value
  with pytest.raises(config_lib.ConfigError, match=match) as err:
    spec_lib.resolve(config, num_devices=4)
  assert "Fix:" in str(err.value)


def test_validate_negative_mixture_weight():
  config = _load("demo", "runlocal")
  config.data.pretrain_mixture["general"] = -1.0
  with pytest.raises(config_lib.ConfigError, match="pretrain_mixture.general"):
    spec_lib.resolve(config)


def test_resolve_mesh_shape():
  spec = config_lib.resolve_mesh_shape({"data": -1, "fsdp": 1, "tensor": 2}, 8)
  assert spec.shape == (4, 1, 2)
  assert spec.axis_names == ("data", "fsdp", "tensor")
  with pytest.raises(config_lib.ConfigError, match="devices"):
    config_lib.resolve_mesh_shape({"data": 3, "tensor": 1}, 4)
  with pytest.raises(config_lib.ConfigError, match="more than one"):
    config_lib.resolve_mesh_shape({"data": -1, "tensor": -1}, 4)


def test_paper_config_validates_for_a_pod():
  config = _load("qwen3_1p7b")
  spec_lib.resolve(config, num_devices=64)
  assert config.model.n_layers == 28 and config.model.vocab_size == 151_936
  assert config.search.n_init == 64 and config.search.rounds == 3
  # 512 sequences do not split over 3 x 8 devices: named, before work.
  with pytest.raises(config_lib.ConfigError, match="global_batch_size"):
    spec_lib.resolve(config, num_devices=24 * 8)


def test_local_jsonl_config(tmp_path):
  from demix_jax import pipeline  # pylint: disable=g-import-not-at-top

  for name in ("web", "code"):
    (tmp_path / f"{name}.jsonl").write_text(
        "\n".join(
            json.dumps({"text": f"{name} document {i}"}) for i in range(20)
        )
        + "\n"
    )
  arg = f"runlocal,general={tmp_path}/web.jsonl,code={tmp_path}/code.jsonl"
  config = _load("local_jsonl", arg)
  # The source checks alone (no stage that reads data: these 20 lines are
  # too few to train the config's tokenizer).
  only = ("report",)
  pipeline.preflight(
      spec_lib.resolve(config, num_devices=1, stages=only), str(tmp_path)
  )
  assert config.data.candidates == ("general", "code")
  bad = _load("local_jsonl", arg + ",field=body")
  with pytest.raises(config_lib.ConfigError, match="feature.*body"):
    pipeline.preflight(
        spec_lib.resolve(bad, num_devices=1, stages=only), str(tmp_path)
    )
  with pytest.raises(config_lib.ConfigError, match="general="):
    _load("local_jsonl", f"code={tmp_path}/code.jsonl")


def _with(config, dotted, value):
  """A plain copy of `config` with `dotted` set (parents created)."""
  d = config_lib.to_dict(config)
  node = d
  *parents, last = dotted.split(".")
  for p in parents:
    node = node.setdefault(p, {})
  node[last] = value
  return d


@pytest.mark.parametrize(
    "dotted,named,near",
    [
        ("train.log_evry_steps", None, "config.train.log_every_steps"),
        ("modle", None, "config.model"),
        # A section nothing reads is named once, by its own name.
        ("searhc.rounds", "searhc", "config.search"),
        ("search.rounds_typo.n", "search.rounds_typo", "config.search.rounds"),
        ("merge.chunksize", None, "config.merge.chunk_size"),
        ("eval.generation.sandbox.timeout_secs", None, None),
    ],
)
def test_unknown_config_key_is_refused_with_the_nearest_name(
    dotted, named, near
):
  config = _with(_load("demo", "runlocal"), dotted, 1)
  with pytest.raises(config_lib.ConfigError) as e:
    spec_lib.resolve(config)
  msg = str(e.value)
  want = f"config.{named or dotted}: is not a known config field"
  assert msg.startswith(want), msg
  if near:
    assert f"did you mean {near}?" in msg, msg
  assert "Fix:" in msg


def test_unknown_keys_counted_and_the_first_named():
  config = _with(_load("demo", "runlocal"), "train.aaa_typo", 1)
  config["zzz_typo"] = {"x": 1, "y": 2}  # one unknown section
  config["search"]["bbb_typo"] = 1
  with pytest.raises(config_lib.ConfigError) as e:
    spec_lib.resolve(config)
  # In the order of the (sorted) config; the others counted.
  assert str(e.value).startswith("config.search.bbb_typo: is not a known")
  assert "(2 more unknown)" in str(e.value)


def test_misspelled_required_key_names_the_spelling_found():
  d = config_lib.to_dict(_load("demo", "runlocal"))
  d["train"]["checkpoint_evry_steps"] = d["train"].pop("checkpoint_every_steps")
  with pytest.raises(config_lib.ConfigError) as e:
    spec_lib.resolve(d)
  assert str(e.value).startswith(
      "config.train.checkpoint_every_steps: is missing (the config has"
      " 'train.checkpoint_evry_steps')"
  )


def test_switched_off_gradient_section_keeps_its_keys():
  # The paper configs turn the gradient search off and keep its settings.
  spec = spec_lib.resolve(_load("qwen3_1p7b"), num_devices=256)
  assert spec.search.gradient is None
  config = _with(_load("demo", "runlocal"), "search.gradient.enabled", False)
  assert spec_lib.resolve(config).search.gradient is None


def test_stages_given_by_the_caller_leave_config_stages_known():
  spec = spec_lib.resolve(_load("demo", "runlocal"), stages=("search",))
  assert spec.stages == ("search",)


def test_reader_unread_paths():
  r = config_lib.Reader({"a": {"b": 1, "c": {"d": 2}}, "e": {}, "f": 3})
  r.int("a.b")
  r.int("f")
  assert r.unread() == ["a.c", "e"]
  r.mapping("a.c")
  r.skip("e")
  assert r.unread() == []
  r.check_all_read()
