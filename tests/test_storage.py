"""demix_jax.storage: atomic writes locally and on a fake gs:// bucket."""

import json
import math
import os
import stat

from etils import epath
import numpy as np
import pytest

from demix_jax import storage
from tests.search.test_state_epath import _gcs  # noqa: F401  (the gcs fixture)

GS = "gs://fake-bucket/run/storage"


def test_json_text_is_sorted_indented_and_plain(tmp_path):
  path = tmp_path / "a.json"
  storage.atomic_write_json(
      path,
      {
          "b": np.float32(0.5),
          "a": [np.int64(3), np.nan, math.inf, (1, np.bool_(True))],
          "c": {"z": np.arange(3), "y": np.array([[1.5, np.nan]])},
          "d": pytest,  # unknown objects become their str()
      },
  )
  text = path.read_text()
  assert text == json.dumps(
      {
          "a": [3, None, None, [1, True]],
          "b": 0.5,
          "c": {"y": [[1.5, None]], "z": [0, 1, 2]},
          "d": str(pytest),
      },
      indent=1,
      sort_keys=True,
  )
  assert storage.read_json(path)["c"]["y"] == [[1.5, None]]
  assert storage.read_json(str(path))["b"] == 0.5


def test_key_order_kept_when_asked(tmp_path):
  path = tmp_path / "t.json"
  storage.atomic_write_json(path, {"math": 1, "code": 2}, sort_keys=False)
  assert list(storage.read_json(path)) == ["math", "code"]
  storage.atomic_write_json(path, {"math": 1, "code": 2})
  assert list(storage.read_json(path)) == ["code", "math"]


def test_bytes_and_text_round_trip_and_replace(tmp_path):
  path = tmp_path / "deep" / "er" / "f.bin"  # parents are created
  storage.atomic_write_bytes(path, b"\x00one")
  assert path.read_bytes() == b"\x00one"
  storage.atomic_write_text(str(path), "zwei \u00e9")
  assert path.read_text(encoding="utf-8") == "zwei \u00e9"
  storage.atomic_write_bytes(epath.Path(path), b"")
  assert path.read_bytes() == b""
  assert os.listdir(path.parent) == ["f.bin"]  # no temporary file left


def test_new_files_follow_the_umask(tmp_path):
  old = os.umask(0o022)
  try:
    storage.atomic_write_text(tmp_path / "m.txt", "x")
  finally:
    os.umask(old)
  assert stat.S_IMODE(os.stat(tmp_path / "m.txt").st_mode) == 0o644


def test_file_and_directory_are_fsynced(tmp_path, monkeypatch):
  kinds = []
  real = os.fsync

  def spy(fd):
    kinds.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
    real(fd)

  monkeypatch.setattr(os, "fsync", spy)
  storage.atomic_write_text(tmp_path / "s.txt", "x")
  assert kinds == ["file", "dir"]


@pytest.mark.parametrize("fail", ["fsync", "replace"])
def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch, fail):
  path = tmp_path / "state.json"
  storage.atomic_write_json(path, {"round": 1})
  before = path.read_bytes()

  def boom(*args):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(os, fail, boom)
  with pytest.raises(OSError, match="No space"):
    storage.atomic_write_json(path, {"round": 2})
  monkeypatch.undo()
  assert path.read_bytes() == before
  assert os.listdir(tmp_path) == ["state.json"]


def test_a_killed_write_leaves_only_a_hidden_temporary(tmp_path, monkeypatch):
  path = tmp_path / "done.json"
  storage.atomic_write_json(path, {"ok": True})

  def killed(*args):
    raise KeyboardInterrupt

  # Killed before the rename, and before any clean-up could run.
  monkeypatch.setattr(os, "replace", killed)
  monkeypatch.setattr(os, "unlink", lambda p: None)
  with pytest.raises(KeyboardInterrupt):
    storage.atomic_write_json(path, {"ok": False})
  monkeypatch.undo()
  assert storage.read_json(path) == {"ok": True}
  left = sorted(os.listdir(tmp_path))
  assert len(left) == 2 and left[1] == "done.json"
  assert left[0].startswith(".done.json.") and left[0].endswith(".tmp")
  # What a reader globbing for results finds: the real file only.
  assert [p.name for p in tmp_path.glob("*.json")] == ["done.json"]


def test_round_trip_on_gcs(gcs):
  storage.atomic_write_json(f"{GS}/a/b.json", {"x": np.float64(1.0), "n": None})
  assert storage.read_json(epath.Path(GS) / "a" / "b.json") == {
      "x": 1.0,
      "n": None,
  }
  p = epath.Path(GS) / "c.bin"
  storage.atomic_write_bytes(p, b"1")
  storage.atomic_write_bytes(p, b"22")  # a rewrite (no append, no rename)
  assert p.read_bytes() == b"22"
  storage.atomic_write_text(f"{GS}/t.txt", "text")
  assert (epath.Path(GS) / "t.txt").read_text() == "text"
  objects = sorted(k.rsplit("/", 1)[-1] for k in gcs.store)
  assert objects == ["b.json", "c.bin", "t.txt"]


def test_is_local():
  assert storage.is_local("/tmp/x") and storage.is_local(epath.Path("rel"))
  assert not storage.is_local("gs://b/x")
