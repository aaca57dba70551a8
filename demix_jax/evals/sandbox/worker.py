"""The program's process: loads the untrusted program, then answers calls.

Runs inside the sandbox with the standard library only (its source and
`wire`'s are sent in by `runner`). Requests come on stdin, one JSON line
each, from the judge; replies go to the fd named by argv[1]:

  {"op": "load", "source": ...}    -> {"ok": true} | {"raised": ..}
  {"op": "lookup", "names": [...]} -> {"values": {name: plain data}}
  {"op": "call", "ref": n, "args": [...], "kwargs": [[k, v], ...]}
                                   -> {"value": ...} | {"raised": ..}

Nothing here is trusted: the program shares this process and may rewrite
any of it. The judge treats every reply as an untrusted answer.
"""

from __future__ import annotations

import builtins
import os
import sys

try:  # inside the sandbox (see runner.bootstrap)
  import _sandbox_wire as wire  # type: ignore
except ImportError:  # on the host (tests)
  from demix_jax.evals.sandbox import wire


def _raised(e: BaseException) -> dict:
  try:
    message = str(e)[:500]
  except Exception:  # pylint: disable=broad-except
    message = ""
  return {"raised": type(e).__name__, "message": message}


def serve(rin, reply_fd: int) -> None:
  """Answers requests from `rin` (binary file) until it closes."""
  refs: list = []
  ns = {"__name__": "__main__", "__builtins__": builtins}

  def send(msg):
    data = wire.dumps(msg)
    while data:
      data = data[os.write(reply_fd, data) :]

  while True:
    line = rin.readline(wire.MAX_LINE + 1)
    if not line:
      return
    msg = wire.loads(line)
    op = msg.get("op")
    reply: dict
    try:
      if op == "load":
        exec(compile(msg["source"], "program.py", "exec"), ns)  # noqa: S102
        reply = {"ok": True}
      elif op == "lookup":
        reply = {
            "values": {
                n: wire.encode(ns[n], refs) for n in msg["names"] if n in ns
            }
        }
      elif op == "call":
        fn = refs[msg["ref"]]
        args = [wire.decode(a, refs.__getitem__) for a in msg["args"]]
        kwargs = {k: wire.decode(v, refs.__getitem__) for k, v in msg["kwargs"]}
        reply = {"value": wire.encode(fn(*args, **kwargs), refs)}
      else:
        reply = {"raised": "ValueError", "message": f"unknown op {op!r}"}
    except BaseException as e:  # pylint: disable=broad-except
      reply = _raised(e)
    try:
      send(reply)
    except (wire.WireError, ValueError, TypeError) as e:
      send(_raised(e))
    sys.stdout.flush()


def main() -> None:
  reply_fd = int(sys.argv[1])
  sys.argv = ["program.py"]
  serve(os.fdopen(0, "rb"), reply_fd)


if __name__ == "__main__":
  main()
