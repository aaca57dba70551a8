"""The safetensors format with numpy alone (no torch, no `safetensors` wheel).

A safetensors file is: 8 bytes (little-endian u64) giving the length N of a
JSON header, the N-byte UTF-8 header, then the raw data. The header maps
each tensor name to `{"dtype": "F32", "shape": [...], "data_offsets":
[begin, end]}` (offsets relative to the first data byte; tensors are stored
back to back, C order, little-endian) and may hold a `"__metadata__"` dict
of strings. The header is padded with spaces to a multiple of 8 bytes, as
the reference writer does, so the data is aligned.

Sharded checkpoints (Hugging Face's `model.safetensors.index.json` with a
`weight_map` from tensor name to file) are read by `read_dir`, and written
by `write_dir` when a shard size is given.

Paths go through `etils.epath`, so `gs://` works for reading and writing.
bfloat16 uses `ml_dtypes` (a JAX dependency).
"""

from __future__ import annotations

import json
import os
import struct
from typing import Iterable, Iterator, Mapping

from etils import epath
import ml_dtypes
import numpy as np

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

_TO_NP = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("bool"),
}
_FROM_NP = {v: k for k, v in _TO_NP.items()}


class SafetensorsError(ValueError):
  """A malformed or unsupported safetensors file."""


def dtype_name(dtype) -> str:
  """The safetensors dtype tag ("F32", "BF16", ...) of a numpy dtype."""
  d = (
      np.dtype(dtype).newbyteorder("<")
      if np.dtype(dtype).byteorder == ">"
      else np.dtype(dtype)
  )
  if d not in _FROM_NP:
    raise SafetensorsError(f"dtype {dtype} has no safetensors tag")
  return _FROM_NP[d]


def _header(
    tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None
) -> bytes:
  head, offset = {}, 0
  for name, arr in tensors.items():
    n = arr.size * arr.dtype.itemsize
    head[name] = {
        "dtype": dtype_name(arr.dtype),
        "shape": [int(s) for s in arr.shape],
        "data_offsets": [offset, offset + n],
    }
    offset += n
  if metadata:
    head["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
  raw = json.dumps(head, separators=(",", ":")).encode("utf-8")
  raw += b" " * (-len(raw) % 8)
  return struct.pack("<Q", len(raw)) + raw


def write_file(
    path: str | os.PathLike,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> int:
  """Writes one safetensors file; returns its size in bytes.

  Args:
    path: destination (local or gs://).
    tensors: name -> array (any supported dtype; written little-endian, C
      order, in the mapping's order).
    metadata: optional string -> string header metadata (Hugging Face
      expects {"format": "pt"} for torch loaders).
  """
  arrays = {k: np.asarray(v, order="C") for k, v in tensors.items()}
  arrays = {
      k: v.astype(v.dtype.newbyteorder("<")) if v.dtype.byteorder == ">" else v
      for k, v in arrays.items()
  }
  head = _header(arrays, metadata)
  p = epath.Path(path)
  p.parent.mkdir(parents=True, exist_ok=True)
  with p.open("wb") as f:
    f.write(head)
    for arr in arrays.values():
      f.write(arr.tobytes(order="C"))
  return len(head) + sum(a.nbytes for a in arrays.values())


def read_header(f) -> tuple[dict, int]:
  """(header dict, offset of the data) of an open safetensors file."""
  raw = f.read(8)
  if len(raw) != 8:
    raise SafetensorsError("file shorter than the 8-byte header length")
  (n,) = struct.unpack("<Q", raw)
  if n > 100_000_000:
    raise SafetensorsError(f"header length {n} is implausible")
  try:
    head = json.loads(f.read(n).decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise SafetensorsError(f"header is not JSON: {e}") from e
  return head, 8 + n


def iter_file(
    path: str | os.PathLike, names: Iterable[str] | None = None
) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (name, array) of a safetensors file, reading one at a time.

  Args:
    path: the file (local or gs://).
    names: only these tensors (default: all, in file order).
  """
  p = epath.Path(path)
  with p.open("rb") as f:
    head, start = read_header(f)
    head.pop("__metadata__", None)
    wanted = list(head) if names is None else list(names)
    order = sorted(wanted, key=lambda k: head[k]["data_offsets"][0])
    for name in order:
      if name not in head:
        raise SafetensorsError(f"{path} has no tensor {name!r}")
      info = head[name]
      if info["dtype"] not in _TO_NP:
        raise SafetensorsError(
            f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}"
        )
      dt = _TO_NP[info["dtype"]]
      b, e = info["data_offsets"]
      shape = tuple(int(s) for s in info["shape"])
      if e - b != int(np.prod(shape, dtype=np.int64)) * dt.itemsize:
        raise SafetensorsError(
            f"{path}: tensor {name!r} offsets {b}..{e} do not fit shape "
            f"{shape} of {info['dtype']}"
        )
      f.seek(start + b)
      buf = f.read(e - b)
      if len(buf) != e - b:
        raise SafetensorsError(f"{path}: tensor {name!r} is truncated")
      yield name, np.frombuffer(buf, dtype=dt).reshape(shape).copy()


def read_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """All tensors of one safetensors file."""
  return dict(iter_file(path))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
  with epath.Path(path).open("rb") as f:
    head, _ = read_header(f)
  return dict(head.get("__metadata__") or {})


def weight_files(model_dir: str | os.PathLike) -> dict[str, list[str]]:
  """{file name: tensor names in it} of a Hugging Face model directory."""
  d = epath.Path(model_dir)
  if (d / INDEX_NAME).exists():
    wm = json.loads((d / INDEX_NAME).read_text())["weight_map"]
    out: dict[str, list[str]] = {}
    for name, fname in wm.items():
      out.setdefault(fname, []).append(name)
    return out
  if (d / SINGLE_NAME).exists():
    with (d / SINGLE_NAME).open("rb") as f:
      head, _ = read_header(f)
    head.pop("__metadata__", None)
    return {SINGLE_NAME: list(head)}
  raise FileNotFoundError(
      f"{model_dir} has neither {SINGLE_NAME} nor {INDEX_NAME} (only "
      "safetensors weights are read; convert .bin checkpoints first)"
  )


def read_dir(model_dir: str | os.PathLike) -> dict[str, np.ndarray]:
  """All tensors of a Hugging Face model directory (sharded or not)."""
  d = epath.Path(model_dir)
  out: dict[str, np.ndarray] = {}
  for fname, names in weight_files(model_dir).items():
    out.update(iter_file(d / fname, names))
  return out


def write_dir(
    model_dir: str | os.PathLike,
    tensors: Mapping[str, np.ndarray],
    max_shard_bytes: int | None = None,
    metadata: Mapping[str, str] | None = None,
) -> list[str]:
  """Writes `model.safetensors`, or shards plus the index past a size.

  Args:
    model_dir: the output directory.
    tensors: name -> array, written in this order.
    max_shard_bytes: start a new shard before a file would exceed this many
      data bytes (a single tensor larger than it gets a shard of its own);
      None = one file.
    metadata: header metadata of every file.

  Returns:
    The file names written (shards, then the index).
  """
  d = epath.Path(model_dir)
  d.mkdir(parents=True, exist_ok=True)
  total = sum(int(v.nbytes) for v in tensors.values())
  if max_shard_bytes is None or total <= max_shard_bytes:
    write_file(d / SINGLE_NAME, tensors, metadata)
    return [SINGLE_NAME]
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, arr in tensors.items():
    if shards[-1] and size + arr.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = arr
    size += int(arr.nbytes)
  n = len(shards)
  names = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
  weight_map = {}
  for fname, shard in zip(names, shards):
    write_file(d / fname, shard, metadata)
    weight_map.update({k: fname for k in shard})
  (d / INDEX_NAME).write_text(
      json.dumps(
          {"metadata": {"total_size": total}, "weight_map": weight_map},
          indent=2,
      )
  )
  return names + [INDEX_NAME]
