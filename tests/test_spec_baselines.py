"""`search.baselines` (the trained-proxy searches) is checked before work."""

import pytest

from configs import demo
from configs import table3_small
from demix_jax import spec as spec_lib
from demix_jax.stages import stage as stage_lib


def _resolve(methods, **over):
  c = demo.get_config("runlocal")
  c.search.baselines = methods
  for k, v in over.items():
    node = c
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v
  return spec_lib.resolve(c)


def _m(**over):
  return {"kind": "regmix", "proxies": 8, "tokens_per_proxy": 512, **over}


def test_methods_resolve_with_their_defaults():
  s = _resolve(
      {"rm": _m(), "cl": _m(kind="climb"), "c2": _m(kind="climb", rounds=2)}
  )
  b = s.search.baselines
  assert b["rm"] == spec_lib.ProxySearchSpec("regmix", 8, 1, 512)
  assert b["cl"].rounds == 3  # CLIMB's default: 3 rounds, as DeMix's
  assert b["c2"].rounds == 2
  # Absent: no methods, and the demo's config (and its hashes) unchanged.
  assert spec_lib.resolve(demo.get_config("runlocal")).search.baselines == {}
  assert "baselines" not in demo.get_config().search


@pytest.mark.parametrize(
    "methods, over, field, says",
    [
        ({"rm": _m(kind="doremi")}, {}, "search.baselines.rm.kind", "one of"),
        ({"rm": _m(rounds=2)}, {}, "search.baselines.rm.rounds", "one-shot"),
        ({"rm": _m(proxies=3)}, {}, "search.baselines.rm.proxies", ">= 4"),
        (
            {"c": _m(kind="climb", rounds=5)},
            {},
            "search.baselines.c.rounds",
            "0 proxies",
        ),
        (
            {"rm": _m(tokens_per_proxy=0)},
            {},
            "search.baselines.rm.tokens_per_proxy",
            ">= 1",
        ),
        ({"rm": _m(proxis=8)}, {}, "search.baselines.rm.proxis", "not a field"),
        (
            {"rm": {"kind": "regmix", "proxies": 8}},
            {},
            "search.baselines.rm.tokens_per_proxy",
            "missing",
        ),
        ({"rm": 8}, {}, "search.baselines.rm", "expected a dict"),
        ({"demix": _m()}, {}, "search.baselines.demix", "reserved"),
        ({"natural": _m()}, {}, "search.baselines.natural", "reserved"),
        ({"a/b": _m()}, {}, "search.baselines.a/b", "plain name"),
        (
            {"rm": _m(proxies=64)},
            {"search.pool_size": 50},
            "search.baselines.rm.proxies",
            "pool_size",
        ),
        (
            {"uniform": _m()},
            {"final.fixed_mixtures": {"uniform": {"general": 1.0}}},
            "final.fixed_mixtures.uniform",
            "search.baselines",
        ),
    ],
)
def test_bad_methods_name_the_field_and_the_fix(methods, over, field, says):
  with pytest.raises(spec_lib.ConfigError) as err:
    _resolve(methods, **over)
  assert err.value.field == field, str(err.value)
  assert says in str(err.value) and "Fix:" in str(err.value)


def test_methods_change_the_hashes_of_the_stages_that_use_them():
  a = _resolve({"rm": _m()})
  b = _resolve({"rm": _m(tokens_per_proxy=1024)})
  for name in ("baselines", "final"):
    st = next(s for s in _stages() if s.name == name)
    assert st.config_hash(a) != st.config_hash(b), name


def _stages():
  from demix_jax.stages import registry  # pylint: disable=g-import-not-at-top

  return registry.STAGES


def test_the_stage_sits_between_search_and_final_and_is_opt_in():
  order = stage_lib.ORDER
  assert order.index("search") < order.index("baselines") < order.index("final")
  assert "baselines" not in demo.get_config().stages
  assert "baselines" in table3_small.get_config().stages


def test_table3_config_trains_the_fixed_mixtures_it_describes():
  s = spec_lib.resolve(table3_small.get_config())
  fixed = s.final.fixed_mixtures
  # Equal component weights, through the 0.5 general padding.
  assert fixed["uniform"] == pytest.approx(
      {"general": 2 / 3, "math": 1 / 6, "code": 1 / 6}
  )
  assert fixed["heuristic"] == pytest.approx(
      {"general": 0.7, "math": 0.1175, "code": 0.1825}
  )
  b = s.search.baselines
  assert (b["regmix"].kind, b["regmix"].rounds) == ("regmix", 1)
  assert (b["climb"].kind, b["climb"].rounds) == ("climb", 3)
  # Proxy steps against the components' 3 x 40 (the docstring's figures).
  step = s.train.global_batch_size * s.data.seq_len
  assert s.budgets.component_tokens * len(s.data.candidates) == 120 * step
  for name, steps in (("regmix", 120), ("climb", 140)):
    m = b[name]
    n = sum(m.proxies // 2**r for r in range(m.rounds))
    assert n * m.tokens_per_proxy == steps * step


def test_the_papers_methods_resolve_on_the_paper_config():
  import demix_jax as dx  # pylint: disable=g-import-not-at-top

  c = dx.load_config("qwen3_1p7b")
  c.search.baselines = table3_small.PAPER_METHODS
  c.stages = tuple(c.stages[:-2]) + ("baselines",) + tuple(c.stages[-2:])
  b = dx.resolve(c).search.baselines
  # Table 3: proxies x tokens per proxy, and CLIMB's rounds of n, n/2, n/4.
  totals = {
      n: (sum(m.proxies // 2**r for r in range(m.rounds)), m.tokens_per_proxy)
      for n, m in b.items()
  }
  assert totals == {
      "regmix_112x2B": (112, 2e9),
      "regmix_28x8B": (28, 8e9),
      "regmix_56x8B": (56, 8e9),
      "climb_112x2B": (112, 2e9),
      "climb_28x8B": (28, 8e9),
      "climb_56x8B": (56, 8e9),
  }
  assert all(m.rounds == (3 if m.kind == "climb" else 1) for m in b.values())
