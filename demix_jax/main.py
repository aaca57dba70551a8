r"""Command-line entry point.

  python -m demix_jax.main --config=configs/demo.py --workdir=workdir/demo \
      [--stages=base,components,search,final,report] [--config.seed=1] \
      [--verbosity=0]

Output: one progress line per stage (rate, ETA), warnings, then the result
tables. INFO logging (ours, Orbax, absl, TensorFlow, Grain) is off unless
`--verbosity` is given: absl's own flag, so `--verbosity=0` brings back INFO
and `--verbosity=1` DEBUG, as in every absl program.

Exit codes: 0 success; 2 bad config or bad input (a flag, a config file or
override, a config value or the data it points at: the message names the
field and the fix; nothing was trained); 3 a stage's inputs are missing
(the message names the stage to run first); 4 a saved result (a done.json,
the search state, a checkpoint) is corrupt or unreadable (the message names
the file); 1 anything else (a bug or the machine: the traceback is shown).
"""

import os
import sys
import traceback
from typing import NoReturn

# TensorFlow's C++ logging is read once, when TF loads (seqio and clu load
# it): decide before any import can pull it in.
if not any(a.startswith(("--verbosity", "-v")) for a in sys.argv[1:]):
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from demix_jax import logs
from demix_jax.config_lib import ConfigError
from demix_jax.stages import stage as stage_lib

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
    "Stages to run, in order (default: config.stages). Known: "
    + ", ".join(stage_lib.ORDER)
    + ".",
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


def _fail(code: int, e: Exception | str) -> NoReturn:
  print(f"error: {e}", file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  # Exit at once: background threads (Orbax's reads of a damaged
  # checkpoint, Grain's prefetch) would otherwise print their own
  # tracebacks at interpreter shutdown, after the line that names the
  # problem. Nothing is being written here: these errors come before
  # training or from reading saved files, after every run was closed.
  os._exit(code)  # pylint: disable=protected-access


def _find_cause(
    e: BaseException | None, kind: type | tuple[type, ...]
) -> BaseException | None:
  """The first exception of `kind` in e's chain of causes and contexts."""
  seen = set()
  while e is not None and id(e) not in seen:
    if isinstance(e, kind):
      return e
    seen.add(id(e))
    e = e.__cause__ or e.__context__
  return None


def bad_flag_message(e: BaseException) -> str:
  """One line for a flag, config-file or override error (no traceback)."""
  config_error = _find_cause(e, ConfigError)
  if config_error is not None:
    # Raised by a config file's get_config; absl re-wraps it on the way.
    return str(config_error)
  missing = _find_cause(e, (KeyError, AttributeError))
  if missing is not None and not isinstance(e, flags.Error):
    key = str(missing).strip("\"'")
    return (
        f"a --config override names no config field ({key}). Fix: check the"
        " spelling against the config file; --config.a.b=value can only set"
        " a field the config defines"
    )
  text = str(e).strip()
  if isinstance(e, OSError) and "Failed loading config file" in text:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (
        f"--config: cannot load the config file ({'; '.join(lines[1:])})."
        " Fix: give a path such as configs/demo.py[:runlocal]"
    )
  if isinstance(e, flags.Error):
    return f"{text.rstrip('.')}. Fix: see --helpshort"
  frames = traceback.extract_tb(e.__traceback__)
  where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
  return (
      f"--config: loading the config raised {type(e).__name__}: {text}"
      f"{where}. Fix: correct the config file or its argument"
  )


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with bad flags or configs exiting with code 2."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except  # flags, config files, overrides
    _fail(EXIT_BAD_INPUT, bad_flag_message(e))


def _load_config():
  """The config flag's value; a config file that fails to load exits 2."""
  try:
    config = _CONFIG.value
    # A file that failed to load yields a stand-in that raises on first use.
    config.keys()
    return config
  except Exception as e:  # pylint: disable=broad-except  # any error of the user's file
    _fail(EXIT_BAD_INPUT, bad_flag_message(e))


def stages_flag(value: list[str] | None) -> tuple[str, ...] | None:
  """The stages `--stages` asks for; None when the flag is not given.

  Unknown names are refused with the config's own check (spec.resolve).

  Args:
    value: the flag's parsed list (None when absent).

  Returns:
    The stages as given, or None (the config's `stages`).

  Raises:
    ValueError: an empty flag, or an empty name in it; the message names
      `--stages` and the fix.
  """
  if value is None:
    return None
  if not value or not all(value):
    raise ValueError(
        f"--stages={','.join(value)} lists no stage or an empty name. Fix:"
        " list stages separated by commas, e.g. --stages=base,components,"
        " or leave --stages out to run the config's stages"
    )
  return tuple(value)


def main(argv):
  if len(argv) > 1:
    _fail(
        EXIT_BAD_INPUT,
        f"unexpected arguments {argv[1:]}. Fix: pass options as --name=value",
    )
  try:
    stages_flag(_STAGES.value)  # before JAX loads; names are checked later
  except ValueError as e:
    _fail(EXIT_BAD_INPUT, e)
  if not flags.FLAGS["verbosity"].present:
    logs.quiet_logging()
  # Imported here so `--help` and flag errors do not pay for JAX.
  import jax  # pylint: disable=g-import-not-at-top

  from demix_jax import backend  # pylint: disable=g-import-not-at-top
  from demix_jax import multihost  # pylint: disable=g-import-not-at-top
  from demix_jax import pipeline  # pylint: disable=g-import-not-at-top
  from demix_jax import spec as spec_lib  # pylint: disable=g-import-not-at-top
  from demix_jax import storage  # pylint: disable=g-import-not-at-top
  from demix_jax.stages import results as results_lib  # pylint: disable=g-import-not-at-top
  from demix_jax.training import checkpoint_reads  # pylint: disable=g-import-not-at-top

  if _want_distributed(_MULTIHOST.value):
    # Reads JAX_NUM_PROCESSES / JAX_PROCESS_ID where JAX cannot detect them.
    multihost.initialize()
  backend.require_expected_platform()  # exit 2: e.g. a busy TPU, CPU fallback
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
  config = _load_config()
  try:
    spec = spec_lib.resolve(
        config,
        num_devices=jax.device_count(),
        stages=tuple(_STAGES.value) if _STAGES.value else None,
    )
    # The run's one Workspace: bad data is refused here, before any stage.
    ws = pipeline.preflight(spec, workdir)
    result = pipeline.run(spec, workdir, workspace=ws)
  except pipeline.MissingInputError as e:
    _fail(EXIT_MISSING_INPUT, e)
  except (
      storage.CorruptFileError,  # done.json files, the search state
      results_lib.ResultError,  # a per-run record with missing fields
      checkpoint_reads.CheckpointError,  # a checkpoint that cannot be read
  ) as e:
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
  app.run(main, flags_parser=parse_flags)
