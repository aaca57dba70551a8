r"""Command line of prepare: tokenize a config's sources into shards.

  python -m demix_jax.prepare --config=configs/my_corpora.py \
      --out_dir=gs://my-bucket/prepared [--unit_mb=64] [--sources=web,code] \
      [--runner=DataflowRunner --project=my-proj --region=us-central1 \
       --temp_location=gs://my-bucket/tmp ...]

Reads `data.sources` and `data.tokenizer.path` of the config (and an
optional `prepare` section: out_dir, unit_mb, unit_docs, encode_batch,
cache_dir, beam_args; flags win). Any flag this program does not define is
a Beam pipeline option and passes through unchanged (after
prepare.beam_args), so the same command runs on the in-process
DirectRunner (default) or on Dataflow, Flink or Spark.

A source writes to `<out_dir>/<name>`, or to its own `prepared` directory
when its spec names one. Training reads the shards when the source names
that `prepared` directory (the same config then serves prepare and the
run), or from a source of kind "prepared":
  data.sources.web = {"kind": "prepared", "data_dir": "<out_dir>/web"}

Exit codes: 0 done; 2 bad input (a config, flag, source or tokenizer
problem: the message names the source and key, and nothing was written for
the pre-pass's checks); 1 anything else.
"""

import logging
import os
import sys

if not any(a.startswith(("--verbosity", "-v")) for a in sys.argv[1:]):
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file with data.sources.", lock_config=True
)
_OUT_DIR = flags.DEFINE_string(
    "out_dir",
    None,
    "Output directory (local or gs://); default prepare.out_dir",
)
_UNIT_MB = flags.DEFINE_float(
    "unit_mb", None, "Input MiB per work unit / shard (default 64)."
)
_UNIT_DOCS = flags.DEFINE_integer(
    "unit_docs", None, "Records per work unit of tfds/ArrayRecord/offline."
)
_SOURCES = flags.DEFINE_list("sources", None, "Only these sources.")
_TOKENIZER = flags.DEFINE_string(
    "tokenizer", None, "Tokenizer path (default data.tokenizer.path)."
)

EXIT_BAD_INPUT = 2


def _fail(code: int, message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def _section(config, name: str) -> dict:
  if name not in config:
    return {}
  return dict(config[name].to_dict())


def _options(config):
  from demix_jax.prepare import units  # pylint: disable=g-import-not-at-top

  sect = _section(config, "prepare")
  known = {
      "out_dir", "unit_mb", "unit_docs", "encode_batch", "cache_dir",
      "beam_args",
  }  # fmt: skip
  for k in sect:
    if k not in known:
      _fail(EXIT_BAD_INPUT, f"prepare.{k}: unknown key. Fix: use {known}")
  unit_mb = _UNIT_MB.value or sect.get("unit_mb", 64)
  try:
    return units.PrepareOptions(
        out_dir=_OUT_DIR.value or sect.get("out_dir", ""),
        unit_bytes=int(unit_mb * (1 << 20)),
        unit_docs=_UNIT_DOCS.value or sect.get("unit_docs", 100_000),
        encode_batch=sect.get("encode_batch", 1024),
        cache_dir=sect.get("cache_dir", ""),
        only=tuple(_SOURCES.value or ()),
    )
  except ValueError as e:
    _fail(EXIT_BAD_INPUT, str(e))


def _vocab(path: str):
  from demix_jax.data import tokenizer  # pylint: disable=g-import-not-at-top

  if not path:
    _fail(
        EXIT_BAD_INPUT,
        "data.tokenizer.path: not set; prepare needs the run's tokenizer."
        " Fix: set data.tokenizer.path (or --tokenizer) to its file",
    )
  try:
    vocab = tokenizer.load_vocab(path)
  except Exception as e:  # pylint: disable=broad-except  # any unreadable model
    _fail(
        EXIT_BAD_INPUT,
        f"data.tokenizer.path: {path} is not a tokenizer this version can"
        f" load ({type(e).__name__}: {str(e).splitlines()[0][:300]}). Fix:"
        " point it at a tokenizer model file",
    )
  for attr in ("encode_batch", "eos_id", "fingerprint"):
    if not hasattr(vocab, attr):
      _fail(EXIT_BAD_INPUT, f"data.tokenizer.path: {path} has no {attr}")
  return vocab


def main(argv):
  beam_argv = argv[1:]
  if not flags.FLAGS["verbosity"].present:
    # Beam logs every worker start at INFO; the progress lines are ours.
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
  config = _CONFIG.value
  from demix_jax.data import sources  # pylint: disable=g-import-not-at-top
  from demix_jax.data.errors import SourceError  # pylint: disable=g-import-not-at-top
  from demix_jax.prepare import runner  # pylint: disable=g-import-not-at-top

  options = _options(config)
  # The pipeline's prepare.beam_args (the prepare stage's), then this
  # command's own Beam flags, which win.
  beam_args = _section(config, "prepare").get("beam_args", ())
  if isinstance(beam_args, str) or not all(
      isinstance(a, str) for a in beam_args
  ):
    _fail(
        EXIT_BAD_INPUT,
        f"prepare.beam_args: expected a tuple of '--name=value' strings, got"
        f" {beam_args!r}. Fix: e.g. ('--runner=DataflowRunner',"
        " '--project=p')",
    )
  beam_argv = [*beam_args, *beam_argv]
  try:
    raw = config.data.sources.to_dict()
    specs = {n: sources.spec_from_dict(n, d) for n, d in raw.items()}
  except (AttributeError, KeyError) as e:
    _fail(EXIT_BAD_INPUT, f"data.sources: missing ({e}). Fix: define them")
  except SourceError as e:
    _fail(EXIT_BAD_INPUT, f"data.sources.{e.source}.{e.key}: {e}")
  path = _TOKENIZER.value or config.data.tokenizer.get("path", "")
  vocab = _vocab(path)
  try:
    runner.prepare_sources(specs, vocab, options, beam_argv)
  except SourceError as e:
    where = f"data.sources.{e.source}" + (f".{e.key}" if e.key else "")
    _fail(EXIT_BAD_INPUT, f"{where}: {e}")
  except Exception as e:  # pylint: disable=broad-except
    # Beam re-raises a worker's error wrapped; a SourceError inside it is
    # still bad input (found while reading, after the pre-pass).
    text = str(e)
    if "SourceError" in text:
      line = next(ln for ln in text.splitlines() if "SourceError" in ln).strip()
      _fail(EXIT_BAD_INPUT, line.split("SourceError:", 1)[-1].strip())
    raise


def _parse(argv):
  try:
    return flags.FLAGS(argv, known_only=True)
  except Exception as e:  # pylint: disable=broad-except  # flag or config file errors
    _fail(EXIT_BAD_INPUT, f"{str(e).strip()}. Fix: see --helpshort")


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main, flags_parser=_parse)
