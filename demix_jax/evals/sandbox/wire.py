"""Plain data between the judge and the program: one JSON line per message.

Values cross the process boundary as JSON with a tag per container, so
the kind of every value survives the trip (a tuple stays a tuple, a dict
may have int keys, 1 and 1.0 and True stay apart):

  None, bool, int, float (NaN and infinities included), str: as JSON;
  {"list": [...]}, {"tuple": [...]}, {"set": [...]}, {"frozenset": [...]},
  {"dict": [[key, value], ...]}, {"bytes": "<hex>"}, {"complex": [re, im]};
  {"ref": n}: an object of the program that is not plain data (an
  instance of its class, a function, a generator). It stays in the
  program's process under the number n; the judge holds a `Remote` that
  it can call or pass back as an argument, and nothing else.

`decode` builds only builtin types (and `Remote`), checking every tag, the
nesting depth and, by the caller, the message size: whatever the program
sends, the judge ends up with ordinary values whose `==` is the builtin
one, or with an error. `encode` is the program's side (it runs there and is
not trusted); it turns subclasses of the builtins into the builtin value
and anything else into a reference.

This module is imported by the host (tests) and its source is also run
inside the sandboxes, so it uses only the standard library.
"""

from __future__ import annotations

import json

MAX_DEPTH = 100
MAX_LINE = 32 << 20  # bytes of one message


class WireError(ValueError):
  """A message that is not valid plain data."""


class Remote:
  """An object that lives in the program's process, known by number.

  It has no comparison, truth value, length or attributes of its own
  (`==` is identity, `bool()` raises), so a test can only call it or
  hand it back to the program.
  """

  __slots__ = ("ref", "_call")

  def __init__(self, ref: int, call=None):
    self.ref = ref
    self._call = call

  def __call__(self, *args, **kwargs):
    if self._call is None:
      raise TypeError("this remote object cannot be called here")
    return self._call(self.ref, args, kwargs)

  def __bool__(self):
    raise TypeError(
        "a value of the program that is not plain data has no truth value"
    )

  def __repr__(self):
    return f"<object #{self.ref} of the program>"


_SCALARS = (type(None), bool, int, float, str)


def encode(value, refs, depth: int = 0):
  """`value` as plain data; objects that are not go to `refs` (a list)."""
  if depth > MAX_DEPTH:
    raise WireError("value nested too deeply")
  if type(value) in _SCALARS:
    return value
  if isinstance(value, Remote):
    return {"ref": value.ref}
  for base in (int, float, str):
    if isinstance(value, base):  # a subclass: its builtin value
      return base(value)
  d = depth + 1
  if isinstance(value, (list, tuple, set, frozenset)):
    kind = next(
        t for t in (list, tuple, set, frozenset) if isinstance(value, t)
    )
    return {kind.__name__: [encode(v, refs, d) for v in value]}
  if isinstance(value, dict):
    return {
        "dict": [
            [encode(k, refs, d), encode(v, refs, d)] for k, v in value.items()
        ]
    }
  if isinstance(value, (bytes, bytearray)):
    return {"bytes": bytes(value).hex()}
  if isinstance(value, complex):
    return {"complex": [value.real, value.imag]}
  refs.append(value)
  return {"ref": len(refs) - 1}


def decode(data, make_remote, depth: int = 0):
  """Plain data back to builtin values; `make_remote(n)` for references."""
  if depth > MAX_DEPTH:
    raise WireError("value nested too deeply")
  t = type(data)
  if t in _SCALARS:
    return data
  if t is not dict or len(data) != 1:
    raise WireError(f"not a tagged value: {type(data).__name__}")
  ((tag, body),) = data.items()
  d = depth + 1
  if tag in ("list", "tuple", "set", "frozenset"):
    if type(body) is not list:
      raise WireError(f"{tag} body is not a list")
    items = [decode(v, make_remote, d) for v in body]
    try:
      return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[
          tag
      ](items)
    except TypeError as e:  # unhashable set member
      raise WireError(str(e)) from None
  if tag == "dict":
    if type(body) is not list or any(
        type(p) is not list or len(p) != 2 for p in body
    ):
      raise WireError("dict body is not a list of pairs")
    try:
      return {
          decode(k, make_remote, d): decode(v, make_remote, d) for k, v in body
      }
    except TypeError as e:
      raise WireError(str(e)) from None
  if tag == "bytes" and type(body) is str:
    try:
      return bytes.fromhex(body)
    except ValueError as e:
      raise WireError(str(e)) from None
  if tag == "complex" and type(body) is list and len(body) == 2:
    if all(type(x) in (int, float) for x in body):
      return complex(*body)
  if tag == "ref" and type(body) is int and body >= 0:
    return make_remote(body)
  raise WireError(f"bad tag {tag!r}")


def dumps(message: dict) -> bytes:
  """One message as a JSON line."""
  return (json.dumps(message, allow_nan=True) + "\n").encode()


def loads(line: bytes) -> dict:
  """One JSON line back to a dict (WireError if it is not one)."""
  if len(line) > MAX_LINE or not line.endswith(b"\n"):
    raise WireError("message too long or cut short")
  try:
    msg = json.loads(line)
  except (ValueError, RecursionError) as e:
    raise WireError(f"not JSON: {e}") from None
  if type(msg) is not dict:
    raise WireError("message is not an object")
  return msg
