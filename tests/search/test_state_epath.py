"""Search state on a non-local epath (a fake gs:// bucket held in memory).

The configs put the pipeline workdir on gs://, where files cannot be opened
with open(), appended to or fsynced. Here gs:// paths are routed through
etils' fsspec backend to an in-memory filesystem that, like GCS, refuses
appends, so the tests run offline and nothing lands on the local disk.
"""

import json
import math

from etils import epath
from etils.epath import backend as epath_backend
from etils.epath import gpath as epath_gpath
from fsspec.implementations import memory
import numpy as np
import pytest

from demix_jax.search import rounds
from demix_jax.search import state as state_lib
from demix_jax.search import table
from tests.search import test_rounds as tr

ROOT = "gs://fake-bucket/run/search/state"


class _FakeGCS(memory.MemoryFileSystem):
  """In-memory object store that, like GCS, cannot append or update."""

  protocol = ("gs", "gcs")
  store = {}  # Its own store: MemoryFileSystem's is shared process-wide.
  pseudo_dirs = [""]

  def _open(self, path, mode="rb", **kwargs):
    if "a" in mode or "+" in mode:
      raise NotImplementedError(f"object stores cannot open with {mode!r}")
    return super()._open(path, mode, **kwargs)


@pytest.fixture(name="gcs")
def _gcs(monkeypatch, tmp_path):
  fs = _FakeGCS()
  fs.store.clear()
  fs.pseudo_dirs[:] = [""]
  # With TensorFlow installed epath sends gs:// to tf.io.gfile (network);
  # without it, to fsspec, whose filesystem we swap for the fake one.
  monkeypatch.setattr(epath_gpath, "_is_tf_installed", lambda: False)
  monkeypatch.setattr(epath_backend.fsspec_backend, "fs", lambda path: fs)
  # A path mistakenly treated as local would land under the cwd.
  monkeypatch.chdir(tmp_path)
  yield fs
  assert not list(tmp_path.iterdir()), "a gs:// path was written locally"
  assert not [k for k in fs.store if ".tmp." in k], "temporary file left"


def _rows(n, start=0):
  return [
      {
          "id": start + i,
          "round": 0,
          "alpha": np.full(3, 1 / 3),
          "scores": {"a": float(i), "b": math.nan if i == 1 else -float(i)},
      }
      for i in range(n)
  ]


def _same_rows(got, want):
  assert [r["id"] for r in got] == [r["id"] for r in want]
  for g, w in zip(got, want):
    np.testing.assert_equal(
        g["scores"], state_lib.read_results_row(w)["scores"]
    )


def test_state_round_trip_on_gcs(gcs):
  root = epath.Path(ROOT)
  # The fake bucket really is the backend (not the local filesystem).
  # pylint: disable-next=protected-access
  assert root._backend is epath_backend.fsspec_backend
  root.mkdir(parents=True, exist_ok=True)
  assert state_lib.load_pool(ROOT) is None
  assert state_lib.load_state(ROOT) is None
  assert state_lib.read_results(ROOT) == []
  pool = np.random.default_rng(0).dirichlet(np.ones(4), size=50)
  state_lib.save_pool(ROOT, pool)
  np.testing.assert_array_equal(state_lib.load_pool(root), pool)
  state_lib.save_state(ROOT, {"round": 0, "rng": None})
  state_lib.save_state(root, {"round": 1, "rng": None})  # a rewrite
  assert state_lib.load_state(ROOT) == {"round": 1, "rng": None}
  # Two chunks: the second append rewrites the object (no append mode).
  state_lib.append_results(ROOT, _rows(3))
  state_lib.append_results(root, _rows(2, start=3))
  _same_rows(state_lib.read_results(ROOT), _rows(3) + _rows(2, start=3))
  assert len((root / state_lib.RESULTS).read_text().splitlines()) == 5
  assert sorted(k.rsplit("/", 1)[-1] for k in gcs.store) == [
      "pool.npy",
      "results.jsonl",
      "state.json",
  ]


def test_partial_last_line_is_dropped_on_gcs(gcs):
  del gcs
  path = epath.Path(ROOT) / state_lib.RESULTS
  path.parent.mkdir(parents=True, exist_ok=True)
  state_lib.append_results(ROOT, _rows(2))
  good = path.read_bytes()
  # What a local kill mid-append leaves, e.g. a copied-over workdir.
  path.write_bytes(good + b'{"id": 2, "rou')
  _same_rows(state_lib.read_results(ROOT), _rows(2))
  assert path.read_bytes() == good  # rewritten without the partial line
  state_lib.append_results(ROOT, _rows(1, start=2))
  _same_rows(state_lib.read_results(ROOT), _rows(2) + _rows(1, start=2))


def test_only_the_writer_writes_on_gcs(gcs, monkeypatch):
  epath.Path(ROOT).mkdir(parents=True, exist_ok=True)
  monkeypatch.setattr(state_lib, "is_writer", lambda: False)
  state_lib.save_pool(ROOT, np.eye(2))
  state_lib.save_state(ROOT, {"round": 0})
  state_lib.append_results(ROOT, _rows(2))
  assert not [k for k in gcs.store if not k.endswith("/")]


def test_search_on_gcs_matches_local(gcs, tmp_path_factory):
  local = tmp_path_factory.mktemp("local")
  ref = rounds.run_search(
      tr._evaluate, tr._pool(), tr.SPEC, tr._direction, tr._cfg(), str(local)
  )
  res = rounds.run_search(
      tr._evaluate, tr._pool(), tr.SPEC, tr._direction, tr._cfg(), ROOT
  )
  np.testing.assert_array_equal(res.alpha, ref.alpha)
  assert res.table_path == f"{ROOT}/proxies.csv"
  root = epath.Path(ROOT)
  # Same bytes in every file, whichever backend wrote them.
  for name in ("pool.npy", "results.jsonl", "state.json", "proxies.csv"):
    assert (root / name).read_bytes() == (local / name).read_bytes(), name
  got = json.loads((root / "result.json").read_text())
  assert (
      got["alpha"] == json.loads((local / "result.json").read_text())["alpha"]
  )
  assert len(gcs.store) >= 5


def test_crash_and_resume_on_gcs(gcs):
  del gcs
  ref = rounds.run_search(
      tr._evaluate,
      tr._pool(),
      tr.SPEC,
      tr._direction,
      tr._cfg(),
      ROOT + "-ref",
  )
  seen = []
  budget = {"n": 5}  # 4 chunks of round 0, then one of round 1

  def flaky(a):
    if budget["n"] == 0:
      raise tr._Crash()
    budget["n"] -= 1
    seen.extend(map(tuple, a))
    return tr._evaluate(a)

  with pytest.raises(tr._Crash):
    rounds.run_search(
        flaky, tr._pool(), tr.SPEC, tr._direction, tr._cfg(), ROOT
    )
  assert len(state_lib.read_results(ROOT)) == 20
  budget["n"] = 100
  res = rounds.run_search(
      flaky, tr._pool, tr.SPEC, tr._direction, tr._cfg(), ROOT
  )
  assert len(set(seen)) == len(seen) == 28
  np.testing.assert_array_equal(res.alpha, ref.alpha)


def test_report_reads_the_table_on_gcs(gcs, tmp_path_factory):
  del gcs
  local = tmp_path_factory.mktemp("local")
  names = ("a", "b", "c", "d", "e")
  tables = [
      rounds.run_search(
          tr._evaluate,
          tr._pool(),
          tr.SPEC,
          tr._direction,
          tr._cfg(),
          str(w),
          names,
      ).table_path
      for w in (local, ROOT)
  ]
  (x0, c0, r0), (x1, c1, r1) = [table.read_proxies(t, names) for t in tables]
  np.testing.assert_array_equal(x1, x0)
  np.testing.assert_array_equal(r1, r0)
  assert c1.keys() == c0.keys()
  for k in c0:
    np.testing.assert_array_equal(c1[k], c0[k])
