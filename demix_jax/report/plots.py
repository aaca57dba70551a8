"""Plots of the search and the final runs (matplotlib, Agg backend).

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

# Re-exported: the pipeline and tests check written images with it.
png_is_drawn = canvas.png_is_drawn


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


def component_diagnostics(
    deltas: Mapping[str, float],
    barriers: Mapping[tuple[str, str], float],
    path: str,
    *,
    barrier_target: str = "heldout/bpb",
) -> str:
  """Bar chart of per-component delta (Eq. 4) and a pairwise barrier grid.

  Args:
    deltas: {component: relative weight change from the base}.
    barriers: {(a, b): loss barrier between components a and b}, in the
      units of `barrier_target`.
    path: output PNG path.
    barrier_target: the target the barriers were measured on (the search
      measures them on held-out bits per byte).

  Returns:
    The path written.
  """
  names = list(deltas)
  n = len(names)
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(10, 2.2 * n + 4), 4.4))
  pct = [100 * deltas[c] for c in names]
  bars = ax1.bar(names, pct, color="tab:blue")
  ax1.bar_label(bars, fmt="%.1f%%", fontsize=8, padding=2)
  ax1.set_ylim(0, 1.15 * max(pct + [1e-9]))
  ax1.set_ylabel("weight change from the base (%)")
  ax1.set_title(
      "component drift delta (paper: ~3% at 2B, ~10% at 30B tokens)",
      fontsize=9,
  )
  ax1.tick_params(axis="x", rotation=30)
  grid = np.full((n, n), np.nan)
  for (a, b), v in barriers.items():
    if a in names and b in names:
      i, j = names.index(a), names.index(b)
      grid[i, j] = grid[j, i] = v
  finite = grid[np.isfinite(grid)]
  vmin = min(0.0, float(finite.min())) if finite.size else 0.0
  vmax = float(finite.max()) if finite.size else 1.0
  cmap = plt.get_cmap("magma")
  # All-zero barriers (every path convex) would give an empty colour range.
  norm = matplotlib.colors.Normalize(vmin=vmin, vmax=max(vmax, vmin + 1e-3))
  im = ax2.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm)
  ax2.set_xticks(range(n), names, rotation=30, ha="right")
  ax2.set_yticks(range(n), names)
  for i in range(n):
    for j in range(n):
      if np.isfinite(grid[i, j]):
        ax2.text(
            j,
            i,
            f"{grid[i, j]:.3g}",
            ha="center",
            va="center",
            color=canvas.text_colour(cmap(norm(grid[i, j]))),
            fontsize=8,
        )
      elif i == j:
        ax2.text(j, i, "–", ha="center", va="center", color="0.5")
  unit = canvas.unit_of(barrier_target)
  fig.colorbar(im, ax=ax2, label=f"barrier ({unit})")
  verdict = (
      "every pair convex: no barrier"
      if finite.size and vmax <= 0.0
      else "worst rise above the chord between two components; 0 = convex"
  )
  ax2.set_title(
      f"loss barrier along the merge line on {barrier_target}\n({verdict})",
      fontsize=9,
  )
  return canvas.save(fig, path)


def final_differences(
    table: Mapping[str, Mapping[str, float]],
    targets: Sequence[str],
    reference: str,
) -> dict[str, dict[str, float]]:
  """{run: {target: run's score - reference run's score}}, reference left out.

  NaN where either score is missing.
  """
  ref = table[reference]
  return {
      run: {
          t: float(scores.get(t, np.nan)) - float(ref.get(t, np.nan))
          for t in targets
      }
      for run, scores in table.items()
      if run != reference
  }


def final_vs_baselines(
    table: Mapping[str, Mapping[str, float]],
    targets: Sequence[str],
    path: str,
    *,
    reference: str = "natural",
    predicted: Mapping[str, float] | None = None,
    proxies: Mapping[str, Mapping[str, float]] | None = None,
    spread: Mapping[str, Mapping[str, float]] | None = None,
    units: Mapping[str, str] | None = None,
) -> str:
  """Each final run's difference from the reference run, per target.

  The demo's runs differ by hundredths of a bit per byte on values of 3-5,
  so the bars are differences (run - `reference`, in each target's units),
  not absolute scores from 0. With `proxies` holding the merged proxy at the
  reference mixture too, each run gets a hatched bar beside its trained one:
  the difference the merged proxies predicted, so a reader sees whether the
  proxy orders the runs as training does.

  Args:
    table: {run: {target: trained score}}, the found mixture first.
    targets: targets to draw, in order.
    path: output PNG path.
    reference: the run the differences are taken from (usually
      "natural"); when it is not in `table`, absolute scores are drawn
      (y axis fitted to the data, not from 0).
    predicted: the found mixture's merged-proxy scores (the first run's
      entry of `proxies`).
    proxies: optional {run: {target: merged-proxy score at that run's
      mixture}}.
    spread: optional {run: {target: standard deviation over training
      seeds}}, drawn as error bars; without it the title says one seed per
      run was trained and no error bars are drawn.
    units: optional {target: unit} for the y label (default from the
      target's name, `canvas.unit_of`).

  Returns:
    The path written.
  """
  runs = list(table)
  proxies = dict(proxies or {})
  if predicted and runs and runs[0] not in proxies:
    proxies[runs[0]] = dict(predicted)
  if reference in table:
    values = final_differences(table, targets, reference)
    pred = (
        final_differences(
            {r: proxies[r] for r in proxies if r in table}, targets, reference
        )
        if reference in proxies
        else {}
    )
  else:
    values = {
        r: {t: float(table[r].get(t, np.nan)) for t in targets} for r in runs
    }
    pred = {}
  shown = list(values)
  slots = len(shown) * (2 if pred else 1)
  width = 0.8 / max(slots, 1)
  x = np.arange(len(targets))
  fig, ax = plt.subplots(figsize=(max(6.5, 1.1 * len(targets) + 3), 4.6))
  k = 0
  for i, run in enumerate(shown):
    colour = f"C{i}"
    err = None
    if spread and run in spread:
      err = [float(spread[run].get(t, np.nan)) for t in targets]
    bars = ax.bar(
        x + k * width,
        [values[run][t] for t in targets],
        width,
        yerr=err,
        capsize=3 if err else 0,
        color=colour,
        label=run + (" (trained)" if pred else ""),
    )
    if len(shown) * len(targets) <= 24:
      ax.bar_label(
          bars,
          fmt="%+.3f" if reference in table else "%.3f",
          fontsize=7,
          padding=2,
      )
    k += 1
    if pred:
      if run in pred:
        ax.bar(
            x + k * width,
            [pred[run][t] for t in targets],
            width,
            color="none",
            edgecolor=colour,
            hatch="///",
            label=f"{run} (merged proxy)",
        )
      k += 1
  ax.set_xticks(
      x + width * (k - 1) / 2, targets, rotation=25, ha="right", fontsize=8
  )
  used = sorted({(units or {}).get(t) or canvas.unit_of(t) for t in targets})
  unit = used[0] if len(used) == 1 else "each target's units"
  if reference in table:
    ax.axhline(0.0, color="0.2", lw=0.8)
    ax.set_ylabel(f"difference from {reference} ({unit})")
    what = f"final runs minus {reference}"
  else:
    finite = np.array([v for r in values.values() for v in r.values()])
    finite = finite[np.isfinite(finite)]
    if finite.size:
      lo, hi = finite.min(), finite.max()
      pad = 0.1 * (hi - lo) or 0.05 * abs(hi) or 0.05
      ax.set_ylim(lo - pad, hi + pad)
    ax.set_ylabel(f"score ({unit})")
    what = "final runs"
  if unit == "bits per byte":
    what += " (below 0 = better)" if reference in table else " (lower = better)"
  seeds = (
      "error bars: seed spread (std)"
      if spread
      else "one training seed per run: no error bars"
  )
  ax.set_title(f"{what}\n{seeds}", fontsize=10)
  ax.grid(axis="y", color="0.9")
  ax.set_axisbelow(True)
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
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
        matplotlib.ticker.FuncFormatter(lambda v, _: canvas.compact(v))
    )
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.axhline(0.0, color="0.7", lw=0.8)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("macro Spearman rho vs reference runs")
  ax.set_title(title, fontsize=10)
  ax.legend(fontsize=7)
  return canvas.save(fig, path)
