"""The shared test kit: the repository root, tiny models, the CLI runner
and the trained runlocal pipeline that tests share.

`tests/conftest.py` turns these into fixtures (`cli`, `runlocal_run`);
test modules import the constants and helpers from here.
"""

from tests.kit.cli import HANG_GUARD_S
from tests.kit.cli import assert_ok
from tests.kit.cli import cli_env
from tests.kit.cli import outcome
from tests.kit.cli import run_cli
from tests.kit.paths import ROOT
from tests.kit.paths import tiny_model
from tests.kit.runs import TrainedRun
from tests.kit.runs import copy_run
from tests.kit.runs import train_runlocal

__all__ = [
    "HANG_GUARD_S",
    "ROOT",
    "TrainedRun",
    "assert_ok",
    "cli_env",
    "copy_run",
    "outcome",
    "run_cli",
    "tiny_model",
    "train_runlocal",
]
