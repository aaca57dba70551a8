"""The stage records: one per stage, in an order that respects `requires`."""

import dataclasses

from demix_jax import pipeline
from demix_jax.stages import registry
from demix_jax.stages import results
from demix_jax.stages import stage as stage_lib


def test_records_follow_the_order_and_their_prerequisites():
  names = [s.name for s in registry.STAGES]
  assert tuple(names) == stage_lib.ORDER
  for i, s in enumerate(registry.STAGES):
    for need in s.requires + s.optional:
      assert need in names and need != s.name, (s.name, need)
    # A required stage runs earlier; an optional one may run later.
    assert all(names.index(n) < i for n in s.requires), s.name
    assert issubclass(s.result, results.Result)
    assert registry.get(s.name) is s


def test_reused_stages_hash_what_their_results_depend_on():
  for s in registry.STAGES:
    if s.reused:
      # Every training result depends on the seed and the model (prepare
      # trains nothing: its shards depend on the sources and tokenizer).
      if s.reads_data:
        assert {"seed", "model"} <= set(s.hashed), s.name
      # A stage's hash covers the fields of the stages it requires (a
      # dotted prefix covers the fields under it).
      for need in s.requires:
        for f in registry.get(need).hashed:
          assert any(f == p or f.startswith(p + ".") for p in s.hashed), (
              s.name,
              need,
              f,
          )


def test_pipeline_code_names_no_stage():
  """The pipeline iterates records; no stage name appears in its code."""
  import ast  # pylint: disable=g-import-not-at-top
  import inspect  # pylint: disable=g-import-not-at-top

  tree = ast.parse(inspect.getsource(pipeline))
  docstrings = {
      id(n.body[0].value)
      for n in ast.walk(tree)
      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
      and n.body
      and isinstance(n.body[0], ast.Expr)
  }
  named = [
      n.value
      for n in ast.walk(tree)
      if isinstance(n, ast.Constant)
      and id(n) not in docstrings
      and n.value in stage_lib.ORDER
  ]
  assert not named, named


def test_a_new_stage_is_one_record(tmp_path, monkeypatch):
  """A record added to the registry runs first, and is skipped when done."""
  from configs import demo  # pylint: disable=g-import-not-at-top
  from demix_jax import spec as spec_lib  # pylint: disable=g-import-not-at-top

  ran = []

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class PrepareResult(results.Result):
    manifest: str

  def run(spec, inputs):
    ran.append(dict(inputs.results))
    return PrepareResult(manifest="m.json", tokens=0)

  prepare = stage_lib.Stage(
      name="prepare",
      requires=(),
      result=PrepareResult,
      run=run,
      hashed=("data.sources",),
      reads_data=False,
  )
  monkeypatch.setattr(registry, "STAGES", (prepare,))
  monkeypatch.setattr(registry, "_RECORDS", {"prepare": prepare})
  spec = dataclasses.replace(
      spec_lib.resolve(demo.get_config("runlocal")), stages=("prepare",)
  )
  out = pipeline.run(spec, str(tmp_path))
  assert out["prepare"].manifest == "m.json" and len(ran) == 1
  assert (tmp_path / "prepare" / "done.json").exists()
  again = pipeline.run(spec, str(tmp_path))
  assert again["prepare"] == out["prepare"] and len(ran) == 1  # skipped
