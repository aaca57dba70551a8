"""The prepare stage in the pipeline: shards first, then every stage reads them.

Three small JSONL corpora go through `stages=("prepare",)`; a later run of
other stages in the same workdir must see the sources as shards (exact
manifest counts, equal to the raw sources' counts) and a rerun must skip
the finished stage.
"""

import json
import random
import string

import demix_jax as dx
from demix_jax import pipeline
from demix_jax.stages import registry

_RNG = random.Random(0)


def _words(n: int) -> str:
  return " ".join(
      "".join(_RNG.choice(string.ascii_lowercase) for _ in range(5))
      for _ in range(n)
  )


# Varied enough text that the runlocal tokenizer (512 pieces) trains.
_TEXTS = {
    "general": [f"{_words(12)}." for _ in range(300)],
    "math": [
        f"{i} plus {i + 7} is {2 * i + 7}; {_words(4)}" for i in range(200)
    ],
    "code": [
        f"def f{i}(x):\n  return x * {i}  # {_words(5)}\n" for i in range(200)
    ],
}


def _config(tmp_path):
  arg = []
  for name, texts in _TEXTS.items():
    d = tmp_path / "corpora" / name
    d.mkdir(parents=True)
    with open(d / "part-0.jsonl", "w") as f:
      for t in texts:
        f.write(json.dumps({"text": t}) + "\n")
    arg.append(f"{name}={d}/*.jsonl")
  return dx.load_config("local_jsonl:runlocal," + ",".join(arg))


def test_prepare_stage_then_later_stages_read_the_shards(tmp_path, capsys):
  config = _config(tmp_path)
  workdir = str(tmp_path / "run")
  spec = dx.resolve(config, stages=("prepare",))
  out = pipeline.run(spec, workdir)
  result = out["prepare"]
  assert set(result.sources) == set(_TEXTS)
  for name, texts in _TEXTS.items():
    s = result.sources[name]
    assert s.directory == f"{workdir}/prepare/{name}"
    assert s.documents + s.heldout_documents == len(texts)
    assert s.heldout_documents > 0 and s.tokens > s.documents
    assert (tmp_path / "run" / "prepare" / name / "manifest.json").exists()

  # A later run in the same workdir: the sources read the shards, and the
  # counts the prior and caps use are the manifests' exact ones...
  later = dx.resolve(config, stages=("base",))
  ws = pipeline.preflight(later, workdir)
  for name, src in ws.data.sources.items():
    assert src.prepared is not None, name
    assert ws.data.token_counts[name] == result.sources[name].tokens
  # ...equal to the raw sources' counts in a workdir without prepare.
  raw = pipeline.preflight(later, str(tmp_path / "raw"))
  assert all(s.prepared is None for s in raw.data.sources.values())
  assert raw.data.token_counts == ws.data.token_counts

  # Finished: a rerun skips it.
  capsys.readouterr()
  again = pipeline.run(spec, workdir)
  assert again["prepare"].sources == result.sources
  assert "[prepare] complete, skipped" in capsys.readouterr().out


def test_prepare_record():
  rec = registry.get("prepare")
  assert registry.STAGES[0] is rec
  assert rec.requires == () and not rec.reads_data and rec.prepares_data
  assert rec.adapt is not None
