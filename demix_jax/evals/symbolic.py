"""Symbolic equality of two normalised LaTeX answers, under a hard time limit.

`to_sympy_source` turns a normalised answer (see `answers.math_normalize`)
into a small Python expression over a whitelist: digits, single-letter
symbols, `+ - * / ** ( ) .` and the names in `_FUNCS`. Anything else (an
unknown command, a subscript, a string) makes it None, and the answers
are then compared as strings only. The whitelist is what makes it safe to
hand the text to sympy's `parse_expr` (which uses `eval`): no quotes,
underscores, attributes or builtins can reach it.

The comparison itself runs in a separate worker process (the venv python in
isolated mode, address space capped), which is killed and restarted when a
comparison exceeds its time limit: simplification can take exponential time
and integer powers such as `10^{10^{10}}` never return, and neither can be
interrupted inside the process (a signal handler only runs between Python
bytecodes). A timeout, a parse error or a crash counts as "not equal".

Tuples and intervals ("(1,2)", "[0,\\infty)") are compared element by
element, with the same brackets.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import threading

_FUNCS = {
    "sqrt": "sqrt",
    "pi": "pi",
    "infty": "oo",
    "ln": "log",
    "log": "log",
    "exp": "exp",
    "sin": "sin",
    "cos": "cos",
    "tan": "tan",
    "cot": "cot",
    "sec": "sec",
    "csc": "csc",
    "arcsin": "asin",
    "arccos": "acos",
    "arctan": "atan",
}
_OPS = {"cdot": "*", "times": "*", "div": "/"}
_ALLOWED = re.compile(r"[0-9A-Za-z+\-*/(). ]*")
_WORKER_NAMES = set(_FUNCS.values()) | {"I"}


def _group(s: str, i: int) -> tuple[str, int]:
  """The braced group starting at s[i] == '{' -> (content, index after)."""
  depth = 0
  for j in range(i, len(s)):
    if s[j] == "{":
      depth += 1
    elif s[j] == "}":
      depth -= 1
      if depth == 0:
        return s[i + 1 : j], j + 1
  raise ValueError("unbalanced braces")


def _convert(s: str) -> str:
  out, i = [], 0
  while i < len(s):
    ch = s[i]
    if ch == "\\":
      m = re.match(r"\\([A-Za-z]+)", s[i:])
      if not m:
        raise ValueError(f"unsupported {s[i:i + 2]!r}")
      name, i = m.group(1), i + m.end()
      if name == "frac":
        num, i = _group(s, i)
        den, i = _group(s, i)
        out.append(f"(({_convert(num)})/({_convert(den)}))")
      elif name == "sqrt":
        if s.startswith("[", i):
          j = s.index("]", i)
          root, i = s[i + 1 : j], j + 1
          arg, i = _group(s, i)
          out.append(f"(({_convert(arg)})**(1/({_convert(root)})))")
        else:
          arg, i = _group(s, i)
          out.append(f"sqrt({_convert(arg)})")
      elif name in _FUNCS:
        out.append(f" {_FUNCS[name]} ")
      elif name in _OPS:
        out.append(_OPS[name])
      else:
        raise ValueError(f"unsupported command \\{name}")
    elif ch == "{":
      arg, i = _group(s, i)
      out.append(f"({_convert(arg)})")
    elif ch == "^":
      out.append("**")
      i += 1
    else:
      out.append(ch)
      i += 1
  return "".join(out)


def _split_letters(expr: str) -> str:
  """Multi-letter names that are not functions -> single-letter products."""

  def fix(m):
    w = m.group()
    if w in _WORKER_NAMES:
      return w
    if w == "i":
      return "I"
    return "(" + "*".join(w) + ")" if len(w) > 1 else w

  return re.sub(r"[A-Za-z]+", fix, expr)


def to_sympy_source(latex: str) -> str | None:
  """A whitelisted sympy-parsable expression for `latex`, or None."""
  try:
    expr = _convert(latex)
  except (ValueError, IndexError):
    return None
  expr = re.sub(r"\s+", " ", _split_letters(expr)).strip()
  if not expr or not _ALLOWED.fullmatch(expr) or "()" in expr.replace(" ", ""):
    return None
  if re.search(r"\.(?!\d)|(?<![\d\s(+\-*/])\.", expr):
    return None  # a dot outside a decimal number (attribute access)
  if (
      re.search(r"[A-Za-z]{2,}", expr)
      and not set(re.findall(r"[A-Za-z]{2,}", expr)) <= _WORKER_NAMES
  ):
    return None
  return expr


def _top_level_split(s: str) -> list[str]:
  parts: list[str] = []
  cur: list[str] = []
  depth = 0
  for ch in s:
    if ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    if ch == "," and depth == 0:
      parts.append("".join(cur))
      cur = []
    else:
      cur.append(ch)
  parts.append("".join(cur))
  return parts


def _elements(s: str) -> tuple[str, list[str]]:
  """'(a,b]' -> ('(]', ['a', 'b']); 'a,b' -> ('', ['a', 'b'])."""
  if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
    inner = s[1:-1]
    if len(_top_level_split(inner)) > 1:
      return s[0] + s[-1], _top_level_split(inner)
  return "", _top_level_split(s)


def comparison_pairs(a: str, b: str) -> list[tuple[str, str]] | None:
  """Element-wise sympy sources to compare, or None if not comparable."""
  (ba, ea), (bb, eb) = _elements(a), _elements(b)
  if ba != bb or len(ea) != len(eb):
    return None
  pairs = []
  for x, y in zip(ea, eb):
    sx, sy = to_sympy_source(x), to_sympy_source(y)
    if sx is None or sy is None:
      return None
    pairs.append((sx, sy))
  return pairs


# The worker: reads one JSON list of [a, b] pairs per line, answers "true"
# or "false" per line. Runs with `python -I -c` (no project imports).
_WORKER = r"""
import json, resource, string, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import sympy
from sympy.parsing.sympy_parser import (
    implicit_multiplication_application, parse_expr, standard_transformations)
G = {}
exec("from sympy import *", G)
G["__builtins__"] = {}
L = {c: sympy.Symbol(c) for c in string.ascii_letters if c != "I"}
T = standard_transformations + (implicit_multiplication_application,)

def parse(s):
  return parse_expr(s, local_dict=dict(L), global_dict=G, transformations=T)

def equal(a, b):
  x, y = parse(a), parse(b)
  if x == y:
    return True
  if sympy.simplify(x - y) == 0:
    return True
  if x.is_number and y.is_number:
    d = complex(sympy.N(x - y))
    return abs(d) <= 1e-9 * max(1.0, abs(complex(sympy.N(y))))
  return False

print("ready", flush=True)
for line in sys.stdin:
  try:
    ok = all(equal(a, b) for a, b in json.loads(line))
  except Exception:
    ok = False
  print(json.dumps(bool(ok)), flush=True)
"""


class SymbolicChecker:
  """A sympy worker process with a hard time limit per comparison.

  Thread-safe (one comparison at a time). The worker is started on first
  use (its sympy import does not count against the limit) and restarted
  after a timeout or a crash.
  """

  def __init__(
      self, memory_bytes: int = 2 << 30, startup_timeout_s: float = 120.0
  ):
    self.memory_bytes = memory_bytes
    self.startup_timeout_s = startup_timeout_s
    self.timeouts = 0
    self._proc: subprocess.Popen | None = None
    self._lock = threading.Lock()

  def _readline(self, timeout_s: float) -> str | None:
    assert self._proc is not None and self._proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(self._proc.stdout, selectors.EVENT_READ)
    try:
      if not sel.select(timeout_s):
        return None
    finally:
      sel.close()
    line = self._proc.stdout.readline()
    return line or None

  def _start(self) -> bool:
    self._proc = subprocess.Popen(
        [sys.executable, "-I", "-c", _WORKER, str(self.memory_bytes)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    if self._readline(self.startup_timeout_s) != "ready\n":
      self._kill()
      return False
    return True

  def _kill(self):
    if self._proc is not None:
      try:
        os.killpg(self._proc.pid, signal.SIGKILL)
      except (ProcessLookupError, PermissionError):
        pass
      self._proc.wait()
      for f in (self._proc.stdin, self._proc.stdout):
        f.close()
      self._proc = None

  def equivalent(self, a: str, b: str, timeout_s: float = 3.0) -> bool:
    """Whether normalised answers `a` and `b` are symbolically equal.

    Args:
      a: normalised answer.
      b: normalised answer.
      timeout_s: hard wall-clock limit; exceeding it returns False (the
        worker is killed and restarted on the next call).

    Returns:
      True iff sympy proves them equal (or numerically equal to 1e-9)
      within the limit.
    """
    pairs = comparison_pairs(a, b)
    if pairs is None:
      return False
    with self._lock:
      if self._proc is None or self._proc.poll() is not None:
        if not self._start():
          return False
      assert self._proc is not None and self._proc.stdin is not None
      try:
        self._proc.stdin.write(json.dumps(pairs) + "\n")
        self._proc.stdin.flush()
      except OSError:
        self._kill()
        return False
      line = self._readline(timeout_s)
      if line is None:
        self.timeouts += 1
        self._kill()
        return False
      return line.strip() == "true"

  def close(self):
    with self._lock:
      self._kill()


_SHARED: SymbolicChecker | None = None
_SHARED_LOCK = threading.Lock()


def shared_checker() -> SymbolicChecker:
  """The process-wide checker (closed at exit)."""
  global _SHARED
  with _SHARED_LOCK:
    if _SHARED is None:
      _SHARED = SymbolicChecker()
      atexit.register(_SHARED.close)
    return _SHARED


def equivalent(a: str, b: str, timeout_s: float = 3.0) -> bool:
  """`SymbolicChecker.equivalent` on the shared checker."""
  return shared_checker().equivalent(a, b, timeout_s)
