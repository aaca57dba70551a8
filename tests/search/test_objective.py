"""Tests of the search objective (demix_jax/search/objective.py)."""

import logging

import numpy as np
import pytest

from demix_jax.search import objective


def _dir(name):
  return not name.endswith("bpb")


def test_composite_hand_case():
  scores = {
      "domain/general": np.array([0.5, 0.7, 0.6, 0.4]),  # higher better
      "heldout/bpb": np.array([1.0, 1.2, 0.9, 1.1]),  # lower better
  }
  spec = objective.ObjectiveSpec(("domain/general", "heldout/bpb"))
  v = objective.evaluate(scores, spec, _dir)
  # Percentile rank of each row, best = 1/4.
  gen = np.array([3, 1, 2, 4]) / 4
  bpb = np.array([2, 4, 1, 3]) / 4
  np.testing.assert_allclose(v, (gen + bpb) / 2)


def test_composite_ties_and_weights():
  scores = {"a": np.array([1.0, 1.0, 0.0]), "b": np.array([0.0, 1.0, 2.0])}
  spec = objective.ObjectiveSpec(("a", "b"), weights={"a": 3.0})
  v = objective.evaluate(scores, spec, lambda n: True)
  a = np.array([1.5, 1.5, 3]) / 3  # tie averaged
  b = np.array([3, 2, 1]) / 3
  np.testing.assert_allclose(v, (3 * a + b) / 4)


def test_single_target_direction():
  scores = {"acc": np.array([0.1, 0.9]), "heldout/x/bpb": np.array([2.0, 1.0])}
  up = objective.evaluate(
      scores, objective.ObjectiveSpec(("acc",), "target"), _dir
  )
  np.testing.assert_allclose(up, [-0.1, -0.9])
  down = objective.evaluate(
      scores, objective.ObjectiveSpec(("heldout/x/bpb",), "target"), _dir
  )
  np.testing.assert_allclose(down, [2.0, 1.0])


def test_nan_rows_are_excluded_with_a_warning(caplog):
  scores = {"a": np.array([0.3, np.nan, 0.1, 0.2])}
  spec = objective.ObjectiveSpec(("a",))
  with caplog.at_level(logging.WARNING):
    v = objective.evaluate(scores, spec, lambda n: True)
  assert "NaN" in caplog.text and "[1]" in caplog.text
  assert np.isnan(v[1])
  np.testing.assert_allclose(v[[0, 2, 3]], [1 / 3, 1.0, 2 / 3])


def test_bad_specs_raise():
  with pytest.raises(ValueError, match="exactly one"):
    objective.ObjectiveSpec(("a", "b"), kind="target")
  with pytest.raises(ValueError, match="not one of"):
    objective.ObjectiveSpec(("a",), weights={"b": 1.0})
  with pytest.raises(KeyError, match="not among"):
    objective.evaluate({"a": np.ones(2)}, objective.ObjectiveSpec(("b",)), _dir)


def test_optimistic_scores_move_to_the_good_side():
  spec = objective.ObjectiveSpec(("acc", "x/bpb"))
  out = objective.optimistic_scores(
      {"acc": np.array([0.5]), "x/bpb": np.array([1.0])},
      {"acc": np.array([0.1]), "x/bpb": np.array([0.2])},
      spec,
      _dir,
      2.0,
  )
  np.testing.assert_allclose(out["acc"], [0.7])
  np.testing.assert_allclose(out["x/bpb"], [0.6])


def test_normalized_hand_case_and_a_loss_cannot_hide():
  base = {"domain/a": 4.0, "domain/b": 2.0, "domain/acc": 0.5}
  spec = objective.ObjectiveSpec(
      ("domain/a", "domain/b", "domain/acc"), "normalized"
  ).with_reference(base)
  direction = lambda t: t == "domain/acc"
  scores = {
      "domain/a": np.array([3.0, 4.0]),
      "domain/b": np.array([2.0, 1.9]),
      "domain/acc": np.array([0.5, 0.6]),
  }
  v = objective.evaluate(scores, spec, direction)
  # Row 0: a improves 25%, b and acc unchanged -> -0.25 / 3.
  # Row 1: b improves 5%, acc improves 20% -> -0.25 / 3.
  np.testing.assert_allclose(v, [-0.25 / 3, -0.25 / 3])
  # Two small wins against one large loss: the composite ranks the mixture
  # with the large loss first, the normalised mean does not.
  s2 = {
      "domain/a": np.array([3.9, 4.0]),  # row 0: a 2.5% win
      "domain/b": np.array([1.9, 2.0]),  # row 0: a 5% win
      "domain/acc": np.array([0.2, 0.5]),  # row 0: a 60% loss
  }
  comp = objective.ObjectiveSpec(spec.targets, "composite")
  assert objective.evaluate(s2, comp, direction)[0] < (
      objective.evaluate(s2, comp, direction)[1]
  )
  norm = objective.evaluate(s2, spec, direction)
  assert norm[1] < norm[0]


def test_normalized_needs_its_reference():
  spec = objective.ObjectiveSpec(("domain/a",), "normalized")
  with pytest.raises(ValueError, match="with_reference"):
    objective.evaluate({"domain/a": np.ones(2)}, spec, lambda t: False)
  with pytest.raises(ValueError, match="reference"):
    objective.ObjectiveSpec(
        ("domain/a",), "normalized", reference={"domain/a": float("nan")}
    )
