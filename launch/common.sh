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
#   tpu_ssh WORKER CMD      `gcloud compute tpus tpu-vm ssh` on WORKER (N|all),
#                           with SSH_FLAGS; for all workers of a multi-host
#                           slice it first checks the ssh agent.
#   tpu_scp SRC DEST        `gcloud compute tpus tpu-vm scp` to all workers.
#   split_words NAME TEXT   TEXT split into the array NAME like shell words
#                           (quotes kept together, nothing expanded).
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

  # Extra flags of every ssh and scp: --internal-ip (VMs made with
  # create.sh --internal-ips, reached from inside the VPC) or
  # --tunnel-through-iap (through Identity-Aware Proxy; gcloud has it in
  # its alpha track only, so those commands use `gcloud alpha`).
  split_words SSH_EXTRA "${SSH_FLAGS:-}" || die "SSH_FLAGS in $TPU_ENV: $SPLIT_ERROR"
  GCLOUD_SSH=(gcloud compute tpus tpu-vm)
  local flag
  for flag in "${SSH_EXTRA[@]}"; do
    case $flag in
      --internal-ip) ;;
      --tunnel-through-iap) GCLOUD_SSH=(gcloud alpha compute tpus tpu-vm) ;;
      --ssh-flag=* | --ssh-key-file=* | --strict-host-key-checking=*) ;;
      *) die "SSH_FLAGS: '$flag' is not supported (in $TPU_ENV); use --internal-ip, --tunnel-through-iap, --ssh-key-file=PATH, --strict-host-key-checking=no" ;;
    esac
  done
}

# split_words NAME TEXT: shell-like words of TEXT into array NAME, by
# xargs's rules (single and double quotes, backslashes), so
#   LIBTPU_INIT_ARGS='--a=true --b=true' B=1
# gives two words. Nothing is expanded. On an unmatched quote returns 1
# with SPLIT_ERROR set.
split_words() {
  local -n _out=$1
  local text=$2 err
  _out=()
  [[ -n ${text//[[:space:]]/} ]] || return 0
  if ! err=$(printf '%s' "$text" | xargs printf '%s\0' 2>&1 >/dev/null); then
    SPLIT_ERROR="cannot split '$text': ${err#xargs: }"
    return 1
  fi
  mapfile -d '' _out < <(printf '%s' "$text" | xargs printf '%s\0')
}

# Hosts of ACCELERATOR_TYPE: 1 for slices of up to 8 chips' worth of N
# (v4-8, v5p-8, v5litepod-8, v6e-8 and smaller), else more than 1.
single_host() {
  [[ ${ACCELERATOR_TYPE:-} =~ ^(v4|v5p|v5litepod|v6e)-([0-9]+)$ ]] \
    && ((BASH_REMATCH[2] <= 8))
}

# gcloud runs ssh to all workers of a multi-host slice in parallel and
# cannot ask for a key's passphrase: the key must be in an ssh agent.
check_ssh_agent() {
  [[ $DRY_RUN == false ]] || return 0
  single_host && return 0
  local rc=0
  ssh-add -l >/dev/null 2>&1 || rc=$?
  case $rc in
    0) ;;
    1) die "ssh to all workers of $ACCELERATOR_TYPE needs your key in the ssh agent, which holds none. Fix: ssh-add ~/.ssh/google_compute_engine" ;;
    *) die "ssh to all workers of $ACCELERATOR_TYPE needs an ssh agent holding your key; none is running. Fix: eval \"\$(ssh-agent -s)\" && ssh-add ~/.ssh/google_compute_engine" ;;
  esac
}

tpu_ssh() {
  local worker=$1 command=$2
  if [[ $worker == all ]]; then
    check_ssh_agent
  fi
  run_cmd "${GCLOUD_SSH[@]}" ssh "$TPU_NAME" "${GCLOUD_FLAGS[@]}" \
    "${SSH_EXTRA[@]}" --worker="$worker" --command="$command"
}

tpu_scp() {
  local src=$1 dest=$2
  check_ssh_agent
  run_cmd "${GCLOUD_SSH[@]}" scp "$src" "$TPU_NAME:$dest" "${GCLOUD_FLAGS[@]}" \
    "${SSH_EXTRA[@]}" --worker=all
}

# The stale-run pattern of remote_run.sh, for pgrep on the workers ("[d]"
# keeps it from matching the command line that contains it).
# shellcheck disable=SC2034  # used by the scripts that source this file
LIVE_RUN_PATTERN='[d]emix_jax[.](main|aot)'

# The jax==X pin of requirements.txt (the one jax[tpu] must match).
requirements_jax_pin() {
  sed -n 's/^jax==\([^[:space:]#]*\).*/\1/p' "$REPO_ROOT/requirements.txt"
}
