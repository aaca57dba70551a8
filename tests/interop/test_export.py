"""`python -m demix_jax.export`: run directories and merged proxies out to
Hugging Face directories."""

import dataclasses
import hashlib
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from demix_jax import export
from demix_jax.interop import hf
from demix_jax.interop import safetensors_np
from demix_jax.merging import methods
from demix_jax.merging import store as store_lib
from demix_jax.training import checkpointing as ck
from tests.interop import helpers
from tests.kit import ROOT


def _save_run(run_dir, params, cfg, fingerprint, step=4):
  c = ck.Checkpointer(run_dir, ck.CheckpointConfig(every_steps=1))
  meta = {
      "step": step,
      "tokens_seen": step * 64,
      "budget_tokens": [],
      "config_hash": "test",
      "data_mixture": {},
      "tokenizer_fingerprint": fingerprint,
      "model": cfg.to_dict(),
  }
  c.save(step, params, {"count": jnp.int32(step)}, {"i": 0}, meta)
  c.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, sp_vocab):
  """A demix_jax workdir: config.json, data/tokenizer.model, a base and
  three components (random params, fixed seeds)."""
  wd = tmp_path_factory.mktemp("wd")
  cfg = helpers.tiny_cfg()
  (wd / "data").mkdir()
  (wd / "data" / "tokenizer.model").write_bytes(sp_vocab.model_proto)
  (wd / "config.json").write_text(
      json.dumps({"data": {"tokenizer": {"path": ""}}, "model": cfg.to_dict()})
  )
  runs = {"base": wd / "base" / "run"}
  runs.update({n: wd / "components" / n for n in ("general", "code", "math")})
  params = {}
  for i, (name, d) in enumerate(runs.items()):
    params[name] = helpers.random_params(cfg, seed=10 + i)
    _save_run(d, params[name], cfg, sp_vocab.fingerprint)
  return {
      "dir": wd,
      "cfg": cfg,
      "runs": runs,
      "params": params,
      "fingerprint": sp_vocab.fingerprint,
  }


def test_cli_exports_a_run_with_its_tokenizer(workdir, tmp_path):
  out = tmp_path / "hf"
  r = subprocess.run(
      [
          sys.executable,
          "-m",
          "demix_jax.export",
          f"--run_dir={workdir['runs']['base']}",
          f"--out={out}",
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert r.returncode == 0, r.stdout + r.stderr
  summary = json.loads(r.stdout[r.stdout.index("{") :])
  assert summary["source"] == "run" and summary["step"] == 4
  assert summary["tokenizer"] == str(
      workdir["dir"] / "data" / "tokenizer.model"
  )
  back = hf.load_params(out, workdir["cfg"])
  want = workdir["params"]["base"]
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(back)):
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
  proto = (out / "tokenizer.model").read_bytes()
  assert hashlib.sha256(proto).hexdigest() == workdir["fingerprint"]
  assert (out / "tokenizer.json").exists()


def test_merged_proxy_is_the_linear_merge_at_alpha(workdir, tmp_path):
  runs = workdir["runs"]
  comps = {n: str(runs[n]) for n in ("general", "code", "math")}
  summary = export.export(
      str(tmp_path), components=comps, alpha="code=0.5,general=0.2,math=0.3"
  )
  assert summary["alpha"] == pytest.approx(
      {"general": 0.2, "code": 0.5, "math": 0.3}
  )
  back = hf.load_params(tmp_path, workdir["cfg"])
  want = store_lib.host_linear_merge(
      [workdir["params"][n] for n in comps], [0.2, 0.5, 0.3]
  )
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(back)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6)
  # Unnormalised weights in component order give the same mixture.
  export.export(str(tmp_path / "b"), components=comps, alpha=[2.0, 5.0, 3.0])
  again = hf.load_params(tmp_path / "b", workdir["cfg"])
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(again)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-7)


def test_base_using_method_merges_like_the_engine(workdir, tmp_path):
  runs = workdir["runs"]
  comps = {n: str(runs[n]) for n in ("general", "code")}
  with pytest.raises(export.ExportError, match="needs the base"):
    export.export(str(tmp_path), components=comps, alpha="1,1", method="ties")
  export.export(
      str(tmp_path),
      run_dir=str(runs["base"]),
      components=comps,
      alpha="1,3",
      method="ties",
  )
  store = store_lib.ComponentStore.from_params(
      [workdir["params"][n] for n in comps],
      list(comps),
      base=workdir["params"]["base"],
  )
  want = store.merge(jnp.array([1.0, 3.0]), methods.MergeSpec("ties"))
  back = hf.load_params(tmp_path, workdir["cfg"])
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(back)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    "alpha,msg",
    [
        ("0.5,-0.5,1", ">= 0"),
        ("0,0,0", "sum to zero"),
        ("0.5,0.5", "2 weights for 3"),
        ("general=1,code=1,art=1", "unknown"),
        ("a,b,c", "not a list of numbers"),
    ],
)
def test_bad_alpha_is_an_error(workdir, tmp_path, alpha, msg):
  comps = {n: str(workdir["runs"][n]) for n in ("general", "code", "math")}
  with pytest.raises(export.ExportError, match=msg):
    export.export(str(tmp_path), components=comps, alpha=alpha)


def test_tokenizer_must_be_the_checkpoints(workdir, tmp_path):
  from demix_jax.data import tokenizer as tokenizer_lib

  other = tokenizer_lib.train_vocab(
      {"t": ["another corpus entirely " * 40]}, 300, str(tmp_path / "o.model")
  )
  with pytest.raises(export.ExportError, match="not the tokenizer"):
    export.export(
        str(tmp_path / "x"),
        run_dir=str(workdir["runs"]["base"]),
        tokenizer=other.path,
    )
  # A run outside any workdir: nothing to find, the fix is named.
  lone = tmp_path / "lone"
  _save_run(lone, workdir["params"]["base"], workdir["cfg"], "f" * 64, step=1)
  with pytest.raises(export.ExportError, match="--tokenizer="):
    export.export(str(tmp_path / "y"), run_dir=str(lone))
  s = export.export(str(tmp_path / "z"), run_dir=str(lone), tokenizer="none")
  assert "tokenizer.json" not in s["files"]


def _cli(*args):
  return subprocess.run(
      [sys.executable, "-m", "demix_jax.export", *args],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )


def test_cli_without_out_is_refused_naming_the_flag():
  r = _cli("--run_dir=anything")
  assert r.returncode == 2, r.stdout + r.stderr
  assert "--out is required" in r.stdout and "--out=" in r.stdout
  assert "FATAL" not in r.stdout + r.stderr


def test_cli_merge_records_every_hyperparameter_and_the_raw_weights(
    workdir, tmp_path
):
  runs = workdir["runs"]
  out = tmp_path / "hf"
  r = _cli(
      f"--run_dir={runs['base']}",
      f"--components=general={runs['general']},code={runs['code']}",
      "--alpha=0.6,0.8",
      "--method=della_linear",
      "--density=0.7",
      "--epsilon=0.2",
      "--lambda=0.9",
      "--seed=5",
      "--rescale=inverse_density",
      f"--out={out}",
  )
  assert r.returncode == 0, r.stdout + r.stderr
  # Reading checkpoints is not worth a warning.
  assert "read only" not in r.stderr and "read_only" not in r.stderr
  spec = methods.MergeSpec(
      "della_linear",
      density=0.7,
      epsilon=0.2,
      scale=0.9,
      seed=5,
      rescale="inverse_density",
  )
  meta = json.loads(
      safetensors_np.read_metadata(out / "model.safetensors")["demix_jax"]
  )
  assert meta["method"] == "della_linear"
  assert meta["merge"] == dataclasses.asdict(spec)
  assert meta["weights"] == {"general": 0.6, "code": 0.8}
  assert not meta["normalizes_weights"] and "alpha" not in meta
  store = store_lib.ComponentStore.from_params(
      [workdir["params"][n] for n in ("general", "code")],
      ["general", "code"],
      base=workdir["params"]["base"],
  )
  want = store.merge(jnp.array([0.6, 0.8]), spec)
  back = hf.load_params(out, workdir["cfg"])
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(back)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  transformers = pytest.importorskip("transformers")
  tok = transformers.AutoTokenizer.from_pretrained(str(out))
  assert tok.padding_side == "left"  # batched generation
  batch = tok(["a b c", "a"], padding=True)["attention_mask"]
  assert batch[1][0] == 0 and batch[1][-1] == 1


def test_linear_records_the_normalised_mixture_beside_the_weights(
    workdir, tmp_path
):
  runs = workdir["runs"]
  comps = {n: str(runs[n]) for n in ("general", "code")}
  s = export.export(str(tmp_path), components=comps, alpha="1,3")
  assert s["weights"] == {"general": 1.0, "code": 3.0}
  assert s["normalizes_weights"]
  assert s["alpha"] == pytest.approx({"general": 0.25, "code": 0.75})
  assert s["merge"]["method"] == "linear"


@pytest.mark.parametrize(
    "method,hparams,msg",
    [
        ("della", {"density": 0.9, "epsilon": 0.15}, "--epsilon"),
        ("ties", {"density": 1.5}, "--density"),
        ("dare_ties", {"rescale": "l2"}, "--rescale"),
        ("spherical", {}, "--method=karcher"),
        ("nope", {}, "is unknown"),
    ],
)
def test_bad_merge_hyperparameters_fail_before_reading_checkpoints(
    tmp_path, method, hparams, msg
):
  # The component directories do not exist: the error comes first.
  comps = {"a": str(tmp_path / "no_a"), "b": str(tmp_path / "no_b")}
  with pytest.raises(export.ExportError, match=msg):
    export.export(
        str(tmp_path / "out"),
        components=comps,
        alpha="1,1",
        method=method,
        hparams=hparams,
    )
