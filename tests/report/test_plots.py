"""The report's plots render real, non-blank images."""

import numpy as np

from demix_jax.report import plots


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
  assert plots.png_is_drawn(p)
  a5 = rng.dirichlet(np.ones(5), size=20)
  p = plots.mixture_landscape(
      a5, a5[:, 0], list("abcde"), str(tmp_path / "p.png"), highlight=a5[0]
  )
  assert plots.png_is_drawn(p)


def test_other_plots_render(tmp_path):
  p = plots.predicted_vs_observed(
      np.arange(5.0), np.arange(5.0) + 0.1, str(tmp_path / "pv.png"), rho=1.0
  )
  assert plots.png_is_drawn(p)
  p = plots.best_per_round({"surrogate": [3, 2, 1]}, str(tmp_path / "r.png"))
  assert plots.png_is_drawn(p)
  p = plots.component_diagnostics(
      {"a": 0.01, "b": 0.02}, {("a", "b"): 0.1}, str(tmp_path / "d.png")
  )
  assert plots.png_is_drawn(p)
  p = plots.final_vs_baselines(
      {"found": {"x": 1.0}, "natural": {"x": 2.0}},
      ["x"],
      str(tmp_path / "f.png"),
      predicted={"x": 1.1},
  )
  assert plots.png_is_drawn(p)


def test_blank_png_is_detected(tmp_path):
  import matplotlib.pyplot as plt

  path = str(tmp_path / "blank.png")
  plt.imsave(path, np.ones((10, 10, 3)))
  assert not plots.png_is_drawn(path)
