"""A Cloud Storage emulator on loopback, serving one bucket to tests/gcs.

`gcp-storage-emulator` runs in this process (in memory, on a free port) for
the tests of this package, made to answer as GCS does where tensorstore
relies on it (`demix_jax.gcs_emulator_server`, the server the README
starts); `STORAGE_EMULATOR_HOST` names it, and
`demix_jax.gcs_emulator.route_to_emulator` points epath (gcsfs),
tensorstore (Orbax) and array_record (grain) at it. Subprocesses inherit
the variables. The environment is restored and the server stopped when
each test module is done, so no other test sees gs:// redirected.
"""

import os
import socket

from etils import epath
import pytest

from demix_jax import gcs_emulator
from demix_jax import gcs_emulator_server

BUCKET = "my-bucket"  # the README's


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _drop_cached_filesystems() -> None:
  """Forgets gcsfs instances made for another endpoint (or none), and
  epath's cached choice of backend (`_is_tf_installed` is lru-cached: a
  gs:// path used by an earlier test fixed it to tf.io.gfile)."""
  from etils.epath import backend  # pylint: disable=g-import-not-at-top
  from etils.epath import gpath  # pylint: disable=g-import-not-at-top
  import fsspec  # pylint: disable=g-import-not-at-top

  gpath._is_tf_installed.cache_clear()  # pylint: disable=protected-access

  backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  fsspec.get_filesystem_class("gcs").clear_instance_cache()


@pytest.fixture(scope="module")
def bucket():
  """`gs://my-bucket`, served by an emulator for this package's tests."""
  port = _free_port()
  server = gcs_emulator_server.start("127.0.0.1", port, BUCKET)
  names = gcs_emulator.NAMES
  saved = {n: os.environ.get(n) for n in names}
  for n in names:
    os.environ.pop(n, None)
  os.environ[gcs_emulator.HOST_ENV] = f"http://127.0.0.1:{port}"
  gcs_emulator.route_to_emulator()
  _drop_cached_filesystems()
  try:
    yield f"gs://{BUCKET}"
  finally:
    for n, v in saved.items():
      if v is None:
        os.environ.pop(n, None)
      else:
        os.environ[n] = v
    _drop_cached_filesystems()
    server.stop()


def fresh(uri: str) -> epath.Path:
  """`uri` as an epath, with gcsfs's listing cache dropped first.

  Objects written by a subprocess are not in this process's gcsfs listing
  cache; reads after one go through here.
  """
  from etils.epath import backend  # pylint: disable=g-import-not-at-top
  import fsspec  # pylint: disable=g-import-not-at-top

  fsspec.filesystem("gcs").invalidate_cache()
  backend.fsspec_backend.fs(uri).invalidate_cache()  # epath's own instance
  return epath.Path(uri)
