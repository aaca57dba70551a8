#!/usr/bin/env bash
# Supervises a run until it finishes: notices a dead or preempted run and
# brings it back, resuming from the last checkpoint in WORKDIR (the pipeline
# resumes by itself when rerun with the same WORKDIR, so WORKDIR must be on
# gs:// to outlive the VM).
#
# Every --poll seconds it asks gcloud for the slice's state (`tpu-vm
# describe`, or `queued-resources describe` with QUEUED=true) and, while the
# slice is up, every worker for the run's state (launch/remote_status.sh):
#   slice missing/preempted/terminated (queued: suspended/failed)
#       -> delete.sh, create.sh (again after a failed create), then once up:
#          sync.sh, setup.sh, run.sh (a new attempt)
#   slice up, run dead on any worker (exit status != 0, killed, none)
#       -> run.sh (a new attempt; it stops what is left of the old one;
#          sync.sh and setup.sh too when this babysitter did not start it)
#   slice up, run exited 0 on every worker -> done (exit 0)
#   slice creating/provisioning/waiting for capacity -> wait
# Each attempt's worker logs (run.HOST.attempt-N.log) are copied at every
# poll to LOG_DIR/attempt-N/ here, so a preempted VM loses at most one poll
# of log. After --max-attempts failures (failed creates, preemptions, dead
# runs) it gives up with exit 1.
#
# Usage: [TPU_ENV=launch/tpu.env] launch/babysit.sh [--dry-run]
#          [--max-attempts=N] [--poll=SECONDS] [--log-dir=DIR] [-- RUN_ARGS]
#   --max-attempts  failures tolerated (default 5)
#   --poll          seconds between looks (default 300)
#   --log-dir       default ~/demix_logs/TPU_NAME
#   RUN_ARGS go to run.sh (and so to demix_jax.main) on every attempt.
#   --dry-run prints the commands of one look and of one recovery.

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common_args "$@"
load_env
max_failures=5 poll=300 log_dir="" run_args=()
for arg in "${EXTRA_ARGS[@]}"; do
  case $arg in
    --max-attempts=*) max_failures=${arg#*=} ;;
    --poll=*) poll=${arg#*=} ;;
    --log-dir=*) log_dir=${arg#*=} ;;
    *) run_args+=("$arg") ;;
  esac
done
[[ $max_failures =~ ^[0-9]+$ ]] || die "--max-attempts wants a number, not '$max_failures'"
[[ $poll =~ ^[0-9]+$ ]] || die "--poll wants seconds, not '$poll'"
log_dir=${log_dir:-$HOME/demix_logs/$TPU_NAME}
: "${CONFIG:?set CONFIG in $TPU_ENV}"
: "${WORKDIR:?set WORKDIR in $TPU_ENV}"
if [[ $WORKDIR != gs://* ]]; then
  echo "warning: WORKDIR=$WORKDIR is not on GCS: a recreated slice starts" \
    "from scratch." >&2
fi
export TPU_ENV

say() { echo "[babysit $(date -u +%H:%M:%S)] $*" >&2; }

dry=()
if [[ $DRY_RUN == true ]]; then
  dry=(--dry-run)
fi
launch() {
  local script=$1
  shift
  "$LAUNCH_DIR/$script.sh" "${dry[@]}" "$@"
}

describe_slice() {
  if [[ $QUEUED == true ]]; then
    run_cmd gcloud compute tpus queued-resources describe \
      "$QUEUED_RESOURCE_ID" "${GCLOUD_FLAGS[@]}" --format='value(state.state)'
  else
    run_cmd gcloud compute tpus tpu-vm describe "$TPU_NAME" \
      "${GCLOUD_FLAGS[@]}" --format='value(state)'
  fi
}

# The slice's state word (READY, ACTIVE, PREEMPTED, ...), MISSING when
# gcloud says it does not exist, UNKNOWN when gcloud fails otherwise.
slice_state() {
  local out err rc=0
  err=$(mktemp)
  out=$(describe_slice 2>"$err") || rc=$?
  if ((rc == 0)); then
    # The last line: gcloud may print warnings first.
    out=$(tail -n 1 <<<"$out" | tr -d '[:space:]')
    echo "${out:-UNKNOWN}"
  elif grep -q 'NOT_FOUND\|not found' "$err"; then
    echo MISSING
  else
    say "describe failed: $(grep -v '^+ ' "$err" | tr '\n' ' ')"
    echo UNKNOWN
  fi
  rm -f "$err"
}

classify() {
  case $1 in
    READY | ACTIVE) echo up ;;
    MISSING | PREEMPTED | TERMINATED | STOPPED | SUSPENDED | SUSPENDING \
      | FAILED) echo gone ;;
    UNKNOWN) echo unknown ;;
    *) echo pending ;; # CREATING, PROVISIONING, WAITING_FOR_RESOURCES, ...
  esac
}

# A fresh VM has no code yet: it reports `none` then.
status_on_workers() {
  local repo
  repo=$(quote_word "$REPO_DIR")
  tpu_ssh all "if [ -f $repo/launch/remote_status.sh ]; then bash \
$repo/launch/remote_status.sh; else echo demix-status \$(hostname) none; fi"
}

# finished | running | dead | unknown, from remote_status.sh on all workers.
run_state() {
  local out rc=0 line states=() s
  out=$(status_on_workers 2>/dev/null) || rc=$?
  while read -r line; do
    [[ $line == "demix-status "* ]] && states+=("${line##* }")
  done <<<"$out"
  if ((rc != 0 || ${#states[@]} == 0)); then
    echo unknown
    return
  fi
  local result=finished
  for s in "${states[@]}"; do
    case $s in
      exited:0) ;;
      running) [[ $result == dead ]] || result=running ;;
      *) result=dead ;;
    esac
  done
  echo "$result"
}

fetch_logs() {
  local n=$1
  [[ $DRY_RUN == true ]] || mkdir -p "$log_dir/attempt-$n"
  # A worker that has no log yet, or a slice just lost, is not an error.
  # shellcheck disable=SC2088  # expanded on the workers
  run_cmd "${GCLOUD_SSH[@]}" scp \
    "$TPU_NAME:~/demix_logs/run.*.attempt-$n.log" "$log_dir/attempt-$n/" \
    "${GCLOUD_FLAGS[@]}" "${SSH_EXTRA[@]}" --worker=all || true
}

attempt=0 failures=0 started=false unknown=0

failed() {
  failures=$((failures + 1))
  say "failure $failures of $max_failures tolerated: $*"
  if ((failures > max_failures)); then
    say "giving up after $failures failures; logs in $log_dir"
    exit 1
  fi
}

# start_run [rerun]: sync, setup and run (a new or recreated slice), or
# with `rerun` only run.sh (the code is there; a hung process of the dead
# run would make sync.sh refuse, and run.sh stops it).
start_run() {
  attempt=$((attempt + 1))
  if [[ ${1:-} == rerun ]]; then
    say "attempt $attempt: run"
  else
    say "attempt $attempt: sync, setup, run"
    if ! launch sync || ! launch setup; then
      failed "attempt $attempt did not start"
      return 1
    fi
  fi
  if DEMIX_ATTEMPT=$attempt launch run -- "${run_args[@]}"; then
    started=true
    return 0
  fi
  failed "attempt $attempt did not start"
  return 1
}

if [[ $DRY_RUN == true ]]; then
  echo "# one look:" >&2
  describe_slice
  status_on_workers
  fetch_logs 1
  echo "# one recovery:" >&2
  launch delete --quiet
  launch create
  start_run
  exit 0
fi

check_ssh_agent
mkdir -p "$log_dir"
say "watching $TPU_NAME (every ${poll}s; logs in $log_dir)"
while true; do
  state=$(slice_state)
  case $(classify "$state") in
    up)
      run=$(run_state)
      [[ $run == unknown ]] || unknown=0
      if [[ $started == true ]]; then
        fetch_logs "$attempt" >/dev/null 2>&1
      fi
      case $run in
        finished)
          say "the run finished on every worker (attempt $attempt)"
          exit 0
          ;;
        running)
          if [[ $started == false ]]; then
            attempt=$((attempt + 1)) started=true
            say "a run is live: watching it as attempt $attempt"
          fi
          ;;
        dead)
          if [[ $started == true ]]; then
            failed "the run died (attempt $attempt)"
            start_run rerun || true
          else
            start_run || true
          fi
          ;;
        unknown)
          unknown=$((unknown + 1))
          say "cannot reach the workers ($unknown in a row); looking again"
          if ((unknown % 3 == 0)); then
            failed "the workers cannot be reached"
          fi
          ;;
      esac
      ;;
    gone)
      if [[ $state != MISSING ]]; then
        failed "the slice is $state"
        launch delete --quiet || say "delete failed; creating anyway"
      fi
      started=false
      if launch create; then
        say "created; waiting for it to be up"
      else
        failed "create failed"
      fi
      ;;
    pending) say "slice is $state; waiting" ;;
    unknown) say "slice state unknown; looking again" ;;
  esac
  sleep "$poll"
done
