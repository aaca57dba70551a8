"""One progress line per stage: done/total, rate and ETA.

Third-party INFO logging is off by default (see main.py), so these lines are
what a person watches. On a terminal the line is rewritten in place; in a
log file (CI, `nohup`) a line is written at most every `every_s` seconds and
once at the end, so a long job shows it is alive without flooding the log.
Only process 0 prints.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import jax


def _fmt_seconds(s: float) -> str:
  if s != s or s == float("inf"):
    return "?"
  s = int(round(s))
  if s < 60:
    return f"{s}s"
  if s < 3600:
    return f"{s // 60}m{s % 60:02d}s"
  return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
  """Reports `done` of `total` units of one stage."""

  def __init__(
      self,
      stage: str,
      total: float,
      unit: str,
      *,
      stream: TextIO | None = None,
      every_s: float = 30.0,
      clock=time.monotonic,
  ):
    self.stage, self.total, self.unit = stage, float(total), unit
    self.stream = stream if stream is not None else sys.stderr
    self.every_s = every_s
    self.clock = clock
    self.t0 = clock()
    self._last_print = -float("inf")
    self._done = 0.0
    self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
    self._active = jax.process_index() == 0

  def line(self, done: float, note: str = "") -> str:
    """The text of the progress line at `done` units."""
    elapsed = max(self.clock() - self.t0, 1e-9)
    rate = done / elapsed
    eta = (self.total - done) / rate if rate > 0 else float("inf")
    pct = 100.0 * done / self.total if self.total else 100.0
    text = (
        f"[{self.stage}] {done:,.0f}/{self.total:,.0f} {self.unit}"
        f" ({pct:.0f}%), {rate:,.1f} {self.unit}/s, elapsed"
        f" {_fmt_seconds(elapsed)}, ETA {_fmt_seconds(eta)}"
    )
    return f"{text} {note}".rstrip()

  def update(self, done: float, note: str = "") -> None:
    self._done = float(done)
    if not self._active:
      return
    now = self.clock()
    if self._tty:
      self.stream.write("\r\x1b[2K" + self.line(done, note))
      self.stream.flush()
    elif now - self._last_print >= self.every_s:
      self._last_print = now
      self.stream.write(self.line(done, note) + "\n")
      self.stream.flush()

  def advance(self, n: float = 1.0, note: str = "") -> None:
    self.update(self._done + n, note)

  def finish(self, note: str = "") -> None:
    """The stage's closing line: what was done, in how long."""
    if not self._active:
      return
    elapsed = self.clock() - self.t0
    text = f"[{self.stage}] done: {note} in {_fmt_seconds(elapsed)}"
    self.stream.write(("\r\x1b[2K" if self._tty else "") + text + "\n")
    self.stream.flush()
