"""Points every gs:// client at a GCS emulator when one is named.

A Cloud Storage emulator (for example the `gcp-storage-emulator` package,
which the tests start on loopback) is named the way Google's own clients
expect: `STORAGE_EMULATOR_HOST=http://127.0.0.1:9023`. The project reaches
gs:// through three clients, each with its own switch, and this module sets
the other two from that one variable:

- etils.epath (every JSON record, results file, report, tokenizer and raw
  corpus read): with TensorFlow installed it picks tf.io.gfile, which has
  no emulator endpoint, so `EPATH_USE_TF=false` makes it use fsspec's
  gcsfs, which honours `STORAGE_EMULATOR_HOST` itself (its bucket-layout
  probe, an API the emulators lack, is turned off:
  `GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`);
- tensorstore (Orbax checkpoints): `TENSORSTORE_GCS_HTTP_URL`;
- array_record's C++ GCS reader (grain, prepared shards):
  `CLOUD_STORAGE_EMULATOR_ENDPOINT` (google-cloud-cpp's switch).

Without `STORAGE_EMULATOR_HOST` nothing is changed: real GCS goes through
each library's default path. Variables the user set already are kept. The
package runs `route_to_emulator()` when it is imported, before any gs://
I/O, and child processes inherit the result.
"""

from __future__ import annotations

from collections.abc import MutableMapping
import os

HOST_ENV = "STORAGE_EMULATOR_HOST"
EPATH_ENV = "EPATH_USE_TF"
TENSORSTORE_ENV = "TENSORSTORE_GCS_HTTP_URL"
CLOUD_CPP_ENV = "CLOUD_STORAGE_EMULATOR_ENDPOINT"
GCSFS_LAYOUT_ENV = "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"
NAMES = (HOST_ENV, EPATH_ENV, TENSORSTORE_ENV, CLOUD_CPP_ENV, GCSFS_LAYOUT_ENV)


def emulator_url(environ: MutableMapping[str, str] | None = None) -> str:
  """The emulator's base URL from `STORAGE_EMULATOR_HOST`; "" when unset."""
  environ = os.environ if environ is None else environ
  host = environ.get(HOST_ENV, "").strip().rstrip("/")
  if not host:
    return ""
  return host if "://" in host else f"http://{host}"


def route_to_emulator(environ: MutableMapping[str, str] | None = None) -> str:
  """Sends epath, tensorstore and array_record to the named emulator.

  Args:
    environ: the environment to read and update (default `os.environ`).

  Returns:
    The emulator URL, or "" (and nothing changed) when none is named.
  """
  environ = os.environ if environ is None else environ
  url = emulator_url(environ)
  if not url:
    return ""
  environ.setdefault(EPATH_ENV, "false")
  environ.setdefault(GCSFS_LAYOUT_ENV, "false")
  environ.setdefault(TENSORSTORE_ENV, url)
  environ.setdefault(CLOUD_CPP_ENV, url)
  return url
