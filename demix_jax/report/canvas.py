"""What every plot of the package shares: saving, units, legible text.

`save` writes a figure in one go (local or gs://); `png_is_drawn` is the
check tests and the pipeline use on the written images; `unit_of` names the
unit of a target for axis labels; `text_colour` picks black or white text
for a coloured cell; `compact` writes 3M / 20B tick labels.
"""

from __future__ import annotations

import io
import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from demix_jax import storage

DPI = 110


def save(fig, path: str) -> str:
  """Lays out, renders and writes `fig` to `path`; closes it."""
  fig.tight_layout()
  # Rendered in memory, then written in one go: a kill never leaves half an
  # image, and the report may live on gs://, which savefig cannot open.
  buf = io.BytesIO()
  fmt = os.path.splitext(path)[1].lstrip(".").lower() or None
  fig.savefig(buf, dpi=DPI, format=fmt)
  plt.close(fig)
  storage.atomic_write_bytes(path, buf.getvalue())
  return path


def png_is_drawn(path: str) -> bool:
  """True if the PNG decodes and is not a single flat colour."""
  image = plt.imread(path)
  return image.ndim >= 2 and float(np.std(image[..., :3])) > 1e-3


def unit_of(target: str) -> str:
  """The unit of a target's values, for axis labels.

  Domain scores are bits per byte under the default domain metric
  (`demix_jax.evals.scoring.DEFAULT_DOMAIN_METRICS`); a config that scores a
  domain by accuracy passes its own units to the plot.
  """
  if target.endswith("bpb") or target.startswith("domain/"):
    return "bits per byte"
  if target.endswith(("loss", "nll")):
    return "nats"
  if target.endswith(("acc", "acc_norm", "exact_match")) or "pass@" in target:
    return "accuracy"
  return "score"


def text_colour(rgba: Sequence[float]) -> str:
  """ "k" or "w", whichever reads better on a cell of colour `rgba`.

  From the relative luminance of the sRGB colour (WCAG 2): black text has
  the higher contrast above a luminance of about 0.179, white below.
  """
  lin = [
      c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
      for c in rgba[:3]
  ]
  lum = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
  # (lum + 0.05) / 0.05 (against black) = 1.05 / (lum + 0.05) (against
  # white) at lum = 0.179.
  return "k" if lum > 0.179 else "w"


def compact(v: float) -> str:
  """3M, 20B, 1.5K: short tick labels for token counts."""
  for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
    if abs(v) >= scale:
      return f"{v / scale:g}{unit}"
  return f"{v:g}"
