"""`python -m demix_jax.export`: run directories and merged proxies out to
Hugging Face directories."""

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
