#!/usr/bin/env bash
# The device check: one script for a machine with one accelerator (at most
# 8 minutes). Prints progress lines, then one JSON line (the last).
#
#   bench/device_check.sh          # on the accelerator, 1.7B shapes
#   bench/device_check.sh --dry    # CPU, tiny shapes (what CI tests)
#
# Python: $PYTHON if set, else .venv's (make demo / make test create it),
# else python3 from PATH. Extra arguments go to bench/device_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
# Quiet TensorFlow's C++ logging (it is not used here).
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
exec timeout --signal=TERM --kill-after=20 480 "$PY" bench/device_check.py "$@"
