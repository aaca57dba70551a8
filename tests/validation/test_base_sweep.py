"""The base sweep: its points, its rows from real validation tables, its CLI."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import demix_jax
from demix_jax import models
from demix_jax.validation import base_sweep
from demix_jax.validation import harness
from demix_jax.validation import subruns
from tests.validation import test_heldout_targets as fake

CONFIG = "configs/validate_small.py"
ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_points_are_whole_steps_of_the_small_model():
  n, points = base_sweep.point_plan(CONFIG, "small", [0.4, 30, 4])
  # d_model 64, 2 layers, vocab 2048 tied: 131,136 + 2 x 49,344.
  assert n == 229_824
  step = 16 * 128
  for p, want in zip(points, (0.4, 30, 4)):
    assert p["base_tokens"] % step == 0
    assert abs(p["tpp"] - want) <= step / n  # within one step
    assert p["tpp"] == pytest.approx(p["base_tokens"] / n)
    assert p["overrides"]["base.tokens"] == p["base_tokens"]
    assert p["overrides"]["model.d_model"] == 64
  assert [p["name"] for p in points] == ["tpp0.4", "tpp30", "tpp4"]


def test_the_config_model_keeps_its_size():
  # table3_small keeps the three-candidate pipeline's tiny_1m.
  n, (point,) = base_sweep.point_plan("configs/table3_small.py", "config", [4])
  assert n == models.num_params(models.get_preset("tiny_1m")) == 1_049_984
  assert point["overrides"] == {"base.tokens": point["base_tokens"]}
  assert abs(point["tpp"] - 4) <= 16 * 128 / n


@pytest.mark.parametrize(
    "tpp, match",
    [([0.0], "positive"), ([float("nan")], "positive"), ([30, 30.001], "both")],
)
def test_bad_points_are_refused_before_any_run(tpp, match):
  with pytest.raises(ValueError, match=match):
    base_sweep.point_plan(CONFIG, "small", tpp)


def _table(tmp_path, seed):
  alphas = np.random.default_rng(seed).dirichlet(np.ones(fake.K), size=fake.R)
  fakes = fake.Fakes(alphas, fake.TARGETS)
  return harness.run_validation(
      str(tmp_path / f"t{seed}"),
      alphas,
      fake.TARGETS,
      fakes.train,
      fakes.score,
      fakes.merged_scores,
      reference_tokens=16e6,
      variants=(
          harness.MergedVariant("l2", 2e6),
          harness.MergedVariant("l4", 4e6),
          harness.MergedVariant("t4", 4e6, merge_method="ties"),
      ),
      cost=fake.COST,
      proxy_fractions=(1 / 16, 1 / 4),
      twins=fake.TWINS,
      train_twin=fakes.train,
      score_twin=lambda i, f: fakes.score(i, f, seed=7),
      write=False,
  )


def test_rows_markdown_and_plot_from_validation_tables(tmp_path):
  n, points = base_sweep.point_plan(CONFIG, "small", [0.4, 30])
  done = {"eval": {"heldout/a/bpb": 3.0, "heldout/b/bpb": 5.0, "x/loss": 9}}
  rows = []
  for seed, p in enumerate(points):
    table = _table(tmp_path, seed)
    got = base_sweep.rows_of(p, table, done, n)
    main = [r for r in table["rows"] if r["family"] == "merged" and r["main"]]
    assert len(got) == len(main) == 2  # the TIES variant is not a main row
    for g, r in zip(got, main):
      assert g["rho_macro"] == r["rho"]["macro"]
      assert g["rho_macro_heldout"] == r["rho"]["macro_heldout"]
      assert g["ceiling_macro"] == table["ceiling"]["macro"]
      assert g["ceiling_macro_heldout"] == table["ceiling"]["macro_heldout"]
      assert g["base_heldout_bpb"] == 4.0  # the mean of the bpb entries
      # The trained proxy nearest in total tokens (log scale).
      trained = [x for x in table["rows"] if x["family"] == "trained"]
      best = min(
          trained,
          key=lambda x: abs(np.log(x["total_tokens"] / r["total_tokens"])),
      )
      assert g["trained_total_tokens"] == best["total_tokens"]
      assert g["trained_rho_macro"] == best["rho"]["macro"]
      assert set(g["rho"]) == set(fake.TARGETS)
    rows += got
  md = base_sweep.markdown(rows)
  body = [
      line for line in md.splitlines() if line.startswith(("| 0.40", "| 30.00"))
  ]
  assert len(body) == 4
  for t in fake.TARGETS:
    assert f"| {t} |" in md
  png = base_sweep.plot(rows, str(tmp_path / "sweep.png"))
  assert os.path.getsize(png) > 10_000


def test_run_pipeline_builds_the_main_command(monkeypatch, tmp_path):
  seen = []
  monkeypatch.setattr(
      subruns.subprocess, "run", lambda cmd, check: seen.append((cmd, check))
  )
  subruns.run_pipeline("c.py", "wd", {"base.tokens": 5}, ["x.y=(1,)"])
  ((cmd, check),) = seen
  assert check and cmd[1:] == [
      "-m",
      "demix_jax.main",
      "--config=c.py",
      "--workdir=wd",
      "--config.base.tokens=5",
      "--config.x.y=(1,)",
  ]
  first, other = tmp_path / "a", tmp_path / "b"
  (first / "data").mkdir(parents=True)
  (first / "validate" / "scores").mkdir(parents=True)
  (first / "validate" / "scores" / "reference.json").write_text("{}")
  subruns.share(str(first), str(other), ("data",), ("reference.json",))
  assert os.path.islink(other / "data")
  assert (other / "validate" / "scores" / "reference.json").read_text() == "{}"


def test_cli_refuses_a_bad_point_naming_the_flag(tmp_path):
  p = subprocess.run(
      [
          sys.executable,
          "-m",
          "demix_jax.validation.base_sweep",
          f"--workdir={tmp_path}",
          "--tpp=0.4,-1",
      ],
      capture_output=True,
      text=True,
      check=False,
  )
  assert p.returncode != 0
  assert "--tpp" in p.stderr and "positive" in p.stderr
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
    "config, tpp", [("configs/demo.py", 4), ("configs/validate_small.py", 30)]
)
def test_the_configs_train_a_measured_point(config, tpp):
  """The demo and validate_small train a point docs/base_sweep.json measured."""
  c = demix_jax.load_config(config)
  for k, v in base_sweep.MODELS["small"].items():
    assert c.model[k.split(".")[1]] == v
  measured = json.loads((ROOT / "docs" / "base_sweep.json").read_text())
  (row,) = {
      (r["base_tokens"], r["params"])
      for r in measured["rows"]
      if r["point"] == f"tpp{tpp}"
  }
  assert (c.base.tokens, row[1]) == row
  assert models.num_params(models.ModelConfig(**c.model.to_dict())) == row[1]
