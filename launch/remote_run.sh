#!/usr/bin/env bash
# Runs on each worker, in the repo directory (launch/run.sh starts it over
# ssh). Stops stale runs of demix_jax.main / demix_jax.aot by this user, then
# starts `.venv/bin/python -m demix_jax.main ARGS` detached under nohup, with
# its output in ~/demix_logs/run.$(hostname).log, and returns.
#
# Usage: bash launch/remote_run.sh ARGS...
# Environment (for tests): DEMIX_PYTHON (default .venv/bin/python),
# DEMIX_STALE_PATTERN (pkill -f regex), LIBTPU_LOCKFILE.

set -euo pipefail
python="${DEMIX_PYTHON:-.venv/bin/python}"
# "[d]" keeps the pattern from matching a command line that contains it.
pattern="${DEMIX_STALE_PATTERN:-[d]emix_jax\.(main|aot)}"
lockfile="${LIBTPU_LOCKFILE:-/tmp/libtpu_lockfile}"
host=$(hostname)
log_dir="$HOME/demix_logs"
log="$log_dir/run.$host.log"

if [[ ! -x $python ]]; then
  echo "$host: $python not found in $PWD; run launch/setup.sh first" >&2
  exit 1
fi

me=$(id -u)
if pkill -u "$me" -f "$pattern"; then
  echo "$host: stopping a stale run" >&2
  for _ in $(seq 30); do
    pgrep -u "$me" -f "$pattern" >/dev/null || break
    sleep 1
  done
  pkill -9 -u "$me" -f "$pattern" || true
  sleep 1
fi
# libtpu leaves its lock file behind when killed; nothing holds it now.
rm -f "$lockfile"

mkdir -p "$log_dir"
nohup "$python" -m demix_jax.main "$@" >"$log" 2>&1 </dev/null &
echo "$host: started pid $!, log $log"
