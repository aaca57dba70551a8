r"""Command-line entry point.

  python -m demix_jax.main --config=configs/demo.py --workdir=workdir/demo \
      [--stages=base,components,search,final,report] [--config.seed=1]

Exit codes: 0 success; 2 bad config or bad input (the message names the
field and the fix; nothing was computed); 3 a stage's inputs are missing
(the message names the stage to run first); 1 anything else.
"""

import os
import sys

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


def _want_distributed(mode: str) -> bool:
  if mode != "auto":
    return mode == "on"
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  # Cloud TPU VMs list their workers here; one entry means a single host.
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return len([h for h in hosts.split(",") if h]) > 1


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Imported here so `--help` and flag errors do not pay for JAX.
  import jax  # pylint: disable=g-import-not-at-top

  from demix_jax import config_lib  # pylint: disable=g-import-not-at-top
  from demix_jax import multihost  # pylint: disable=g-import-not-at-top
  from demix_jax import pipeline  # pylint: disable=g-import-not-at-top

  if _want_distributed(_MULTIHOST.value):
    # Reads JAX_NUM_PROCESSES / JAX_PROCESS_ID where JAX cannot detect them.
    multihost.initialize()
  logging.info(
      "JAX %s, backend %s, process %d/%d, %d local / %d global" " devices",
      jax.__version__,
      jax.default_backend(),
      jax.process_index(),
      jax.process_count(),
      jax.local_device_count(),
      jax.device_count(),
  )
  config = _CONFIG.value
  stages = tuple(_STAGES.value) if _STAGES.value else tuple(config.stages)
  try:
    pipeline.check_stages(stages)
    config_lib.validate(config, num_devices=jax.device_count())
    pipeline.validate_inputs(config)
  except config_lib.ConfigError as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
  workdir = _WORKDIR.value
  pipeline.save_config(config, workdir)
  try:
    result = pipeline.run(config, workdir, stages)
  except pipeline.MissingInputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(EXIT_MISSING_INPUT)
  except config_lib.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
  if result and jax.process_index() == 0:
    # The stage outputs are in <workdir>/<stage>/done.json; print where.
    for stage in result:
      print(f"{stage:>10s}: {workdir}/{stage}/done.json")
    if "report" in result:
      print(f"report: {workdir}/report/report.md")


if __name__ == "__main__":
  app.run(main)
