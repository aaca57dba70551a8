"""proxies.csv: every scored proxy of a search, written by search.rounds.

One row per scored mixture: `id` (pool row), `round`, `alpha/<name>` per
candidate, one column per score and the `objective`. Writer and reader live
together so the format has one definition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import csv
import io

from etils import epath
import numpy as np

PROXIES = "proxies.csv"
_MISSING = ("", "nan", "None")


def format_proxies(
    ids: Sequence[int],
    rounds: Sequence[int],
    names: Sequence[str],
    alphas: np.ndarray,
    scores: Mapping[str, np.ndarray],
    objective: np.ndarray,
) -> bytes:
  """The CSV bytes of a proxies table (built in memory: it may go to gs://).

  Args:
    ids: pool row of each proxy.
    rounds: round of each proxy.
    names: candidate names, in alpha's order.
    alphas: [M, K] mixtures.
    scores: {column: [M]} scores (NaN = missing).
    objective: [M] objective values.

  Returns:
    The table, "\\r\\n" line ends (csv's default).
  """
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(
      ["id", "round"]
      + [f"alpha/{n}" for n in names]
      + list(scores)
      + ["objective"]
  )
  for j, i in enumerate(ids):
    w.writerow(
        [i, rounds[j]]
        + [f"{a:.6g}" for a in alphas[j]]
        + [repr(float(scores[t][j])) for t in scores]
        + [objective[j]]
    )
  return buf.getvalue().encode()


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
