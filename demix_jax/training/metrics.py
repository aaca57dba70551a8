"""Metric writers: TensorBoard event files, a JSONL file and the log.

`make_writer(workdir)` combines clu's `SummaryWriter` (TensorBoard), its
`LoggingWriter` and `JsonlWriter` (one JSON object per `write_scalars` call,
`{"step": ..., name: value, ...}`, in `workdir/metrics.jsonl`). Only process
0 writes files; other processes log only.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

from clu import metric_writers
import jax


def _num(v: Any) -> Any:
  try:
    f = float(v)
  except (TypeError, ValueError):
    return str(v)
  return f if math.isfinite(f) else str(f)


class JsonlWriter(metric_writers.MetricWriter):
  """Appends scalars (and hparams) as JSON lines to a file."""

  def __init__(self, path: str):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    self._f = open(path, "a", encoding="utf-8")  # pylint: disable=consider-using-with

  def _write(self, obj: Mapping[str, Any]) -> None:
    self._f.write(json.dumps(obj, sort_keys=True) + "\n")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self._write({"step": int(step), **{k: _num(v) for k, v in scalars.items()}})

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    self._write(
        {
            "hparams": {
                k: _num(v) if not isinstance(v, str) else v
                for k, v in hparams.items()
            }
        }
    )

  def write_summaries(self, step, values, metadata=None):
    del step, values, metadata

  def write_images(self, step, images):
    del step, images

  def write_videos(self, step, videos):
    del step, videos

  def write_audios(self, step, audios, *, sample_rate):
    del step, audios, sample_rate

  def write_texts(self, step, texts):
    del step, texts

  def write_histograms(self, step, arrays, num_buckets=None):
    del step, arrays, num_buckets

  def flush(self) -> None:
    self._f.flush()

  def close(self) -> None:
    if not self._f.closed:
      self._f.close()


def make_writer(workdir: str) -> metric_writers.MetricWriter:
  """TensorBoard + JSONL + logging on process 0; logging elsewhere."""
  if jax.process_index() != 0:
    return metric_writers.LoggingWriter()
  return metric_writers.MultiWriter(
      [
          metric_writers.SummaryWriter(workdir),
          JsonlWriter(os.path.join(workdir, "metrics.jsonl")),
          metric_writers.LoggingWriter(),
      ]
  )


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Reads a metrics.jsonl file back (for tests and reports)."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
