r"""Command-line entry point.

  python -m demix_jax.main --config=configs/demo.py --workdir=workdir/demo \
      [--stages=base,components,search,final,report] [--config.seed=1] \
      [--verbosity=0]

Output: one progress line per stage (rate, ETA), warnings, then the result
tables. INFO logging (ours, Orbax, absl, TensorFlow, Grain) is off unless
`--verbosity` is given: absl's own flag, so `--verbosity=0` brings back INFO
and `--verbosity=1` DEBUG, as in every absl program.

Exit codes: 0 success; 2 bad config or bad input (the message names the
field and the fix; nothing was computed); 3 a stage's inputs are missing
(the message names the stage to run first); 4 a saved result is corrupt
(the message names the file); 1 anything else.
"""

import logging as py_logging
import os
import sys

# TensorFlow's C++ logging is read once, when TF loads (seqio and clu load
# it): decide before any import can pull it in.
if not any(a.startswith(("--verbosity", "-v")) for a in sys.argv[1:]):
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file, e.g. configs/demo.py[:runlocal].",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output directory (local path or gs://).", required=True
)
_STAGES = flags.DEFINE_list(
    "stages",
    None,
    "Stages to run, in order (default: config.stages). Known: base,"
    " components, search, final, validate, report.",
)
_MULTIHOST = flags.DEFINE_enum(
    "multihost",
    "auto",
    ["auto", "on", "off"],
    "Call jax.distributed.initialize(): 'auto' does so on Cloud TPU VMs with"
    " several hosts or when JAX_COORDINATOR_ADDRESS is set.",
)

EXIT_BAD_INPUT = 2
EXIT_MISSING_INPUT = 3
EXIT_CORRUPT = 4
# Libraries that log routine events at INFO/WARNING (Orbax's read-only
# managers, tfds's builder configs) through absl or Python logging.
_QUIET_PACKAGES = (
    "orbax",
    "tensorflow_datasets",
    "tensorflow",
    "grain",
    "etils",
    "jax",
    "seqio",
    "clu",
)


class _ThirdPartyFilter(py_logging.Filter):
  """Drops other packages' records below ERROR; ours pass from WARNING."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if record.levelno >= py_logging.ERROR:
      return True
    path = record.pathname.replace(os.sep, "/")
    return not any(f"/{p}/" in path for p in _QUIET_PACKAGES)


def _import_tensorflow_quietly() -> None:
  """Loads TensorFlow with stderr muted.

  TF's C++ start-up lines (oneDNN, CUDA probing) go through absl's C++
  logging before TF_CPP_MIN_LOG_LEVEL is consulted, so the only way to keep
  them off the terminal is to mute file descriptor 2 while TF loads. An
  import error is not hidden: the real import later raises it.
  """
  saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(null, 2)
  try:
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import  # noqa: F401
  except ImportError:
    pass
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(null)


def quiet_logging() -> None:
  """INFO off everywhere, third-party warnings off: progress and tables."""
  _import_tensorflow_quietly()
  logging.set_verbosity(logging.WARNING)
  logging.get_absl_handler().addFilter(_ThirdPartyFilter())
  for name in _QUIET_PACKAGES:
    py_logging.getLogger(name).setLevel(py_logging.ERROR)


def _want_distributed(mode: str) -> bool:
  if mode != "auto":
    return mode == "on"
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  # Cloud TPU VMs list their workers here; one entry means a single host.
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return len([h for h in hosts.split(",") if h]) > 1


def storage_json(path: str):
  from demix_jax import storage  # pylint: disable=g-import-not-at-top

  return storage.read_json(path)


def _fail(code: int, e: Exception) -> None:
  print(f"error: {e}", file=sys.stderr)
  sys.exit(code)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    quiet_logging()
  # Imported here so `--help` and flag errors do not pay for JAX.
  import jax  # pylint: disable=g-import-not-at-top

  from demix_jax import multihost  # pylint: disable=g-import-not-at-top
  from demix_jax import pipeline  # pylint: disable=g-import-not-at-top
  from demix_jax import spec as spec_lib  # pylint: disable=g-import-not-at-top
  from demix_jax.config_lib import ConfigError  # pylint: disable=g-import-not-at-top

  if _want_distributed(_MULTIHOST.value):
    # Reads JAX_NUM_PROCESSES / JAX_PROCESS_ID where JAX cannot detect them.
    multihost.initialize()
  logging.info(
      "JAX %s, backend %s, process %d/%d, %d local / %d global devices",
      jax.__version__,
      jax.default_backend(),
      jax.process_index(),
      jax.process_count(),
      jax.local_device_count(),
      jax.device_count(),
  )
  workdir = _WORKDIR.value
  try:
    spec = spec_lib.resolve(
        _CONFIG.value,
        num_devices=jax.device_count(),
        stages=tuple(_STAGES.value) if _STAGES.value else None,
    )
    pipeline.preflight(spec, workdir)
  except ConfigError as e:
    _fail(EXIT_BAD_INPUT, e)
  try:
    result = pipeline.run(spec, workdir)
  except pipeline.MissingInputError as e:
    _fail(EXIT_MISSING_INPUT, e)
  except pipeline.CorruptResultError as e:
    _fail(EXIT_CORRUPT, e)
  except ConfigError as e:
    _fail(EXIT_BAD_INPUT, e)
  if result and jax.process_index() == 0:
    print(f"\nOutputs: {workdir}/<stage>/done.json for {', '.join(result)}")
    if "report" in result:
      from demix_jax.stages import report  # pylint: disable=g-import-not-at-top

      print(f"Report: {workdir}/report/report.md")
      report.print_result(storage_json(result["report"].summary))


if __name__ == "__main__":
  app.run(main)
