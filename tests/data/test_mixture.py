"""Tests of the mixture arithmetic (weights, DeMix mapping, repetition)."""

import math

import pytest

from demix_jax.data import errors
from demix_jax.data import mixture

SOURCES = ("general", "math", "code")


def test_validate_weights_normalises_and_errors():
  assert mixture.validate_weights({"general": 0.5, "math": 0.5}, SOURCES) == {
      "general": 0.5,
      "math": 0.5,
  }
  assert mixture.validate_weights(
      {"general": 2, "math": 2}, SOURCES, normalize="warn"
  ) == {"general": 0.5, "math": 0.5}
  with pytest.raises(errors.MixtureError, match=r"sum to 4.*normalize"):
    mixture.validate_weights({"general": 2, "math": 2}, SOURCES, "d.mix")
  with pytest.raises(errors.MixtureError) as err:
    mixture.validate_weights({"web": 1.0}, SOURCES, "d.mix")
  assert (err.value.mixture, err.value.key) == ("d.mix", "web")
  assert str(err.value) == (
      "d.mix['web']: unknown source 'web'. Fix: use names of the defined "
      "sources: ['general', 'math', 'code']"
  )
  with pytest.raises(errors.MixtureError, match="negative"):
    mixture.validate_weights({"general": 1.5, "math": -0.5}, SOURCES)
  with pytest.raises(errors.MixtureError, match="not finite"):
    mixture.validate_weights({"general": math.nan, "math": 1.0}, SOURCES)
  with pytest.raises(errors.MixtureError, match="all weights are zero"):
    mixture.validate_weights({"general": 0.0, "math": 0.0}, SOURCES)
  with pytest.raises(errors.MixtureError, match="no source weights"):
    mixture.validate_weights({}, SOURCES)


def test_mixture_errors_are_library_errors():
  """Plain ValueErrors with structured fields; no config field paths."""
  with pytest.raises(errors.MixtureError) as err:
    mixture.validate_weights({"general": -1.0}, SOURCES, "final run")
  e = err.value
  assert isinstance(e, ValueError) and not hasattr(e, "field")
  assert (e.mixture, e.key) == ("final run", "general")
  assert e.problem == "weight -1.0 is negative or not finite"
  assert e.fix == "use a weight >= 0"
  with pytest.raises(errors.MixtureError) as err:
    mixture.validate_weights({"general": 0.0}, SOURCES)
  assert (err.value.mixture, err.value.key) == ("mixture", "")
  with pytest.raises(errors.MixtureError) as err:
    mixture.component_weights("math", "general", 1.5)
  assert err.value.key == "beta" and err.value.mixture == ""
  assert str(err.value).startswith("beta: beta=1.5 is not in [0, 1]. Fix:")
  with pytest.raises(errors.MixtureError) as err:
    mixture.alpha_to_weights({"math": 1.0}, "general", 0.5)
  assert err.value.key == "general" and "'general'" in err.value.problem
  for bad in ({"web": 1.0}, {"general": "x"}, {"general": 2.0}, {}):
    with pytest.raises(errors.MixtureError) as err:
      mixture.validate_weights(bad, SOURCES)
    assert "data." not in str(err.value), str(err.value)


def test_zero_weights_are_dropped_tiny_kept():
  w = mixture.active({"general": 0.9999, "math": 1e-4, "code": 0.0})
  assert w == {"general": 0.9999, "math": 1e-4}


def test_component_weights():
  assert mixture.component_weights("math", "general", 0.5) == {
      "general": 0.5,
      "math": 0.5,
  }
  assert mixture.component_weights("general", "general", 0.5) == {
      "general": 1.0
  }
  assert mixture.component_weights("code", "general", 0.25) == {
      "general": 0.25,
      "code": 0.75,
  }
  assert mixture.component_weights("code", "general", 0.0) == {"code": 1.0}


def test_alpha_to_weights_hand_cases():
  # alpha = (0.2, 0.3, 0.5), beta = 0.5:
  # general = 0.2 + 0.5 * 0.8 = 0.6; math = 0.15; code = 0.25.
  w = mixture.alpha_to_weights(
      {"general": 0.2, "math": 0.3, "code": 0.5}, "general", 0.5
  )
  assert w == pytest.approx(
      {"general": 0.6, "math": 0.15, "code": 0.25}, abs=1e-12
  )
  # beta = 0 is the identity; beta = 1 is all general.
  a = {"general": 0.1, "math": 0.6, "code": 0.3}
  assert mixture.alpha_to_weights(a, "general", 0.0) == pytest.approx(a)
  assert mixture.alpha_to_weights(a, "general", 1.0) == pytest.approx(
      {"general": 1.0, "math": 0.0, "code": 0.0}
  )
  # The final corpus is sum_i alpha_i D'_i with D'_i = component recipe.
  via_components = {}
  for c, ac in a.items():
    for s, ws in mixture.component_weights(c, "general", 0.5).items():
      via_components[s] = via_components.get(s, 0.0) + ac * ws
  assert mixture.alpha_to_weights(a, "general", 0.5) == pytest.approx(
      via_components, abs=1e-12
  )
  back = mixture.weights_to_alpha(
      mixture.alpha_to_weights(a, "general", 0.5), "general", 0.5
  )
  assert back == pytest.approx(a, abs=1e-12)


def test_paper_stage3_check():
  """docs/paper_notes.md, alpha-to-weights: DeMix-224 alpha -> v3 Table 10."""
  names = ["general", "math1", "math2", "math3", "code1", "code2", "code3"]
  alpha = dict(zip(names, (0.218, 0.403, 0.002, 0.063, 0.044, 0.176, 0.094)))
  w = mixture.alpha_to_weights(alpha, "general", 0.5)
  predicted = {
      "general": 0.609,
      "math1": 0.2015,
      "math3": 0.0315,
      "code1": 0.022,
      "code2": 0.088,
      "code3": 0.047,
  }
  for k, v in predicted.items():
    assert w[k] == pytest.approx(v, abs=1e-9), k
  # Table 10 tokens (B) of 1996B; the published fractions agree to 1e-3.
  table = {
      "general": 1121 + 96,
      "math1": 402,
      "math3": 63,
      "code1": 44,
      "code2": 176,
      "code3": 94,
  }
  for k, tokens in table.items():
    assert w[k] == pytest.approx(tokens / 1996, abs=1e-3), k


def test_epochs_and_repetition():
  counts = {"general": 1000, "math": 100}
  e = mixture.epochs_per_source(
      {"general": 0.5, "math": 0.5, "code": 0.0}, counts, 800
  )
  assert e == {"general": 0.4, "math": 4.0}
  mixture.check_repetition({"general": 0.5, "math": 0.5}, counts, 800, 4.0)
  with pytest.raises(mixture.RepetitionError, match=r"math 4\.50x.*max_epochs"):
    mixture.check_repetition({"general": 0.5, "math": 0.5}, counts, 900, 4.0)
  e = mixture.check_repetition(
      {"general": 0.5, "math": 0.5}, counts, 900, 4.0, on_overrun="warn"
  )
  assert e["math"] == pytest.approx(4.5)


def test_alpha_caps_hand_case():
  counts = {"general": 1000, "math": 100, "code": 10_000}
  # run 800 tokens, beta 0.5, 4 epochs:
  #   math: 4 * 100 / (0.5 * 800) = 1.0; code: 4 * 10000 / 400 -> 1;
  #   general: (4 * 1000 / 800 - 0.5) / 0.5 = 9 -> 1.
  caps = mixture.alpha_caps(
      ["general", "math", "code"], "general", counts, 800, 0.5, 4.0
  )
  assert caps == {"general": 1.0, "math": 1.0, "code": 1.0}
  caps = mixture.alpha_caps(
      ["general", "math", "code"], "general", counts, 8000, 0.5, 4.0
  )
  # math: 400 / 4000 = 0.1; general: (0.5 - 0.5) / 0.5 = 0.
  assert caps["math"] == pytest.approx(0.1)
  assert caps["general"] == pytest.approx(0.0)
  assert caps["code"] == pytest.approx(1.0)
  # At the cap, the mapped weights repeat math exactly max_epochs times.
  a = {"general": 0.0, "math": 0.1, "code": 0.9}
  w = mixture.alpha_to_weights(a, "general", 0.5)
  assert mixture.epochs_per_source(w, counts, 8000)["math"] == pytest.approx(
      4.0
  )
