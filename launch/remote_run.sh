#!/usr/bin/env bash
# Runs on each worker, in the repo directory (launch/run.sh starts it over
# ssh). Stops stale runs, then starts `.venv/bin/python -m demix_jax.main
# ARGS` detached under nohup and returns.
#
# Stale runs: every process that holds an accelerator device (/dev/accel*,
# /dev/vfio/N; found with lsof, whoever owns it, with sudo when not root),
# and this user's demix_jax.main / demix_jax.aot processes; then libtpu's
# lock file is removed (with sudo when not root). A lock that cannot be
# removed is reported and the run starts anyway: libtpu names it if it
# matters.
#
# Logs: ~/demix_logs/run.$(hostname).attempt-N.log (N from DEMIX_ATTEMPT,
# default 1; launch/babysit.sh counts them), with run.$(hostname).log a
# link to the newest. run.pid holds the run's pid and run.exit its exit
# status once it ends (launch/remote_status.sh reads both).
#
# Usage: bash launch/remote_run.sh ARGS...
# Environment (for tests): DEMIX_PYTHON (default .venv/bin/python),
# DEMIX_STALE_PATTERN (pkill -f regex), LIBTPU_LOCKFILE,
# DEMIX_ACCEL_DEVICES (space-separated device paths).

set -euo pipefail
python="${DEMIX_PYTHON:-.venv/bin/python}"
# "[d]" keeps the pattern from matching a command line that contains it.
pattern="${DEMIX_STALE_PATTERN:-[d]emix_jax\.(main|aot)}"
lockfile="${LIBTPU_LOCKFILE:-/tmp/libtpu_lockfile}"
attempt="${DEMIX_ATTEMPT:-1}"
host=$(hostname)
log_dir="$HOME/demix_logs"
log="$log_dir/run.$host.attempt-$attempt.log"

if [[ ! -x $python ]]; then
  echo "$host: $python not found in $PWD; run launch/setup.sh first" >&2
  exit 1
fi
[[ $attempt =~ ^[0-9]+$ ]] || {
  echo "$host: DEMIX_ATTEMPT must be a number, not '$attempt'" >&2
  exit 2
}

# Root needs no sudo; elsewhere sudo -n (never a password prompt over ssh).
as_root=()
if [[ $(id -u) != 0 ]] && command -v sudo >/dev/null; then
  as_root=(sudo -n)
fi

if [[ -n ${DEMIX_ACCEL_DEVICES+x} ]]; then
  read -r -a devices <<<"$DEMIX_ACCEL_DEVICES"
else
  devices=()
  for d in /dev/accel* /dev/vfio/[0-9]*; do
    [[ -e $d ]] && devices+=("$d")
  done
fi

# Pids (one a line) holding one of the accelerator devices, this shell's
# own ancestors excluded.
device_holders() {
  ((${#devices[@]})) || return 0
  local pids
  if command -v lsof >/dev/null; then
    pids=$("${as_root[@]}" lsof -t -w -- "${devices[@]}" 2>/dev/null || true)
  else
    pids=$("${as_root[@]}" fuser "${devices[@]}" 2>/dev/null || true)
  fi
  for pid in $pids; do
    [[ $pid == "$$" || $pid == "$PPID" ]] || echo "$pid"
  done | sort -u
}

stop_pids() {
  local signal=$1
  shift
  (($#)) || return 0
  kill "-$signal" "$@" 2>/dev/null \
    || "${as_root[@]}" kill "-$signal" "$@" 2>/dev/null || true
}

me=$(id -u)
holders=$(device_holders)
stale=$(pgrep -u "$me" -f "$pattern" || true)
if [[ -n $holders || -n $stale ]]; then
  for pid in $holders; do
    echo "$host: stopping pid $pid, which holds the accelerator:" \
      "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || echo '?')" >&2
  done
  [[ -z $stale ]] || echo "$host: stopping a stale run: ${stale//$'\n'/ }" >&2
  # shellcheck disable=SC2086  # word splitting of the pid lists is wanted
  stop_pids TERM $holders $stale
  for _ in $(seq 30); do
    holders=$(device_holders)
    stale=$(pgrep -u "$me" -f "$pattern" || true)
    [[ -n $holders || -n $stale ]] || break
    sleep 1
  done
  # shellcheck disable=SC2086
  stop_pids KILL $holders $stale
  sleep 1
fi

# libtpu leaves its lock file behind when killed; nothing holds it now.
if [[ -e $lockfile ]]; then
  rm -f "$lockfile" 2>/dev/null || "${as_root[@]}" rm -f "$lockfile" \
    2>/dev/null || true
  if [[ -e $lockfile ]]; then
    echo "$host: warning: cannot remove $lockfile (owner:" \
      "$(stat -c %U "$lockfile" 2>/dev/null || echo '?'));" \
      "if libtpu reports the TPU in use, remove it as root" >&2
  fi
fi

mkdir -p "$log_dir"
rm -f "$log_dir/run.pid" "$log_dir/run.exit"
ln -sfn "$(basename "$log")" "$log_dir/run.$host.log"
# The wrapper records the exit status where remote_status.sh looks for it.
# shellcheck disable=SC2016  # expanded by the wrapper, not here
LOG="$log" EXIT_FILE="$log_dir/run.exit" nohup bash -c \
  '"$@" >"$LOG" 2>&1; echo $? >"$EXIT_FILE"' demix_run \
  "$python" -m demix_jax.main "$@" </dev/null >/dev/null 2>&1 &
echo $! >"$log_dir/run.pid"
echo "$host: started pid $!, attempt $attempt, log $log"
