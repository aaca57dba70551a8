"""Plots of the search and the final runs (matplotlib, Agg backend).

The search's plots live here; the trained runs' (components, final runs)
in `run_plots`, and the helpers they share in `canvas`.

Every function takes plain arrays/dicts and a path, writes one PNG and
returns the path, so the report stage, notebooks and tests share them.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from demix_jax.report import canvas


def _ternary_xy(alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  # Vertex 0 bottom-left, 1 bottom-right, 2 top.
  x = alphas[:, 1] + 0.5 * alphas[:, 2]
  y = alphas[:, 2] * math.sqrt(3) / 2
  return x, y


def mixture_landscape(
    alphas: np.ndarray,
    values: np.ndarray,
    names: Sequence[str],
    path: str,
    *,
    title: str = "evaluated proxies",
    value_label: str = "score",
    highlight: np.ndarray | None = None,
    paths: Sequence[np.ndarray] = (),
) -> str:
  """Evaluated mixtures coloured by a score.

  A ternary plot for three candidates, parallel coordinates otherwise.

  Args:
    alphas: [M, K] mixtures on the simplex.
    values: [M] score per mixture (NaN entries are drawn hollow).
    names: K candidate names.
    path: output PNG path.
    title: plot title.
    value_label: colour-bar label.
    highlight: optional [K] mixture (e.g. alpha*) drawn as a star.
    paths: optional list of [S, K] trajectories (gradient search).

  Returns:
    The path written.
  """
  alphas = np.asarray(alphas, dtype=np.float64)
  values = np.asarray(values, dtype=np.float64)
  k = alphas.shape[1]
  finite = np.isfinite(values)
  if k == 3:
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    corners = np.array([[0, 0], [1, 0], [0.5, math.sqrt(3) / 2], [0, 0]])
    # Light lines at 25/50/75% of each candidate, so weights can be read.
    for c in range(3):
      for level in (0.25, 0.5, 0.75):
        ends = np.zeros((2, 3))
        ends[:, c] = level
        ends[0, (c + 1) % 3] = ends[1, (c + 2) % 3] = 1.0 - level
        gx, gy = _ternary_xy(ends)
        ax.plot(gx, gy, color="0.88", lw=0.7, zorder=0)
    ax.plot(corners[:, 0], corners[:, 1], color="0.3", lw=1)
    for i, (cx, cy) in enumerate(corners[:3]):
      ax.annotate(
          f"{names[i]} = 1",
          (cx, cy),
          textcoords="offset points",
          xytext=(0, -16 if cy == 0 else 12),
          ha="center",
          fontsize=10,
          fontweight="bold",
      )
    x, y = _ternary_xy(alphas)
    sc = ax.scatter(
        x[finite],
        y[finite],
        c=values[finite],
        cmap="viridis",
        s=28,
        edgecolor="k",
        linewidth=0.3,
    )
    if (~finite).any():
      ax.scatter(
          x[~finite],
          y[~finite],
          facecolor="none",
          edgecolor="r",
          s=28,
          label="not finite (diverged)",
      )
    for n, p in enumerate(paths):
      px, py = _ternary_xy(np.asarray(p))
      ax.plot(
          px,
          py,
          "-",
          color="tab:red",
          lw=1.2,
          alpha=0.8,
          label="gradient search path" if n == 0 else None,
      )
      ax.plot(px[-1:], py[-1:], "o", color="tab:red", ms=4)
    if highlight is not None:
      hx, hy = _ternary_xy(np.asarray(highlight)[None])
      ax.plot(
          hx,
          hy,
          "*",
          color="tab:orange",
          ms=16,
          mec="k",
          label="chosen mixture",
          zorder=5,
      )
    if highlight is not None or paths or (~finite).any():
      ax.legend(loc="upper left", bbox_to_anchor=(-0.02, 1.0), fontsize=8)
    fig.colorbar(sc, ax=ax, label=value_label, shrink=0.75)
    ax.set_aspect("equal")
    ax.set_xlim(-0.08, 1.08)
    ax.set_ylim(-0.08, math.sqrt(3) / 2 + 0.08)
    ax.axis("off")
  else:
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * k), 4.5))
    vmin = np.nanmin(values) if finite.any() else 0
    vmax = np.nanmax(values) if finite.any() else 1
    cmap = plt.get_cmap("viridis")
    for a, v in zip(alphas, values):
      color = (
          cmap((v - vmin) / (vmax - vmin + 1e-12)) if np.isfinite(v) else "r"
      )
      ax.plot(range(k), a, color=color, alpha=0.6, lw=1)
    if highlight is not None:
      ax.plot(
          range(k), highlight, color="tab:orange", lw=3, label="chosen mixture"
      )
      ax.legend(fontsize=8)
    ax.set_xticks(range(k), names, rotation=30)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("weight of the candidate")
    sm = plt.cm.ScalarMappable(
        cmap=cmap, norm=plt.Normalize(vmin=vmin, vmax=vmax)
    )
    fig.colorbar(sm, ax=ax, label=value_label)
  ax.set_title(title, pad=14 if k == 3 else 6)
  return canvas.save(fig, path)


def predicted_vs_observed(
    predicted: np.ndarray,
    observed: np.ndarray,
    path: str,
    *,
    label: str = "objective",
    rho: float | None = None,
) -> str:
  """Scatter of surrogate predictions against measured scores."""
  predicted = np.asarray(predicted, dtype=np.float64)
  observed = np.asarray(observed, dtype=np.float64)
  fig, ax = plt.subplots(figsize=(5.2, 5))
  ax.scatter(observed, predicted, s=18, alpha=0.8)
  both = np.concatenate([predicted, observed])
  both = both[np.isfinite(both)]
  if both.size:
    # One range on both axes: the dashed diagonal is predicted = observed.
    lo, hi = both.min(), both.max()
    pad = 0.05 * (hi - lo) or 0.01 * abs(hi) or 0.01
    ax.plot([lo, hi], [lo, hi], "--", color="0.5", lw=1, label="y = x")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.legend(fontsize=8, loc="upper left")
  for axis in (ax.xaxis, ax.yaxis):
    axis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
  unit = canvas.unit_of(label)
  unit = "" if unit == "score" else f" ({unit})"
  ax.set_xlabel(f"observed {label}{unit}")
  ax.set_ylabel(f"predicted {label}{unit}")
  title = (
      f"surrogate on {observed.size} proxies: out-of-fold prediction vs "
      "observed"
  )
  if rho is not None:
    title += f"\nSpearman {rho:.3f}"
  ax.set_title(title, fontsize=10)
  return canvas.save(fig, path)


def best_per_round(
    best: Mapping[str, Sequence[float]],
    path: str,
    *,
    ylabel: str = "best score so far",
) -> str:
  """One line per method: the best objective after each round."""
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for name, values in best.items():
    ax.plot(range(1, len(values) + 1), values, "o-", label=name)
  ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
  ax.set_xlabel("round")
  ax.set_ylabel(ylabel)
  ax.legend(fontsize=8)
  ax.set_title("search progress: best proxy after each round", fontsize=10)
  return canvas.save(fig, path)


def curve(
    xs: Mapping[str, Sequence[float]],
    ys: Mapping[str, Sequence[float]],
    path: str,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
) -> str:
  """Generic named line plot (e.g. rho vs total training tokens)."""
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for name in ys:
    ax.plot(xs[name], ys[name], "o-", label=name)
  if logx:
    ax.set_xscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.legend(fontsize=8)
  return canvas.save(fig, path)


def accuracy_vs_cost(
    xs: Mapping[str, Sequence[float]],
    rho: Mapping[str, Sequence[float]],
    path: str,
    *,
    top_rho: Mapping[str, Sequence[float]] | None = None,
    title: str = "proxy accuracy vs cost (paper Fig. 1)",
    xlabel: str = "total training tokens (training-token equivalents)",
    hlines: Mapping[str, float] | None = None,
) -> str:
  """Macro rho (solid) and top-25% rho (dashed) vs total training tokens.

  Args:
    xs: {family: total training tokens per point} (log axis when all > 0).
    rho: {family: macro Spearman rho per point}.
    path: output PNG path.
    top_rho: optional {family: macro top-25% rho per point}.
    title: plot title.
    xlabel: x-axis label.
    hlines: optional {label: rho} drawn across (e.g. the noise ceiling).

  Returns:
    The path written.
  """
  fig, ax = plt.subplots(figsize=(8.6, 4.2))
  for j, (name, y) in enumerate((hlines or {}).items()):
    ax.axhline(y, color="0.3", ls=(":", "-.", "--")[j % 3], lw=1.2, label=name)
  for i, name in enumerate(rho):
    color = f"C{i}"
    ax.plot(xs[name], rho[name], "o-", color=color, label=f"{name}: rho")
    if top_rho and name in top_rho:
      ax.plot(
          xs[name],
          top_rho[name],
          "s--",
          color=color,
          alpha=0.7,
          label=f"{name}: top-25% rho",
      )
  if all(x > 0 for v in xs.values() for x in v):
    ax.set_xscale("log")
    # A short log axis gets 1-2-5 ticks with compact labels (3M, 20B);
    # matplotlib's default minor labels collide.
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(
        matplotlib.ticker.FuncFormatter(lambda v, _: canvas.compact(v))
    )
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.axhline(0.0, color="0.7", lw=0.8)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("macro Spearman rho vs reference runs")
  ax.set_title(title, fontsize=10)
  # Outside the axes: inside, it covered the points it names.
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  return canvas.save(fig, path)
