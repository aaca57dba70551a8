"""The report's plots render real images that show what they claim."""

import matplotlib
from matplotlib.container import BarContainer
import matplotlib.pyplot as plt
import numpy as np
import pytest

from demix_jax.report import canvas
from demix_jax.report import plots
from demix_jax.report import run_plots


def test_ternary_and_parallel_render(tmp_path):
  rng = np.random.default_rng(0)
  a3 = rng.dirichlet(np.ones(3), size=40)
  v = a3 @ np.array([1.0, 2.0, 3.0])
  v[0] = np.nan  # a diverged proxy is drawn, not dropped silently
  p = plots.mixture_landscape(
      a3,
      v,
      ["g", "m", "c"],
      str(tmp_path / "t.png"),
      highlight=a3[1],
      paths=[a3[:5]],
  )
  assert canvas.png_is_drawn(p)
  a5 = rng.dirichlet(np.ones(5), size=20)
  p = plots.mixture_landscape(
      a5, a5[:, 0], list("abcde"), str(tmp_path / "p.png"), highlight=a5[0]
  )
  assert canvas.png_is_drawn(p)


def test_other_plots_render(tmp_path):
  p = plots.predicted_vs_observed(
      np.arange(5.0), np.arange(5.0) + 0.1, str(tmp_path / "pv.png"), rho=1.0
  )
  assert canvas.png_is_drawn(p)
  p = plots.best_per_round({"surrogate": [3, 2, 1]}, str(tmp_path / "r.png"))
  assert canvas.png_is_drawn(p)
  p = run_plots.component_diagnostics(
      {"a": 0.01, "b": 0.02}, {("a", "b"): 0.1}, str(tmp_path / "d.png")
  )
  assert canvas.png_is_drawn(p)
  p = run_plots.final_vs_baselines(
      {"found": {"x": 1.0}, "natural": {"x": 2.0}},
      ["x"],
      str(tmp_path / "f.png"),
      predicted={"x": 1.1},
  )
  assert canvas.png_is_drawn(p)


def test_blank_png_is_detected(tmp_path):
  import matplotlib.pyplot as plt

  path = str(tmp_path / "blank.png")
  plt.imsave(path, np.ones((10, 10, 3)))
  assert not canvas.png_is_drawn(path)


@pytest.fixture
def figures(monkeypatch):
  """The figures the plot functions save, kept open for inspection."""
  kept = []
  save = canvas.save

  def keep(fig, path):
    kept.append(fig)
    fig.canvas.draw()
    return save(fig, path)

  monkeypatch.setattr(canvas, "save", keep)
  monkeypatch.setattr(plt, "close", lambda fig=None: None)
  yield kept
  for fig in kept:
    matplotlib.pyplot.close(fig)


_TABLE = {
    "demix": {"domain/code": 4.90, "domain/math": 5.31},
    "natural": {"domain/code": 5.10, "domain/math": 5.28},
    "uniform": {"domain/code": 5.00, "domain/math": 5.40},
}


def _bars(ax):
  return [c for c in ax.containers if isinstance(c, BarContainer)]


def _solid_heights(ax):
  return [
      [p.get_height() for p in c.patches]
      for c in _bars(ax)
      if not c.patches[0].get_hatch()
  ]


def test_final_bars_are_differences_from_natural(tmp_path, figures):
  targets = ["domain/code", "domain/math"]
  p = run_plots.final_vs_baselines(_TABLE, targets, str(tmp_path / "f.png"))
  assert canvas.png_is_drawn(p)
  ax = figures[-1].axes[0]
  heights = _solid_heights(ax)
  # natural is the zero line, not a bar: demix and uniform minus natural.
  np.testing.assert_allclose(heights[0], [-0.20, 0.03], atol=1e-12)
  np.testing.assert_allclose(heights[1], [-0.10, 0.12], atol=1e-12)
  assert "natural" not in [t.get_text() for t in ax.get_legend().texts]
  assert "no error bars" in ax.get_title()
  assert "bits per byte" in ax.get_ylabel()
  # No spread given: no error bars drawn.
  assert all(c.errorbar is None for c in _bars(ax))


def test_final_bars_carry_the_seed_spread(tmp_path, figures):
  spread = {"demix": {"domain/code": 0.01, "domain/math": 0.02}}
  run_plots.final_vs_baselines(
      _TABLE,
      ["domain/code", "domain/math"],
      str(tmp_path / "f.png"),
      spread=spread,
  )
  ax = figures[-1].axes[0]
  demix, uniform = _bars(ax)
  segments = demix.errorbar.lines[2][0].get_segments()
  lengths = [abs(s[1][1] - s[0][1]) for s in segments]
  np.testing.assert_allclose(lengths, [0.02, 0.04], atol=1e-12)
  assert uniform.errorbar is None  # uniform: no seeds given
  assert "seed spread" in ax.get_title()


def test_final_proxy_bars_are_merged_differences(tmp_path, figures):
  proxies = {
      "demix": {"domain/code": 5.0, "domain/math": 5.3},
      "natural": {"domain/code": 5.2, "domain/math": 5.2},
  }
  table = {k: _TABLE[k] for k in ("demix", "natural")}
  run_plots.final_vs_baselines(
      table,
      ["domain/code", "domain/math"],
      str(tmp_path / "f.png"),
      proxies=proxies,
  )
  ax = figures[-1].axes[0]
  hatched = [
      [p.get_height() for p in c.patches]
      for c in _bars(ax)
      if c.patches[0].get_hatch()
  ]
  np.testing.assert_allclose(hatched, [[-0.2, 0.1]], atol=1e-12)
  # The found mixture's proxy alone (no proxy at natural) has nothing to
  # be a difference from: only the trained bars are drawn.
  run_plots.final_vs_baselines(
      table,
      ["domain/code"],
      str(tmp_path / "g.png"),
      predicted=proxies["demix"],
  )
  assert len(_bars(figures[-1].axes[0])) == 1


def test_final_without_the_reference_draws_scores_off_zero(tmp_path, figures):
  table = {"demix": {"x/bpb": 4.0}, "uniform": {"x/bpb": 4.2}}
  run_plots.final_vs_baselines(table, ["x/bpb"], str(tmp_path / "f.png"))
  ax = figures[-1].axes[0]
  np.testing.assert_allclose(_solid_heights(ax), [[4.0], [4.2]])
  lo, hi = ax.get_ylim()
  assert 3.9 < lo < 4.0 and 4.2 < hi < 4.3


def test_text_colour_follows_the_cell_luminance():
  assert canvas.text_colour((1.0, 1.0, 1.0, 1.0)) == "k"
  assert canvas.text_colour((0.0, 0.0, 0.0, 1.0)) == "w"
  assert canvas.text_colour((0.99, 0.99, 0.75)) == "k"  # magma's top
  assert canvas.text_colour((0.2, 0.05, 0.35)) == "w"  # magma's low end


def test_barrier_grid_text_reads_on_its_cell(tmp_path, figures):
  run_plots.component_diagnostics(
      {"a": 0.01, "b": 0.02, "c": 0.03},
      {("a", "b"): 0.0, ("a", "c"): 0.5, ("b", "c"): 0.25},
      str(tmp_path / "d.png"),
  )
  fig = figures[-1]
  grid = fig.axes[1]
  colours = {
      t.get_text(): matplotlib.colors.to_hex(t.get_color()) for t in grid.texts
  }
  assert colours["0.5"] == "#000000"  # the lightest cell: dark text
  assert colours["0"] == "#ffffff"  # the darkest cell: white text
  colourbar = fig.axes[2]
  assert "bits per byte" in colourbar.get_ylabel()
  assert "nats" not in colourbar.get_ylabel()
