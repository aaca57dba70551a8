"""Plots of the search and the final runs (matplotlib, Agg backend).

Every function takes plain arrays/dicts and a path, writes one PNG and
returns the path, so the report stage, notebooks and tests share them.
"""

from __future__ import annotations

import io
import math
import os
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from demix_jax import storage

_DPI = 110


def _save(fig, path: str) -> str:
  fig.tight_layout()
  # Rendered in memory, then written in one go: a kill never leaves half an
  # image, and the report may live on gs://, which savefig cannot open.
  buf = io.BytesIO()
  fmt = os.path.splitext(path)[1].lstrip(".").lower() or None
  fig.savefig(buf, dpi=_DPI, format=fmt)
  plt.close(fig)
  storage.atomic_write_bytes(path, buf.getvalue())
  return path


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
    ax.plot(corners[:, 0], corners[:, 1], color="0.3", lw=1)
    for i, (cx, cy) in enumerate(corners[:3]):
      ax.annotate(
          names[i],
          (cx, cy),
          textcoords="offset points",
          xytext=(0, -14 if cy == 0 else 6),
          ha="center",
          fontsize=10,
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
      ax.scatter(x[~finite], y[~finite], facecolor="none", edgecolor="r", s=28)
    for p in paths:
      px, py = _ternary_xy(np.asarray(p))
      ax.plot(px, py, "-", color="tab:red", lw=1.2, alpha=0.8)
      ax.plot(px[-1:], py[-1:], "o", color="tab:red", ms=4)
    if highlight is not None:
      hx, hy = _ternary_xy(np.asarray(highlight)[None])
      ax.plot(
          hx,
          hy,
          "*",
          color="tab:orange",
          ms=18,
          mec="k",
          label="chosen mixture",
      )
      ax.legend(loc="upper right", fontsize=8)
    fig.colorbar(sc, ax=ax, label=value_label)
    ax.set_aspect("equal")
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
    ax.set_ylabel("weight")
    sm = plt.cm.ScalarMappable(
        cmap=cmap, norm=plt.Normalize(vmin=vmin, vmax=vmax)
    )
    fig.colorbar(sm, ax=ax, label=value_label)
  ax.set_title(title, pad=22 if k == 3 else 6)
  return _save(fig, path)


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
  fig, ax = plt.subplots(figsize=(5, 5))
  ax.scatter(observed, predicted, s=18, alpha=0.8)
  both = np.concatenate([predicted, observed])
  both = both[np.isfinite(both)]
  if both.size:
    lo, hi = both.min(), both.max()
    ax.plot([lo, hi], [lo, hi], "--", color="0.5", lw=1)
  ax.set_xlabel(f"observed {label}")
  ax.set_ylabel(f"predicted {label}")
  title = "surrogate: predicted vs observed (held-out folds)"
  if rho is not None:
    title += f"\nSpearman {rho:.3f}"
  ax.set_title(title, fontsize=10)
  return _save(fig, path)


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
  ax.set_xlabel("round")
  ax.set_ylabel(ylabel)
  ax.legend(fontsize=8)
  ax.set_title("search progress")
  return _save(fig, path)


def component_diagnostics(
    deltas: Mapping[str, float],
    barriers: Mapping[tuple[str, str], float],
    path: str,
) -> str:
  """Bar chart of per-component delta (Eq. 4) and a pairwise barrier grid."""
  names = list(deltas)
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
  ax1.bar(names, [100 * deltas[n] for n in names], color="tab:blue")
  ax1.set_ylabel("delta vs base (%)")
  ax1.set_title(
      "component drift (paper: ~3% at 2B, ~10% at 30B tokens)", fontsize=9
  )
  grid = np.full((len(names), len(names)), np.nan)
  for (a, b), v in barriers.items():
    if a in names and b in names:
      i, j = names.index(a), names.index(b)
      grid[i, j] = grid[j, i] = v
  im = ax2.imshow(grid, cmap="magma")
  ax2.set_xticks(range(len(names)), names, rotation=30)
  ax2.set_yticks(range(len(names)), names)
  for i in range(len(names)):
    for j in range(len(names)):
      if np.isfinite(grid[i, j]):
        ax2.text(
            j,
            i,
            f"{grid[i, j]:.3f}",
            ha="center",
            va="center",
            color="w",
            fontsize=8,
        )
  fig.colorbar(im, ax=ax2, label="loss barrier (nats)")
  ax2.set_title("pairwise loss barrier along the merge line", fontsize=9)
  return _save(fig, path)


def final_vs_baselines(
    table: Mapping[str, Mapping[str, float]],
    targets: Sequence[str],
    path: str,
    *,
    predicted: Mapping[str, float] | None = None,
) -> str:
  """Grouped bars: each run (found mixture, baselines) on each target."""
  runs = list(table)
  fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(targets)), 4.2))
  width = 0.8 / (len(runs) + (1 if predicted else 0))
  x = np.arange(len(targets))
  for i, run in enumerate(runs):
    ax.bar(
        x + i * width,
        [table[run].get(t, np.nan) for t in targets],
        width,
        label=run,
    )
  if predicted:
    ax.bar(
        x + len(runs) * width,
        [predicted.get(t, np.nan) for t in targets],
        width,
        label="proxy prediction",
        color="0.7",
        hatch="//",
    )
  ax.set_xticks(
      x + 0.4 - width / 2, targets, rotation=25, ha="right", fontsize=8
  )
  ax.legend(fontsize=8)
  ax.set_title("final runs: found mixture vs baselines")
  return _save(fig, path)


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
  return _save(fig, path)


def png_is_drawn(path: str) -> bool:
  """True if the PNG decodes and is not a single flat colour."""
  image = plt.imread(path)
  return image.ndim >= 2 and float(np.std(image[..., :3])) > 1e-3


def _compact(v: float) -> str:
  for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
    if abs(v) >= scale:
      return f"{v / scale:g}{unit}"
  return f"{v:g}"


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
  fig, ax = plt.subplots(figsize=(6, 4.2))
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
        matplotlib.ticker.FuncFormatter(lambda v, _: _compact(v))
    )
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.axhline(0.0, color="0.7", lw=0.8)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("macro Spearman rho vs reference runs")
  ax.set_title(title, fontsize=10)
  ax.legend(fontsize=7)
  return _save(fig, path)
