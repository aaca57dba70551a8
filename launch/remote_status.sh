#!/usr/bin/env bash
# Runs on each worker (launch/babysit.sh asks over ssh): prints one line,
#   demix-status HOST STATE
# where STATE is `running`, `exited:N` (the run ended with status N),
# `killed` (it died without a status: killed, or the VM restarted) or `none`
# (no run was started on this VM). Reads what launch/remote_run.sh wrote in
# ~/demix_logs (run.pid, run.exit).
#
# Usage: bash launch/remote_status.sh

set -euo pipefail
log_dir="$HOME/demix_logs"
state=none
if [[ -f $log_dir/run.pid ]]; then
  pid=$(<"$log_dir/run.pid")
  if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
    state=running
  elif [[ -f $log_dir/run.exit ]]; then
    state="exited:$(<"$log_dir/run.exit")"
  else
    state=killed
  fi
fi
echo "demix-status $(hostname) $state"
