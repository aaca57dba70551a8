"""Saved results write their paths relative to their workdir."""

from demix_jax.stages import results


def test_portable_and_localize_move_paths_under_the_workdir_only():
  d = {
      "run_dir": "/runs/a/final/demix",
      "root": "/runs/a",
      "budgets": {"60": "/runs/a/components/code/ckpt/60"},
      "list": ["/runs/a/x", "/runs/ab/not_under", "/elsewhere/a", 3, None],
      "gs": "gs://bucket/runs/a/final",
      "text": "natural",
  }
  p = results.portable(d, "/runs/a/")
  assert p["run_dir"] == "<workdir>/final/demix"
  assert p["root"] == "<workdir>"
  assert p["budgets"] == {"60": "<workdir>/components/code/ckpt/60"}
  # A sibling whose name only starts like the workdir is not under it.
  assert p["list"] == [
      "<workdir>/x",
      "/runs/ab/not_under",
      "/elsewhere/a",
      3,
      None,
  ]
  assert p["gs"] == d["gs"] and p["text"] == "natural"
  moved = results.localize(p, "/moved/b")
  assert moved["run_dir"] == "/moved/b/final/demix"
  assert moved["root"] == "/moved/b"
  assert results.localize(p, "/runs/a") == d
  # gs:// workdirs, and results saved before (absolute paths) read as is.
  g = results.portable({"r": "gs://bk/w/final/x"}, "gs://bk/w")
  assert g == {"r": "<workdir>/final/x"}
  assert results.localize(g, "gs://other/w2") == {"r": "gs://other/w2/final/x"}
  assert results.localize(d, "/moved/b") == d


def test_a_result_round_trips_through_portable_json():
  run = results.TrainedRun(
      run_dir="/w/components/code",
      steps=3,
      train_seconds=1.0,
      mixture={"code": 0.5, "general": 0.5},
      eval={"heldout/bpb": 2.0},
      budget_checkpoints={"60": "/w/components/code/checkpoints/60"},
  )
  saved = results.portable(run.to_json(), "/w")
  back = results.TrainedRun.from_json(results.localize(saved, "/v"))
  assert back.run_dir == "/v/components/code"
  assert back.budget_checkpoints == {"60": "/v/components/code/checkpoints/60"}
  assert back.mixture == run.mixture and back.steps == 3
