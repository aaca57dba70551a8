#!/usr/bin/env bash
# Runs CONFIG on every worker of the slice (run sync.sh and setup.sh first):
#   python -m demix_jax.main --config=$CONFIG --workdir=$WORKDIR --multihost=on ARGS
# Each worker first stops a stale run (whatever holds the accelerator, and
# leftover demix_jax processes; launch/remote_run.sh), then starts the new
# one under nohup, logging to ~/demix_logs/run.HOST.log (a link to the
# attempt's own run.HOST.attempt-N.log). RUN_ENV words (shell quoting, e.g.
# LIBTPU_INIT_ARGS='--a=true --b=true') are set for the run.
# Returns once every worker has started; follow with launch/logs.sh.
#
# Usage: [TPU_ENV=launch/tpu.env] launch/run.sh [--dry-run] [ARGS...]
#   ARGS go to demix_jax.main, e.g. --stages=search,final --config.seed=1
#   (put them after "--" if one of them is itself --dry-run or --help).

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common_args "$@"
load_env
: "${CONFIG:?set CONFIG (e.g. configs/qwen3_1p7b.py) in $TPU_ENV}"
: "${WORKDIR:?set WORKDIR (e.g. gs://BUCKET/demix_jax/NAME) in $TPU_ENV}"
if [[ $WORKDIR != gs://* ]]; then
  echo "warning: WORKDIR=$WORKDIR is not on GCS; every host needs to see the" \
    "same WORKDIR, so this only works on a single-host slice." >&2
fi

# Shell words, so LIBTPU_INIT_ARGS='--a=true --b=true' stays one value.
split_words run_env "${RUN_ENV:-}" || die "RUN_ENV in $TPU_ENV: $SPLIT_ERROR"
for word in "${run_env[@]}"; do
  [[ $word =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] \
    || die "RUN_ENV: '$word' is not NAME=VALUE (in $TPU_ENV); quote values with spaces: RUN_ENV=\"LIBTPU_INIT_ARGS='--a=true --b=true'\""
done
# launch/babysit.sh numbers its attempts (each gets its own log file).
if [[ -n ${DEMIX_ATTEMPT:-} ]]; then
  [[ $DEMIX_ATTEMPT =~ ^[0-9]+$ ]] || die "DEMIX_ATTEMPT must be a number"
  run_env+=("DEMIX_ATTEMPT=$DEMIX_ATTEMPT")
fi
args=(--config="$CONFIG" --workdir="$WORKDIR" --multihost=on "${EXTRA_ARGS[@]}")
envs=""
if ((${#run_env[@]})); then
  envs="env $(quote_words "${run_env[@]}") "
fi
tpu_ssh all "cd $(quote_word "$REPO_DIR") && ${envs}bash launch/remote_run.sh \
$(quote_words "${args[@]}")"
echo "Started on all workers. Logs: launch/logs.sh [WORKER|all]" >&2
