"""The judge's process: runs the trusted tests against the remote program.

Runs in a sandbox of its own (standard library only; its source and
`wire`'s are sent in by `runner`). Reads the job (JSON) on stdin:

  {"program": untrusted source, "trusted": source, "tests": source,
   "remote": [names]}

sends the program to the worker, executes `trusted` (e.g. HumanEval's
prompt with the function body stubbed: its helpers stay trusted), binds
every other free name of the tests that the program defines to what the
program holds (plain data, or a `wire.Remote` that forwards calls), and
executes `tests`. Writes one JSON line to its stdout:
{"passed": bool, "reason": str, "died": bool}.

The tests pass iff they run to their end here. The program's replies are
plain data decoded into builtin values, so the comparisons in the tests
are the builtins' own; a reply that is not valid data, a worker that dies
or stops answering, fails the program even if the tests catch the error.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import sys

try:  # inside the sandbox (see runner.bootstrap)
  import _sandbox_wire as wire  # type: ignore
except ImportError:  # on the host (tests)
  from demix_jax.evals.sandbox import wire


class ProgramGone(BaseException):
  """The worker died, closed its pipe or broke the protocol.

  A BaseException, so that a test's `except Exception:` cannot swallow it.
  """


class RemoteError(Exception):
  """The program raised an exception that is not a builtin one."""


class _NoRefs(list):

  def append(self, value):
    raise TypeError(
        f"a {type(value).__name__} cannot be passed to the program"
        " (only plain data and its own objects)"
    )


class Connection:
  """The judge's end of the worker's pipes."""

  def __init__(self, req_fd: int, rep_fd: int):
    self.req_fd = req_fd
    self.rep = os.fdopen(rep_fd, "rb")
    self.broken = ""

  def request(self, msg: dict) -> dict:
    if self.broken:
      raise ProgramGone(self.broken)
    try:
      data = wire.dumps(msg)
      while data:
        data = data[os.write(self.req_fd, data) :]
      line = self.rep.readline(wire.MAX_LINE + 1)
      if not line:
        raise wire.WireError("the program's process ended")
      return wire.loads(line)
    except (OSError, wire.WireError) as e:
      self.broken = str(e) or type(e).__name__
      raise ProgramGone(self.broken) from None

  def value(self, data):
    try:
      return wire.decode(data, self.remote)
    except wire.WireError as e:
      self.broken = f"invalid reply: {e}"
      raise ProgramGone(self.broken) from None

  def remote(self, ref: int) -> wire.Remote:
    return wire.Remote(ref, self.call)

  def call(self, ref: int, args: tuple, kwargs: dict):
    refs = _NoRefs()
    msg = {
        "op": "call",
        "ref": ref,
        "args": [wire.encode(a, refs) for a in args],
        "kwargs": [[str(k), wire.encode(v, refs)] for k, v in kwargs.items()],
    }
    reply = self.request(msg)
    if "value" in reply:
      return self.value(reply["value"])
    raise _exception(reply)


def _exception(reply: dict) -> BaseException:
  name = str(reply.get("raised", "?"))
  message = str(reply.get("message", ""))
  cls = getattr(builtins, name, None)
  if isinstance(cls, type) and issubclass(cls, Exception):
    try:
      return cls(message)
    except Exception:  # pylint: disable=broad-except
      pass
  return RemoteError(f"{name}: {message}" if message else name)


def free_names(*sources: str) -> set[str]:
  """Every name read in the sources (a superset of their free names)."""
  out = set()
  for src in sources:
    for node in ast.walk(ast.parse(src)):
      if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
        out.add(node.id)
  return out


def _describe(e: BaseException) -> str:
  text = str(e)
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def judge(job: dict, conn: Connection) -> dict:
  """Runs one job; returns the verdict."""
  try:
    reply = conn.request({"op": "load", "source": job["program"]})
    if "raised" in reply:
      what = _describe(_exception(reply))
      return {"passed": False, "reason": f"program failed: {what}"}
    ns = {"__name__": "__main__", "__builtins__": builtins}
    exec(compile(job["trusted"], "trusted.py", "exec"), ns)  # noqa: S102
    remote = list(job["remote"])
    names = free_names(job["trusted"], job["tests"])
    want = sorted(
        {n for n in names if n not in ns and not hasattr(builtins, n)}
        | set(remote)
    )
    values = conn.request({"op": "lookup", "names": want}).get("values")
    if type(values) is not dict:
      conn.broken = "invalid reply to lookup"
      raise ProgramGone(conn.broken)
    for name in want:
      if name in values and (name in remote or name not in ns):
        ns[name] = conn.value(values[name])
    missing = [n for n in remote if n not in values]
    if missing:
      return {"passed": False, "reason": f"program defines no {missing[0]}"}
    exec(compile(job["tests"], "tests.py", "exec"), ns)  # noqa: S102
  except ProgramGone as e:
    return {"passed": False, "reason": f"program died: {e}", "died": True}
  except BaseException as e:  # pylint: disable=broad-except
    if conn.broken:
      return {
          "passed": False,
          "reason": f"program died: {conn.broken}",
          "died": True,
      }
    return {"passed": False, "reason": _describe(e)[:300]}
  if conn.broken:
    return {
        "passed": False,
        "reason": f"program died: {conn.broken}",
        "died": True,
    }
  return {"passed": True, "reason": "passed"}


def main() -> None:
  req_fd, rep_fd = (int(x) for x in sys.argv[1:3])
  job = json.loads(sys.stdin.read())
  # The verdict goes to the original stdout; the tests' own prints to
  # stderr.
  out_fd = os.dup(1)
  os.dup2(2, 1)
  verdict = judge(job, Connection(req_fd, rep_fd))
  verdict.setdefault("died", False)
  os.write(out_fd, (json.dumps(verdict) + "\n").encode())


if __name__ == "__main__":
  main()
