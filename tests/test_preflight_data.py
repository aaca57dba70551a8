"""Bad data is refused in the pre-flight pass, before any training.

One row per data problem a user can hand the pipeline (issue 18): empty or
undecodable files, records without text, a tokenizer that cannot reach its
size, a tokenizer file that is not a model or is larger than the model's
vocabulary, a damaged tokenizer cache. Each must raise a ConfigError that
names the field (or, for a damaged cache, a CorruptFileError that names the
file) from `resolve` + `pipeline.preflight` (the data checks included), which is
exactly what the CLI runs before the first stage; the CLI test at the end
checks the exit code and that nothing was trained.
"""

import json

import numpy as np
import pytest

from configs import local_jsonl
from demix_jax import config_lib
from demix_jax import pipeline
from demix_jax import spec as spec_lib
from demix_jax import storage

_WORDS = (
    "alpha beta gamma delta epsilon river mountain forest ocean desert city"
    " village market bridge tower garden winter summer autumn spring north"
    " south east west quick slow bright dark ancient modern simple complex"
).split()


def _docs(prefix, n=300):
  rng = np.random.default_rng(len(prefix))
  return [
      f"{prefix} {i}: " + " ".join(rng.choice(_WORDS, 40)) + "."
      for i in range(n)
  ]


def _jsonl(path, texts):
  path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
  return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  d = tmp_path_factory.mktemp("data")
  web = _jsonl(d / "web.jsonl", _docs("web"))
  _jsonl(
      d / "code.jsonl", [f"def f{i}(x):\n  return x + {i}\n" for i in range(60)]
  )
  (d / "empty.jsonl").write_text("")
  (d / "blank.jsonl").write_text("\n  \n\n")
  _jsonl(d / "emptytexts.jsonl", [""] * 20)
  (d / "badutf.jsonl").write_bytes(
      b'{"text": "fine"}\n{"text": "bad \xff\xfe bytes"}\n'
  )
  (d / "badjson.jsonl").write_text('{"text": "ok"}\n{"text": broken\n')
  (d / "number.jsonl").write_text('{"text": "ok"}\n{"text": 5}\n')
  (d / "body.jsonl").write_text('{"body": "text under another key"}\n')
  # 400 distinct characters: more than a 300-piece tokenizer can hold.
  _jsonl(
      d / "cjk.jsonl",
      [
          "".join(map(chr, range(0x4E00 + i, 0x4E28 + i)))
          for i in range(0, 400, 40)
      ],
  )
  (d / "garbage.model").write_bytes(b"this is not a sentencepiece model")
  return d, web


def _config(d, code="code.jsonl", **data_overrides):
  arg = f"runlocal,general={d}/web.jsonl,code={d}/{code}"
  config = local_jsonl.get_config(arg)
  for k, v in data_overrides.items():
    *parents, last = k.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[last] = v
  return config


def _preflight(config, workdir):
  spec = spec_lib.resolve(config, num_devices=1)
  return pipeline.preflight(spec, str(workdir))


# (name, code file, overrides, error field, words in the message)
_ROWS = [
    ("empty file", "empty.jsonl", {}, "data.sources.code.paths", "is empty"),
    (
        "blank lines only",
        "blank.jsonl",
        {},
        "data.sources.code.feature",
        "blank.jsonl",
    ),
    (
        "records with empty text",
        "emptytexts.jsonl",
        {},
        "data.sources.code.paths",
        "no documents",
    ),
    (
        "bytes that are not UTF-8",
        "badutf.jsonl",
        {},
        "data.sources.code",
        "badutf.jsonl (byte 31) is not UTF-8",
    ),
    (
        "a line that is not JSON",
        "badjson.jsonl",
        {},
        "data.sources.code.paths",
        "badjson.jsonl:2 is not JSON",
    ),
    (
        "text field is a number",
        "number.jsonl",
        {},
        "data.sources.code.feature",
        "number.jsonl:2",
    ),
    (
        "text under another key",
        "body.jsonl",
        {},
        "data.sources.code.feature",
        "no field 'text'",
    ),
    (
        "tokenizer below the required characters",
        "cjk.jsonl",
        {"data.tokenizer.vocab_size": 300},
        "data.tokenizer.vocab_size",
        "cannot be trained",
    ),
    (
        "tokenizer above what the text supports",
        "code.jsonl",
        {"data.tokenizer.vocab_size": 4096, "model.vocab_size": 4096},
        "data.tokenizer.vocab_size",
        "Vocabulary size too high",
    ),
    (
        "tokenizer below the byte floor",
        "code.jsonl",
        {"data.tokenizer.vocab_size": 200},
        "data.tokenizer.vocab_size",
        "too few",
    ),
    (
        "tokenizer file that is not a model",
        "code.jsonl",
        {"data.tokenizer.path": "{d}/garbage.model"},
        "data.tokenizer.path",
        "not a usable SentencePiece model",
    ),
]


@pytest.mark.parametrize(
    "name,code,overrides,field,words", _ROWS, ids=[r[0] for r in _ROWS]
)
def test_bad_data_is_refused_in_preflight(
    data, tmp_path, name, code, overrides, field, words
):
  d, _ = data
  overrides = {
      k: v.format(d=d) if isinstance(v, str) else v
      for k, v in overrides.items()
  }
  config = _config(d, code, **overrides)
  with pytest.raises(config_lib.ConfigError) as err:
    _preflight(config, tmp_path)
  assert err.value.field == field, (name, str(err.value))
  assert words in str(err.value), (name, str(err.value))
  assert "Fix:" in str(err.value)
  # Refused before any run directory was made.
  assert not (tmp_path / "base").exists()


def test_text_source_that_is_not_utf8_names_the_file(data, tmp_path):
  d, _ = data
  (tmp_path / "notes").mkdir()
  (tmp_path / "notes" / "a.txt").write_text("plain text, fine\n" * 40)
  (tmp_path / "notes" / "b.txt").write_bytes(b"caf\xe9 latin-1 text\n")
  config = _config(d)
  config.data.sources.code = {
      "kind": "text",
      "paths": (f"{tmp_path}/notes/*.txt",),
      "unit": "line",
  }
  with pytest.raises(config_lib.ConfigError) as err:
    _preflight(config, tmp_path / "wd")
  assert err.value.field == "data.sources.code"
  assert f"{tmp_path}/notes/b.txt (byte 3) is not UTF-8" in str(err.value)


def test_tokenizer_larger_than_the_model(data, tmp_path):
  """A tokenizer file of 512 pieces for a model of 400 rows is refused."""
  d, _ = data
  ws = _preflight(_config(d), tmp_path / "first")
  model = ws.data.data_dir / "tokenizer.model"
  assert ws.data.vocab.vocab_size == 512
  config = _config(
      d,
      **{
          "data.tokenizer.path": str(model),
          "model.vocab_size": 400,
          "data.tokenizer.vocab_size": 400,
      },
  )
  with pytest.raises(config_lib.ConfigError) as err:
    _preflight(config, tmp_path / "second")
  assert err.value.field == "model.vocab_size"
  assert "smaller than the tokenizer's 512 pieces" in str(err.value)
  # The same file with a model that has room for it passes.
  ok = _preflight(
      _config(d, **{"data.tokenizer.path": str(model)}), tmp_path / "third"
  )
  assert ok.data.vocab.fingerprint == ws.data.vocab.fingerprint


def test_damaged_tokenizer_cache_is_named(data, tmp_path):
  d, _ = data
  ws = _preflight(_config(d), tmp_path)
  model = ws.data.data_dir / "tokenizer.model"
  blob = model.read_bytes()
  model.write_bytes(blob[: len(blob) // 2])
  with pytest.raises(storage.CorruptFileError) as err:
    _preflight(_config(d), tmp_path)
  assert str(model) in str(err.value)


def test_cli_exit_code_and_nothing_trained(data, tmp_path, cli):
  d, _ = data
  proc = cli(
      f"--config=configs/local_jsonl.py:runlocal,general={d}/web.jsonl,"
      f"code={d}/badutf.jsonl",
      f"--workdir={tmp_path}",
  )
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "error: config.data.sources.code:" in proc.stderr
  assert "badutf.jsonl (byte 31) is not UTF-8" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "base").exists()
