#!/usr/bin/env bash
# Copies the code to every worker: packs demix_jax/, configs/, launch/, the
# requirements files, pyproject.toml and README.md into one tarball, copies it
# to all workers and unpacks it into REPO_DIR there. The code directories are
# replaced (files deleted here disappear there); REPO_DIR/.venv is kept.
#
# Usage: [TPU_ENV=launch/tpu.env] launch/sync.sh [--dry-run]

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common_args "$@"
load_env
if ((${#EXTRA_ARGS[@]})); then
  die "unexpected arguments: ${EXTRA_ARGS[*]}"
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
  --exclude='*.pyc' --exclude=launch/tpu.env "${code[@]}"
run_cmd gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:$remote_tar" \
  "${GCLOUD_FLAGS[@]}" --worker=all
repo=$(quote_word "$REPO_DIR")
tpu_ssh all "mkdir -p $repo && cd $repo && rm -rf $(quote_words "${code[@]}") \
&& tar -xzf ~/$remote_tar && rm -f ~/$remote_tar"
