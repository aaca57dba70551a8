"""Faults in the saved state: failed writes are survived, damage is named.

A full disk (ENOSPC, raised half-way through the real write) during a
search-state save or a results append leaves the previous file usable, and
a rerun resumes from it: the same alpha* as an uninterrupted search, and no
proxy that was recorded before the fault is scored again. A corrupt or
truncated state file, results file or stage `done.json` is refused with an
error that names the file (exit code 4 from the CLI), never read as if it
were fine. Checkpoint write faults and damaged checkpoints are tested with
the trainer, in tests/training/test_checkpoint_faults.py.
"""

import errno
import io
import json
import os
import shutil
import types

from etils import epath
import numpy as np
import pytest

from configs import demo
from demix_jax import pipeline
from demix_jax import spec as spec_lib
from demix_jax import storage
from demix_jax.search import rounds
from demix_jax.search import state as state_lib
from demix_jax.stages import common
from demix_jax.stages import components as components_stage
from demix_jax.stages import results as results_lib
from tests.search import test_rounds as tr

N_PROXIES = 28  # 16 + 8 + 4 (tr._cfg)


class _Recorder:
  """evaluate_fn that records every mixture it scores."""

  def __init__(self):
    self.seen = []

  def __call__(self, alphas):
    self.seen.extend(tuple(a) for a in np.asarray(alphas))
    return tr._evaluate(alphas)  # pylint: disable=protected-access


def _search(workdir, evaluate):
  return rounds.run_search(
      evaluate,
      tr._pool,  # pylint: disable=protected-access
      tr.SPEC,
      tr._direction,  # pylint: disable=protected-access
      tr._cfg(),  # pylint: disable=protected-access
      str(workdir),
  )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("ref")
  ev = _Recorder()
  res = _search(workdir, ev)
  assert len(ev.seen) == N_PROXIES
  return workdir, res


def _rows(workdir):
  return [json.loads(x) for x in (workdir / state_lib.RESULTS).open()]


class _DiskFull(io.RawIOBase):
  """A file whose next write stores `keep` bytes, then fails with ENOSPC."""

  def __init__(self, f, keep):
    super().__init__()
    self._f, self._keep = f, keep

  def write(self, data):
    self._f.write(data[: self._keep])
    self._f.flush()
    raise OSError(errno.ENOSPC, "No space left on device (simulated)")

  def __getattr__(self, name):
    return getattr(self._f, name)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._f.close()


def test_failed_state_save_keeps_the_previous_and_resumes(
    reference, tmp_path, monkeypatch
):
  """The disk fills while state.json is rewritten at the end of round 1."""
  ref_dir, ref = reference
  real_fdopen = os.fdopen
  calls = {"state": 0}

  def fdopen(fd, *args, **kwargs):
    f = real_fdopen(fd, *args, **kwargs)
    name = os.readlink(f"/proc/self/fd/{fd}")
    if os.path.basename(name).startswith(".state.json."):
      calls["state"] += 1
      # Saves: init, round-0 proposals, round 0 done, round-1 proposals,
      # round 1 done <- this one fails half-way.
      if calls["state"] == 5:
        return _DiskFull(f, keep=40)
    return f

  first = _Recorder()
  monkeypatch.setattr(storage.os, "fdopen", fdopen)
  with pytest.raises(OSError, match="No space left"):
    _search(tmp_path, first)
  monkeypatch.undo()
  # The failed save left the previous state.json, whole, and no temporary.
  st = state_lib.load_state(tmp_path)
  assert st["round"] == 1 and st["pending"]["round"] == 1
  assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
  assert len(first.seen) == 16 + 8  # round 1 was scored before the fault
  second = _Recorder()
  res = _search(tmp_path, second)
  # Resumed from the saved state: only round 2 is scored.
  assert len(second.seen) == 4
  assert not set(first.seen) & set(second.seen)
  np.testing.assert_array_equal(res.alpha, ref.alpha)
  ids = [r["id"] for r in _rows(tmp_path)]
  assert len(ids) == len(set(ids)) == N_PROXIES
  assert ids == [r["id"] for r in _rows(ref_dir)]


def test_failed_results_append_rescores_only_the_lost_rows(
    reference, tmp_path, monkeypatch
):
  """The disk fills half-way through the second row of a chunk of 4."""
  ref_dir, ref = reference
  real_open = open
  calls = {"append": 0}

  def fake_open(path, mode="r", *args, **kwargs):
    f = real_open(path, mode, *args, **kwargs)
    if str(path).endswith(state_lib.RESULTS) and mode == "a":
      calls["append"] += 1
      if calls["append"] == 6:  # round 1, second chunk: proxies 20..23
        one_row = len(json.dumps(_rows(ref_dir)[0])) + 1
        return _DiskFull(f, keep=one_row + 10)
    return f

  first = _Recorder()
  monkeypatch.setattr(state_lib, "open", fake_open, raising=False)
  with pytest.raises(OSError, match="No space left"):
    _search(tmp_path, first)
  monkeypatch.undo()
  raw = (tmp_path / state_lib.RESULTS).read_bytes()
  assert not raw.endswith(b"\n")  # a partial row was left behind
  kept = raw.count(b"\n")
  assert kept == 21 and len(first.seen) == 24  # 20 + 1 whole, 3 lost
  second = _Recorder()
  res = _search(tmp_path, second)
  recorded = {tuple(r["alpha"]) for r in _rows(tmp_path)[:kept]}
  # The 3 rows that did not reach the disk, then round 2; nothing recorded
  # before the fault is scored again.
  assert len(second.seen) == 3 + 4
  assert not recorded & set(second.seen)
  np.testing.assert_array_equal(res.alpha, ref.alpha)
  ids = [r["id"] for r in _rows(tmp_path)]
  assert len(ids) == len(set(ids)) == N_PROXIES


def _corrupt_line(path, lineno, text):
  lines = path.read_text().splitlines(keepends=True)
  lines[lineno - 1] = text
  path.write_text("".join(lines))


def _duplicate_row(path):
  lines = path.read_text().splitlines(keepends=True)
  path.write_text("".join(lines + lines[3:4]))


def _foreign_alpha(path):
  rows = [json.loads(x) for x in path.open()]
  rows[5]["alpha"] = list(np.roll(rows[5]["alpha"], 1))
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _truncate(path, keep=0.5):
  data = path.read_bytes()
  path.write_bytes(data[: int(len(data) * keep)])


# (what, file, damage, words in the error)
_DAMAGE = [
    (
        "garbage line",
        state_lib.RESULTS,
        lambda p: _corrupt_line(p, 7, "}{ not json\n"),
        "line 7: JSONDecodeError",
    ),
    (
        "row without scores",
        state_lib.RESULTS,
        lambda p: _corrupt_line(p, 3, '{"id": 2, "round": 0, "alpha": []}\n'),
        "line 3: ValueError: not a result row",
    ),
    (
        "null byte in a line",
        state_lib.RESULTS,
        lambda p: _corrupt_line(p, 10, "\x00" * 20 + "\n"),
        "line 10",
    ),
    (
        "row recorded twice",
        state_lib.RESULTS,
        _duplicate_row,
        "is recorded twice",
    ),
    (
        "row that is not the pool's",
        state_lib.RESULTS,
        _foreign_alpha,
        "proxy 5 is not row 5 of the pool",
    ),
    ("truncated state", state_lib.STATE, _truncate, "JSONDecodeError"),
    ("empty state", state_lib.STATE, lambda p: p.write_text(""), "JSON"),
    (
        "state of another program",
        state_lib.STATE,
        lambda p: p.write_text('{"round": 2}'),
        "needs the keys",
    ),
    ("truncated pool", state_lib.POOL, _truncate, "pool.npy"),
]


@pytest.mark.parametrize(
    "what,name,damage,words", _DAMAGE, ids=[d[0] for d in _DAMAGE]
)
def test_damaged_search_state_is_named(
    reference, tmp_path, what, name, damage, words
):
  ref_dir, _ = reference
  workdir = tmp_path / "state"
  shutil.copytree(ref_dir, workdir)
  damage(workdir / name)
  ev = _Recorder()
  with pytest.raises(storage.CorruptFileError) as err:
    _search(workdir, ev)
  assert str(workdir / name) in str(err.value), what
  assert words in str(err.value), (what, str(err.value))
  assert not ev.seen  # refused before anything was scored


def test_partial_last_line_is_not_damage(reference, tmp_path):
  """A kill during an append: the partial row is dropped and rescored."""
  ref_dir, ref = reference
  workdir = tmp_path / "state"
  shutil.copytree(ref_dir, workdir)
  path = workdir / state_lib.RESULTS
  rows = path.read_text().splitlines(keepends=True)
  path.write_text("".join(rows[:-1]) + rows[-1][:30])
  state = state_lib.load_state(workdir)
  state.update(round=2, pending={"round": 2, "ids": state["round_ids"][2]})
  state["pending"]["cv"] = {}
  state["summaries"] = state["summaries"][:2]
  state_lib.save_state(workdir, state)
  ev = _Recorder()
  res = _search(workdir, ev)
  assert ev.seen == [tuple(np.array(json.loads(rows[-1])["alpha"]))]
  np.testing.assert_array_equal(res.alpha, ref.alpha)


# ------------------------------------------------------------- done.json


@pytest.fixture(scope="module")
def spec():
  return spec_lib.resolve(demo.get_config("runlocal"), num_devices=1)


def _base_result():
  return results_lib.BaseResult(
      run_dir="/runs/base",
      steps=20,
      train_seconds=1.0,
      mixture={"general": 1.0},
      eval={"heldout/bpb": 3.0},
      tokens=10240,
      seconds=2.0,
  )


_DONE_DAMAGE = [
    ("truncated", lambda t: t[: len(t) // 2], "JSONDecodeError"),
    ("empty", lambda t: "", "JSONDecodeError"),
    ("not an object", lambda t: "[1, 2]", "not a JSON object"),
    (
        "missing field",
        lambda t: json.dumps(
            {k: v for k, v in json.loads(t).items() if k != "steps"}
        ),
        "missing field 'steps'",
    ),
    ("not UTF-8", lambda t: t[:20] + "\udcff" + t[20:], "UnicodeDecodeError"),
]


@pytest.mark.parametrize(
    "what,damage,words", _DONE_DAMAGE, ids=[d[0] for d in _DONE_DAMAGE]
)
def test_damaged_done_json_is_named(spec, tmp_path, what, damage, words):
  workdir = epath.Path(tmp_path)
  pipeline.save_result(spec, workdir, "base", _base_result())
  path = workdir / "base" / "done.json"
  assert pipeline.load_result(spec, workdir, "base") == _base_result()
  path.write_bytes(damage(path.read_text()).encode("utf-8", "surrogateescape"))
  with pytest.raises(pipeline.CorruptResultError) as err:
    pipeline.load_result(spec, workdir, "base")
  assert str(path) in str(err.value), what
  assert words in str(err.value), (what, str(err.value))
  assert "delete it to redo stage 'base'" in str(err.value)


def test_damaged_component_record_is_named(spec, tmp_path):
  """components/<c>/done.json is read back, not retrained over, nor reused."""
  ws = types.SimpleNamespace(candidates=("general",), workdir=tmp_path)
  inputs = common.Inputs(ws=ws, results={"base": _base_result()})
  done = tmp_path / "components" / "general" / "done.json"
  done.parent.mkdir(parents=True)
  done.write_text('{"run_dir": "/runs/c", "tokens": 61')
  with pytest.raises(storage.CorruptFileError, match=str(done)):
    components_stage.train_components(
        spec, inputs, 0.5, tmp_path / "components"
    )
  done.write_text(json.dumps({"run_dir": "/runs/c", "tokens": 6144}))
  with pytest.raises(results_lib.ResultError, match=f"{done}: missing field"):
    components_stage.train_components(
        spec, inputs, 0.5, tmp_path / "components"
    )


def test_unfinished_run_under_another_config_is_refused(tmp_path):
  """A killed run's checkpoint records the config hash it was trained under."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from demix_jax import config_lib  # pylint: disable=g-import-not-at-top
  from demix_jax import guards  # pylint: disable=g-import-not-at-top
  from demix_jax.training import checkpointing  # pylint: disable=g-import-not-at-top

  run_dir = tmp_path / "base" / "run"
  guards.check_unfinished_run(run_dir, "any", "the base")  # nothing saved
  ck = checkpointing.Checkpointer(
      run_dir, checkpointing.CheckpointConfig(every_steps=1, async_save=False)
  )
  params = {"w": jnp.ones((2, 2))}
  ck.save(3, params, params, {"index": 3}, {"step": 3, "config_hash": "a" * 64})
  ck.close()
  guards.check_unfinished_run(run_dir, "a" * 64, "the base")  # same config
  with pytest.raises(config_lib.ConfigError) as err:
    guards.check_unfinished_run(run_dir, "b" * 64, "the base")
  assert err.value.field == "<workdir>/base"
  assert f"{run_dir} holds the base stopped part-way" in str(err.value)
  assert f"delete {run_dir}" in str(err.value)
