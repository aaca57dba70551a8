"""The numpy safetensors reader/writer, against the reference library."""

import json
import struct

import ml_dtypes
import numpy as np
import pytest

from demix_jax.interop import safetensors_np as st


def _tensors():
  rng = np.random.default_rng(0)
  return {
      "a.f32": rng.normal(size=(3, 5)).astype(np.float32),
      "b.bf16": rng.normal(size=(7,)).astype(ml_dtypes.bfloat16),
      "c.f16": rng.normal(size=(2, 2, 3)).astype(np.float16),
      "d.i64": np.arange(6, dtype=np.int64).reshape(2, 3),
      "e.scalar": np.array(1.5, np.float32),
      "f.bool": np.array([True, False, True]),
  }


def test_round_trip_every_dtype_bitwise(tmp_path):
  t = _tensors()
  st.write_file(tmp_path / "x.safetensors", t, {"format": "pt"})
  back = st.read_file(tmp_path / "x.safetensors")
  assert list(back) == list(t)
  for k, v in t.items():
    assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
    assert back[k].tobytes() == v.tobytes(), k
  assert st.read_metadata(tmp_path / "x.safetensors") == {"format": "pt"}


def test_layout_header_aligned_and_offsets_contiguous(tmp_path):
  t = _tensors()
  st.write_file(tmp_path / "x.safetensors", t)
  raw = (tmp_path / "x.safetensors").read_bytes()
  (n,) = struct.unpack("<Q", raw[:8])
  assert n % 8 == 0
  head = json.loads(raw[8 : 8 + n])
  spans = sorted(v["data_offsets"] for v in head.values())
  assert spans[0][0] == 0
  assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
  assert spans[-1][1] == len(raw) - 8 - n


def test_sharded_directory_round_trip(tmp_path):
  rng = np.random.default_rng(1)
  t = {f"w{i}": rng.normal(size=(64,)).astype(np.float32) for i in range(5)}
  files = st.write_dir(tmp_path, t, max_shard_bytes=600)
  assert len(files) == 4 and files[-1] == st.INDEX_NAME
  index = json.loads((tmp_path / st.INDEX_NAME).read_text())
  assert index["metadata"]["total_size"] == 5 * 256
  back = st.read_dir(tmp_path)
  for k, v in t.items():
    np.testing.assert_array_equal(back[k], v)


def test_truncated_file_is_an_error(tmp_path):
  st.write_file(tmp_path / "x.safetensors", {"w": np.ones(100, np.float32)})
  p = tmp_path / "x.safetensors"
  p.write_bytes(p.read_bytes()[:-10])
  with pytest.raises(st.SafetensorsError, match="truncated"):
    st.read_file(p)


def test_reference_library_reads_ours_and_we_read_its(tmp_path):
  st_np = pytest.importorskip("safetensors.numpy")
  t = {k: v for k, v in _tensors().items() if v.dtype != ml_dtypes.bfloat16}
  st.write_file(tmp_path / "ours.safetensors", t)
  theirs = st_np.load_file(str(tmp_path / "ours.safetensors"))
  for k, v in t.items():
    np.testing.assert_array_equal(theirs[k], v)
  st_np.save_file(t, str(tmp_path / "theirs.safetensors"))
  back = st.read_file(tmp_path / "theirs.safetensors")
  for k, v in t.items():
    np.testing.assert_array_equal(back[k], v)


def test_reference_library_reads_our_bfloat16(tmp_path):
  torch = pytest.importorskip("torch")
  st_torch = pytest.importorskip("safetensors.torch")
  x = np.random.default_rng(2).normal(size=(4, 3)).astype(ml_dtypes.bfloat16)
  st.write_file(tmp_path / "bf.safetensors", {"x": x})
  got = st_torch.load_file(str(tmp_path / "bf.safetensors"))["x"]
  assert got.dtype == torch.bfloat16
  np.testing.assert_array_equal(got.float().numpy(), x.astype(np.float32))
