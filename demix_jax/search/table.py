"""Reads back the search's proxies.csv (written by search.rounds)."""

from __future__ import annotations

import csv
import io

from etils import epath
import numpy as np

_MISSING = ("", "nan", "None")


def read_proxies(path: str, names: tuple[str, ...]):
  """proxies.csv -> (alphas [M, K], {column: [M]}, rounds [M]).

  Args:
    path: the table (local or gs://).
    names: candidate names, in alpha's order.

  Returns:
    The mixtures, every score column (NaN where missing) and each row's
    round.
  """
  # Bytes keep the \r\n line ends csv wrote; epath reads gs:// too.
  text = epath.Path(path).read_bytes().decode()
  rows = list(csv.DictReader(io.StringIO(text, newline="")))
  alphas = np.array([[float(r[f"alpha/{n}"]) for n in names] for r in rows])
  cols = {}
  for key in rows[0] if rows else []:
    if key in ("id", "round") or key.startswith("alpha/"):
      continue
    cols[key] = np.array(
        [float(r[key]) if r[key] not in _MISSING else np.nan for r in rows]
    )
  return alphas, cols, np.array([int(r["round"]) for r in rows])
