"""A GCS emulator on loopback that answers as Cloud Storage does.

`python -m demix_jax.gcs_emulator_server --port=9023 --bucket=my-bucket`
serves an in-memory bucket through the `gcp-storage-emulator` package
(`pip install gcp-storage-emulator`), with two of its answers made to match
Cloud Storage's JSON API; then `STORAGE_EMULATOR_HOST=http://127.0.0.1:9023`
sends every gs:// client of the project there (`demix_jax.gcs_emulator`).
The tests in tests/gcs start the same server in process (`start`).

The two differences, both of which break tensorstore's OCDBT driver and so
Orbax checkpoints (found with tensorstore's `gcs_http` request log):

- media downloads carry no `x-goog-generation` header, which Cloud Storage
  always sends. Tensorstore's GCS driver takes a read's generation from that
  header, 0 when it is absent, and refuses 0 as a write condition (a GCS
  generation is never 0). After it writes an OCDBT manifest it reads it
  back; that read is stamped 0, and the next conditional write of the
  manifest fails before any request with "Malformed StorageGeneration";
- the `ifGenerationMatch` / `ifGenerationNotMatch` preconditions of reads,
  uploads and deletes are ignored. Cloud Storage answers 304 Not Modified
  to that manifest read (`ifGenerationNotMatch=<the generation written>`),
  and 412 Precondition Failed to a write whose condition fails, which is
  what keeps two writers of one manifest from overwriting each other.

`conform()` wraps the emulator's object handlers so that each object read
names the object's generation and metageneration in headers, and a failed
generation precondition answers 412 (304 for an `ifGenerationNotMatch`
read), as https://cloud.google.com/storage/docs/request-preconditions
describes. The emulator serves one request at a time, so a check and the
write after it are atomic, as in GCS. Nothing here runs against real GCS.
"""

from __future__ import annotations

import argparse
from http import HTTPStatus
import socket
import sys

MATCH = "ifGenerationMatch"
NOT_MATCH = "ifGenerationNotMatch"
_WRAPPED = "demix_conforming"


def _query(request, name: str) -> str | None:
  values = request.query.get(name)
  return values[0] if values else None


def _object_name(request) -> str | None:
  """The object a request reads, uploads or deletes (None: not known)."""
  if request.params and request.params.get("object_id"):
    return request.params["object_id"]
  name = _query(request, "name")
  if name is not None:
    return name
  data = request.data
  if isinstance(data, dict):  # multipart: {"meta": ...}; resumable: metadata
    meta = data.get("meta", data)
    if isinstance(meta, dict) and isinstance(meta.get("name"), str):
      return meta["name"]
  return None


def _current(storage, bucket: str, name: str | None) -> dict | None:
  from gcp_storage_emulator.exceptions import NotFound  # pylint: disable=g-import-not-at-top

  if name is None:
    return None
  try:
    return storage.get_file_obj(bucket, name)
  except NotFound:
    return None


def unmet(query: dict, obj: dict | None, read: bool) -> int:
  """The status a failed generation precondition answers; 0 if all hold.

  Args:
    query: the request's query, {name: [value, ...]}.
    obj: the object's current metadata, None when there is none.
    read: whether the request reads (GET) rather than writes or deletes.
  """
  gen = str(obj["generation"]) if obj is not None else None
  match = (query.get(MATCH) or [None])[0]
  not_match = (query.get(NOT_MATCH) or [None])[0]
  if match is not None:
    if match == "0":  # "only if there is no live object"
      if gen is not None:
        return 412
    elif gen != match:
      return 412
  if not_match is not None:
    if not_match == "0":  # "only if there is a live object"
      if gen is None and not read:
        return 412
    elif gen == not_match:
      return 304 if read else 412
  return 0


def _conforming(handler, read: bool):
  """`handler` with GCS's generation preconditions and read headers."""

  def wrapped(request, response, storage, *args, **kwargs):
    conditional = MATCH in request.query or NOT_MATCH in request.query
    bucket = (request.params or {}).get("bucket_name")
    obj = None
    if bucket and (conditional or read):
      obj = _current(storage, bucket, _object_name(request))
    status = unmet(request.query, obj, read) if conditional else 0
    if status == 412:
      response.status = HTTPStatus.PRECONDITION_FAILED
      response.json(
          {
              "error": {
                  "code": 412,
                  "message": (
                      "At least one of the pre-conditions you specified"
                      " did not hold."
                  ),
                  "errors": [{"reason": "conditionNotMet"}],
              }
          }
      )
      return None
    if status == 304:
      response.status = HTTPStatus.NOT_MODIFIED
      return None
    result = handler(request, response, storage, *args, **kwargs)
    if read and obj is not None and response.status in (200, 206):
      response["x-goog-generation"] = str(obj["generation"])
      response["x-goog-metageneration"] = str(obj["metageneration"])
    return result

  setattr(wrapped, _WRAPPED, True)
  wrapped.__name__ = getattr(handler, "__name__", "handler")
  return wrapped


def conform() -> None:
  """Makes gcp-storage-emulator's object API answer as GCS does (above).

  Rewrites the emulator's route table in this process, once; servers
  started before or after see it.

  Raises:
    ImportError: gcp-storage-emulator is not installed.
  """
  from gcp_storage_emulator import server  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.handlers import objects  # pylint: disable=g-import-not-at-top

  kinds = {
      objects.get: True,
      objects.download: True,
      objects.insert: False,
      objects.delete: False,
  }
  routes = []
  for regex, handlers in server.HANDLERS:
    handlers = dict(handlers)
    for method, handler in handlers.items():
      if handler in kinds and not getattr(handler, _WRAPPED, False):
        handlers[method] = _conforming(handler, kinds[handler])
    routes.append((regex, handlers))
  server.HANDLERS = tuple(routes)


def _server(host: str, port: int, bucket: str):
  from gcp_storage_emulator.server import create_server  # pylint: disable=g-import-not-at-top

  conform()
  # The emulator binds in its own thread and waits for it forever if the
  # bind fails; a port in use is found here instead.
  with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server
    s.bind((host, port))
  return create_server(host, port, in_memory=True, default_bucket=bucket)


def start(host: str, port: int, bucket: str):
  """A started in-memory emulator serving `bucket`; `.stop()` ends it.

  Raises:
    ImportError: gcp-storage-emulator is not installed.
    OSError: `host:port` cannot be bound (in use, say).
  """
  server = _server(host, port, bucket)
  server.start()
  return server


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m demix_jax.gcs_emulator_server",
      description="Serves one in-memory bucket as GCS does (see the module).",
  )
  parser.add_argument("--host", default="127.0.0.1")
  parser.add_argument("--port", type=int, default=9023)
  parser.add_argument("--bucket", required=True, help="the bucket to serve")
  args = parser.parse_args(argv)
  try:
    server = _server(args.host, args.port, args.bucket)
  except ImportError:
    print(
        "gcp-storage-emulator is not installed: pip install"
        " gcp-storage-emulator",
        file=sys.stderr,
    )
    return 1
  except OSError as e:
    print(
        f"--port={args.port}: cannot listen on {args.host}: {e}",
        file=sys.stderr,
    )
    return 2
  url = f"http://{args.host}:{args.port}"
  print(f"serving gs://{args.bucket} at {url} (in memory); in another shell:")
  print(f"  export STORAGE_EMULATOR_HOST={url}", flush=True)
  server.run()  # until Ctrl-C
  return 0


if __name__ == "__main__":
  sys.exit(main())
