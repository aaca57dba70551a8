"""Plots of trained models: the components' drift and barriers, final runs.

`component_diagnostics` draws how far each component moved from the base and
the loss barrier between every pair; `final_vs_baselines` draws each final
run's difference from the natural-mixture run (the differences a demo is
about are hundredths of a bit per byte on values of 3-5, invisible on bars
from 0). Both are re-exported by `demix_jax.report.plots`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from demix_jax.report import canvas


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
      "error bars: seed spread (each run's std over its training seeds"
      + (f"; {reference}'s own not drawn)" if reference in table else ")")
      if spread
      else "one training seed per run: no error bars"
  )
  ax.set_title(f"{what}\n{seeds}", fontsize=10)
  ax.grid(axis="y", color="0.9")
  ax.set_axisbelow(True)
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  return canvas.save(fig, path)
