#!/usr/bin/env bash
# Copies the code to every worker: packs demix_jax/, configs/, launch/, the
# requirements files, pyproject.toml and README.md into one tarball, copies it
# to all workers and unpacks it into REPO_DIR there. The code directories are
# replaced (files deleted here disappear there); REPO_DIR/.venv is kept.
#
# It refuses while a run is live on any worker (the run imports from the
# code it would replace): stop it first, or pass --force.
#
# Usage: [TPU_ENV=launch/tpu.env] launch/sync.sh [--dry-run] [--force]

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common_args "$@"
load_env
force=false
for arg in "${EXTRA_ARGS[@]}"; do
  case $arg in
    --force) force=true ;;
    *) die "unexpected argument: $arg (want --force or --dry-run)" ;;
  esac
done

if [[ $force == false ]]; then
  # Fails on a worker where a run is live, and so the whole ssh.
  if ! tpu_ssh all "! pgrep -af $(quote_word "$LIVE_RUN_PATTERN")"; then
    die "a run is live on a worker (listed above), or the workers cannot be reached: stop the run first (launch/run.sh restarts it; or ssh --command=\"pkill -f '$LIVE_RUN_PATTERN'\") or pass --force"
  fi
fi

# What the workers need: the package, configs, these scripts (setup.sh and
# run.sh call launch/remote_*.sh there) and what `pip install` reads.
code=(demix_jax configs launch pyproject.toml README.md)
for f in "$REPO_ROOT"/requirements*.txt; do
  code+=("$(basename "$f")")
done

remote_tar=demix_jax_code.tar.gz
tarball="${TMPDIR:-/tmp}/demix_jax_code.$$.tar.gz"
if [[ $DRY_RUN == false ]]; then
  trap 'rm -f "$tarball"' EXIT
fi
run_cmd tar -czf "$tarball" -C "$REPO_ROOT" --exclude=__pycache__ \
  --exclude='*.pyc' --exclude='launch/*.env' "${code[@]}"
tpu_scp "$tarball" "$remote_tar"
repo=$(quote_word "$REPO_DIR")
tpu_ssh all "mkdir -p $repo && cd $repo && rm -rf $(quote_words "${code[@]}") \
&& tar -xzf ~/$remote_tar && rm -f ~/$remote_tar"
