"""The emulator answers generation preconditions and headers as GCS does.

Without `gcs_emulator_server.conform()`, gcp-storage-emulator ignores
`ifGenerationMatch` / `ifGenerationNotMatch` and sends no
`x-goog-generation` on downloads; tensorstore's OCDBT driver (Orbax) then
fails its second manifest write with "Malformed StorageGeneration". These
tests speak HTTP to the fixture's emulator directly, then run the
tensorstore and Orbax patterns that failed.
"""

import json
import os
import urllib.error
import urllib.parse
import urllib.request

from etils import epath
import numpy as np
import pytest

from demix_jax import gcs_emulator
from demix_jax import gcs_emulator_server
from tests.gcs.conftest import BUCKET


def _call(method, path, body=None, **query):
  url = os.environ[gcs_emulator.HOST_ENV] + path
  if query:
    url += "?" + urllib.parse.urlencode(query)
  req = urllib.request.Request(url, data=body, method=method)
  if body is not None:
    req.add_header("Content-Type", "application/octet-stream")
  try:
    with urllib.request.urlopen(req) as r:
      return r.status, dict(r.headers), r.read()
  except urllib.error.HTTPError as e:
    return e.code, dict(e.headers), e.read()


def _upload(name, body, **query):
  return _call(
      "POST", f"/upload/storage/v1/b/{BUCKET}/o", body,
      uploadType="media", name=name, **query,
  )  # fmt: skip


def _object(name):
  return f"/storage/v1/b/{BUCKET}/o/" + urllib.parse.quote(name, safe="")


@pytest.mark.parametrize(
    "query,exists,read,want",
    [
        ({}, True, True, 0),
        ({"ifGenerationMatch": ["0"]}, False, False, 0),
        ({"ifGenerationMatch": ["0"]}, True, False, 412),
        ({"ifGenerationMatch": ["7"]}, True, False, 0),
        ({"ifGenerationMatch": ["8"]}, True, False, 412),
        ({"ifGenerationMatch": ["7"]}, False, False, 412),
        ({"ifGenerationMatch": ["8"]}, True, True, 412),
        ({"ifGenerationNotMatch": ["7"]}, True, True, 304),
        ({"ifGenerationNotMatch": ["7"]}, True, False, 412),
        ({"ifGenerationNotMatch": ["8"]}, True, True, 0),
        ({"ifGenerationNotMatch": ["0"]}, False, False, 412),
        ({"ifGenerationNotMatch": ["0"]}, True, False, 0),
    ],
)
def test_unmet_follows_the_documented_precondition_rules(
    query, exists, read, want
):
  obj = {"generation": "7"} if exists else None
  assert gcs_emulator_server.unmet(query, obj, read) == want


def test_uploads_honour_if_generation_match(bucket):
  del bucket
  status, _, body = _upload("pre/a", b"one", ifGenerationMatch=0)
  assert status == 200
  gen = json.loads(body)["generation"]
  # "Only if absent" fails now that it exists; the content is unchanged.
  assert _upload("pre/a", b"two", ifGenerationMatch=0)[0] == 412
  assert _upload("pre/a", b"two", ifGenerationMatch=int(gen) + 1)[0] == 412
  status, _, body = _call("GET", _object("pre/a"), alt="media")
  assert (status, body) == (200, b"one")
  status, _, body = _upload("pre/a", b"two", ifGenerationMatch=gen)
  assert status == 200 and json.loads(body)["generation"] != gen


def test_reads_name_the_generation_and_honour_not_match(bucket):
  del bucket
  _, _, body = _upload("pre/b", b"0123456789")
  meta = json.loads(body)
  status, headers, data = _call("GET", _object("pre/b"), alt="media")
  assert status == 200 and data == b"0123456789"
  assert headers["x-goog-generation"] == meta["generation"]
  assert headers["x-goog-metageneration"] == meta["metageneration"]
  # The download endpoint and a range read name it too.
  path = f"/download/storage/v1/b/{BUCKET}/o/pre%2Fb"
  req_status, headers, _ = _call("GET", path, alt="media")
  assert (
      req_status == 200 and headers["x-goog-generation"] == meta["generation"]
  )
  status, _, data = _call(
      "GET", _object("pre/b"), alt="media",
      ifGenerationNotMatch=meta["generation"],
  )  # fmt: skip
  assert (status, data) == (304, b"")
  assert _call(
      "GET", _object("pre/b"), alt="media", ifGenerationMatch=1
  )[0] == 412  # fmt: skip
  assert _call("GET", _object("pre/missing"), alt="media")[0] == 404


def test_deletes_honour_if_generation_match(bucket):
  del bucket
  _, _, body = _upload("pre/c", b"c")
  gen = json.loads(body)["generation"]
  assert _call("DELETE", _object("pre/c"), ifGenerationMatch=1)[0] == 412
  assert _call("GET", _object("pre/c"))[0] == 200
  assert _call("DELETE", _object("pre/c"), ifGenerationMatch=gen)[0] < 300
  assert _call("GET", _object("pre/c"))[0] == 404


def test_ocdbt_rewrites_its_manifest_in_the_bucket(bucket):
  """The failing pattern: a second write to an OCDBT store on gs://."""
  import tensorstore as ts  # pylint: disable=g-import-not-at-top

  spec = {"driver": "ocdbt", "base": f"{bucket}/ocdbt/"}
  kv = ts.KvStore.open(spec).result()
  for i in range(4):
    kv.write(f"k{i}", b"v" * (i + 1)).result()
  again = ts.KvStore.open(spec).result()  # a fresh reader of the manifest
  assert [again.read(f"k{i}").result().value for i in range(4)] == [
      b"v" * (i + 1) for i in range(4)
  ]


def test_orbax_manager_saves_steps_and_restores_the_latest(bucket):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  path = epath.Path(f"{bucket}/server/ckpts")
  tree = {"w": np.zeros((3, 4), np.float32)}
  with ocp.CheckpointManager(
      path, options=ocp.CheckpointManagerOptions(max_to_keep=2)
  ) as mngr:
    for step in range(3):
      tree = {"w": tree["w"] + 1}
      mngr.save(step, args=ocp.args.StandardSave(tree))
    mngr.wait_until_finished()
  with ocp.CheckpointManager(path) as mngr:
    assert mngr.all_steps() == [1, 2]
    back = mngr.restore(2, args=ocp.args.StandardRestore(tree))
  np.testing.assert_array_equal(back["w"], np.full((3, 4), 3, np.float32))


def test_server_cli_names_a_port_in_use(capsys):
  import socket  # pylint: disable=g-import-not-at-top

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    rc = gcs_emulator_server.main([f"--port={port}", "--bucket=my-bucket"])
  assert rc == 2
  assert f"--port={port}: cannot listen on 127.0.0.1" in capsys.readouterr().err
