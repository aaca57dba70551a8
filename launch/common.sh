# shellcheck shell=bash
# Shared by every launch/*.sh script; sourced, never run.
#
# Provides:
#   parse_common_args "$@"  sets DRY_RUN and EXTRA_ARGS (--dry-run and -h are
#                           taken anywhere before a literal "--"; everything
#                           else is kept, in order, for the calling script).
#   load_env                sources $TPU_ENV (default launch/tpu.env) and checks
#                           the variables every script needs.
#   run_cmd CMD...          runs CMD, or with --dry-run prints it (one line,
#                           shell-quoted so it can be pasted) and runs nothing.
#   tpu_ssh WORKER CMD      `gcloud compute tpus tpu-vm ssh` on WORKER (N|all).
#   quote_words ARG...      ARGs joined by spaces, each quoted for a POSIX shell.

set -euo pipefail

LAUNCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$LAUNCH_DIR")"

DRY_RUN=false
EXTRA_ARGS=()

die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 1
}

# Prints the comment block at the top of the calling script.
usage() {
  sed -n '2,/^[^#]/{/^#/!q;s/^# \{0,1\}//;p}' "$0"
}

parse_common_args() {
  local parsing=true
  EXTRA_ARGS=()
  for arg in "$@"; do
    if [[ $parsing == true ]]; then
      case $arg in
        --dry-run) DRY_RUN=true; continue ;;
        -h | --help) usage; exit 0 ;;
        --) parsing=false; continue ;;
      esac
    fi
    EXTRA_ARGS+=("$arg")
  done
}

# Quotes one word for a POSIX shell: plain words stay as they are.
quote_word() {
  local s=$1
  if [[ $s =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//\'/\'\\\'\'}"
  fi
}

quote_words() {
  local out=() w
  for w in "$@"; do
    out+=("$(quote_word "$w")")
  done
  printf '%s' "${out[*]}"
}

run_cmd() {
  if [[ $DRY_RUN == true ]]; then
    printf '%s\n' "$(quote_words "$@")"
  else
    printf '+ %s\n' "$(quote_words "$@")" >&2
    "$@"
  fi
}

check_bool() {
  local name=$1
  case ${!name} in
    true | false) ;;
    *) die "$name must be true or false, not '${!name}' (in $TPU_ENV)" ;;
  esac
}

load_env() {
  TPU_ENV="${TPU_ENV:-$LAUNCH_DIR/tpu.env}"
  [[ -f $TPU_ENV ]] \
    || die "env file $TPU_ENV not found: cp launch/tpu.env.example launch/tpu.env, edit it, or set TPU_ENV=path"
  # shellcheck source=/dev/null
  source "$TPU_ENV"

  : "${TPU_NAME:?set TPU_NAME (the TPU VM name) in $TPU_ENV}"
  : "${ZONE:?set ZONE (e.g. us-central2-b) in $TPU_ENV}"
  PROJECT="${PROJECT:-}"
  SPOT="${SPOT:-false}"
  QUEUED="${QUEUED:-false}"
  check_bool SPOT
  check_bool QUEUED
  QUEUED_RESOURCE_ID="${QUEUED_RESOURCE_ID:-$TPU_NAME}"
  # Relative to the home directory on every worker (ssh starts there).
  REPO_DIR="${REPO_DIR:-demix_jax}"
  REPO_DIR="${REPO_DIR#\~/}"

  GCLOUD_FLAGS=(--zone="$ZONE")
  if [[ -n $PROJECT ]]; then
    GCLOUD_FLAGS+=(--project="$PROJECT")
  fi
}

tpu_ssh() {
  local worker=$1 command=$2
  run_cmd gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_FLAGS[@]}" \
    --worker="$worker" --command="$command"
}

# The jax==X pin of requirements.txt (the one jax[tpu] must match).
requirements_jax_pin() {
  sed -n 's/^jax==\([^[:space:]#]*\).*/\1/p' "$REPO_ROOT/requirements.txt"
}
