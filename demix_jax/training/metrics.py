"""Metric writers: TensorBoard event files, a JSONL file and the log.

`make_writer(workdir)` combines clu's `SummaryWriter` (TensorBoard), its
`LoggingWriter` and `JsonlWriter` (one JSON object per `write_scalars` call,
`{"step": ..., name: value, ...}`, in `workdir/metrics.jsonl`). Only process
0 writes files; other processes log only.

On an object store (gs://) there is no append: the JSONL file is kept in
memory (starting from the object already there, so a resumed run extends
it) and written as one whole object on every flush. TensorBoard's writer
goes through TensorFlow's own GCS client, which has no emulator endpoint:
with a GCS emulator named (`STORAGE_EMULATOR_HOST`, see
`demix_jax.gcs_emulator`) and a gs:// workdir, no event files are written.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

from absl import logging
from clu import metric_writers
from etils import epath
import jax

from demix_jax import gcs_emulator
from demix_jax import storage


def _num(v: Any) -> Any:
  try:
    f = float(v)
  except (TypeError, ValueError):
    return str(v)
  return f if math.isfinite(f) else str(f)


class JsonlWriter(metric_writers.MetricWriter):
  """Appends scalars (and hparams) as JSON lines to a file."""

  def __init__(self, path: str):
    self._path = path
    self._lines: list[str] | None = None  # an object store's whole file
    self._dirty = False
    if storage.is_local(path):
      os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
      self._f = open(path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
      return
    p = epath.Path(path)
    # Whole-object writes: what is there is complete.
    self._lines = [p.read_text()] if p.exists() else []

  def _write(self, obj: Mapping[str, Any]) -> None:
    line = json.dumps(obj, sort_keys=True) + "\n"
    if self._lines is None:
      self._f.write(line)
    else:
      self._lines.append(line)
      self._dirty = True

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
    if self._lines is None:
      self._f.flush()
    elif self._dirty:
      storage.atomic_write_text(self._path, "".join(self._lines))
      self._dirty = False

  def close(self) -> None:
    if self._lines is not None:
      self.flush()
    elif not self._f.closed:
      self._f.close()


def make_writer(workdir: str) -> metric_writers.MetricWriter:
  """TensorBoard + JSONL + logging on process 0; logging elsewhere."""
  if jax.process_index() != 0:
    return metric_writers.LoggingWriter()
  writers = [
      JsonlWriter(os.path.join(workdir, "metrics.jsonl")),
      metric_writers.LoggingWriter(),
  ]
  if storage.is_local(workdir) or not gcs_emulator.emulator_url():
    writers.insert(0, metric_writers.SummaryWriter(workdir))
  else:
    logging.warning(
        "no TensorBoard events in %s: TensorFlow's GCS client cannot reach"
        " the emulator named by %s",
        workdir,
        gcs_emulator.HOST_ENV,
    )
  return metric_writers.MultiWriter(writers)


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Reads a metrics.jsonl file back (for tests and reports)."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
