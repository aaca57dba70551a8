"""Each gs:// client the project uses reaches the emulator, or does nothing.

epath (through gcsfs), Orbax's tensorstore and array_record's C++ reader
(through grain) each write or read real objects in the emulated bucket,
listed back through another client; without `STORAGE_EMULATOR_HOST` the
routing changes nothing.
"""

import json
import os
import tempfile

from etils import epath
import numpy as np

from demix_jax import gcs_emulator
from demix_jax import storage
from demix_jax.data import readers
from tests.gcs.conftest import fresh


def test_no_emulator_named_changes_nothing():
  env = {"HOME": "/h"}
  assert gcs_emulator.route_to_emulator(env) == ""
  assert env == {"HOME": "/h"}


def test_emulator_routes_each_client_and_keeps_user_settings():
  env = {
      gcs_emulator.HOST_ENV: "127.0.0.1:9023/",
      gcs_emulator.TENSORSTORE_ENV: "http://elsewhere:1",
  }
  assert gcs_emulator.route_to_emulator(env) == "http://127.0.0.1:9023"
  assert env[gcs_emulator.EPATH_ENV] == "false"
  assert env[gcs_emulator.GCSFS_LAYOUT_ENV] == "false"
  assert env[gcs_emulator.CLOUD_CPP_ENV] == "http://127.0.0.1:9023"
  assert env[gcs_emulator.TENSORSTORE_ENV] == "http://elsewhere:1"


def test_epath_writes_globs_and_reads_in_the_bucket(bucket):
  storage.atomic_write_json(f"{bucket}/clients/a/x.json", {"v": 1})
  storage.atomic_write_text(f"{bucket}/clients/a/y.txt", "y")
  storage.atomic_write_text(f"{bucket}/clients/b.txt", "b")
  assert storage.read_json(f"{bucket}/clients/a/x.json") == {"v": 1}
  # The glob searches gs://.../clients/a, not the bucket's root.
  found = readers.expand_globs([f"{bucket}/clients/a/*.txt"], "s", "paths")
  assert found == [f"{bucket}/clients/a/y.txt"]
  # The object is really in the emulator: gcsfs lists it directly.
  import fsspec  # pylint: disable=g-import-not-at-top

  names = fsspec.filesystem("gcs").ls(f"{bucket}/clients/a", detail=False)
  assert sorted(os.path.basename(n) for n in names) == ["x.json", "y.txt"]


def test_orbax_checkpoint_saves_and_restores_in_the_bucket(bucket):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  tree = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5)}
  path = f"{bucket}/clients/ckpt"
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(epath.Path(path), tree)
  # tensorstore wrote its chunks as objects in the bucket.
  assert any(p.name == "_METADATA" for p in fresh(path).iterdir())
  with ocp.StandardCheckpointer() as ckptr:
    back = ckptr.restore(epath.Path(path))
  np.testing.assert_array_equal(back["w"], tree["w"])
  np.testing.assert_array_equal(back["b"], tree["b"])


def test_grain_reads_an_array_record_shard_in_the_bucket(bucket):
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as d:
    local = os.path.join(d, "s.arrayrecord")
    w = array_record_module.ArrayRecordWriter(local, "group_size:1")
    for i in range(7):
      w.write(f"record {i}".encode())
    w.close()
    with open(local, "rb") as f:
      epath.Path(f"{bucket}/clients/s.arrayrecord").write_bytes(f.read())
  src = readers.array_records([f"{bucket}/clients/s.arrayrecord"])
  assert len(src) == 7
  assert src[3] == b"record 3" and src[6] == b"record 6"


def test_metrics_jsonl_on_gs_is_whole_objects_that_a_resume_extends(bucket):
  from demix_jax.training import metrics  # pylint: disable=g-import-not-at-top

  path = f"{bucket}/clients/run/metrics.jsonl"
  w = metrics.JsonlWriter(path)
  w.write_scalars(1, {"loss": 2.5})
  w.flush()
  assert fresh(path).read_text() == '{"loss": 2.5, "step": 1}\n'
  w.write_scalars(2, {"loss": float("nan")})
  w.close()
  # A new writer (a resumed run) keeps what is there and appends.
  w = metrics.JsonlWriter(path)
  w.write_scalars(3, {"loss": 1.0})
  w.close()
  lines = fresh(path).read_text().splitlines()
  assert [json.loads(x)["step"] for x in lines] == [1, 2, 3]
  assert json.loads(lines[1])["loss"] == "nan"
  assert not os.path.exists("gs:"), "metrics went to a local 'gs:' folder"


def test_tensorboard_is_left_out_only_for_gs_under_the_emulator(
    bucket, tmp_path
):
  from demix_jax.training import metrics  # pylint: disable=g-import-not-at-top

  def kinds(workdir):
    w = metrics.make_writer(workdir)
    names = [type(x).__name__ for x in w._writers]  # pylint: disable=protected-access
    w.close()
    return names

  assert "SummaryWriter" in kinds(str(tmp_path))
  assert "SummaryWriter" not in kinds(f"{bucket}/clients/tb")


def test_benchmark_cache_on_gs_is_an_object_read_back(bucket):
  from demix_jax.evals import benchmarks  # pylint: disable=g-import-not-at-top

  def encode(text):
    return [b % 250 + 3 for b in text.encode("utf-8")][:40]

  cache = f"{bucket}/clients/bench"
  kw = dict(fingerprint="f" * 16, seq_len=48, max_items=5, cache_dir=cache)
  first = benchmarks.load_benchmark("arc_easy", encode, **kw)
  (obj,) = list(fresh(cache).iterdir())
  assert obj.name.startswith("arc_easy-") and obj.name.endswith(".npz")
  again = benchmarks.load_benchmark("arc_easy", lambda t: 1 / 0, **kw)
  for k, v in first.arrays().items():
    np.testing.assert_array_equal(again.arrays()[k], v)
  assert not os.path.exists("gs:"), "the cache went to a local 'gs:' folder"
