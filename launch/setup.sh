#!/usr/bin/env bash
# Builds the virtualenv REPO_DIR/.venv on every worker (run launch/sync.sh
# first): the pinned requirements, then jax[tpu] at the jax pin of
# requirements.txt, then the package itself (editable). Idempotent: a worker
# whose requirements did not change since its last setup does nothing.
#
# Usage: [TPU_ENV=launch/tpu.env] launch/setup.sh [--dry-run] [--fresh]
#   --fresh  delete and rebuild the virtualenv.

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common_args "$@"
load_env
fresh=keep
for arg in "${EXTRA_ARGS[@]}"; do
  case $arg in
    --fresh) fresh=fresh ;;
    *) die "unexpected argument: $arg" ;;
  esac
done

pin=$(requirements_jax_pin)
[[ -n $pin ]] || die "no jax==VERSION line in $REPO_ROOT/requirements.txt"
: "${JAX_TPU_VERSION:=$pin}"
if [[ $JAX_TPU_VERSION != "$pin" ]]; then
  die "JAX_TPU_VERSION=$JAX_TPU_VERSION in $TPU_ENV, but requirements.txt pins jax==$pin; they must match"
fi
VM_PYTHON="${VM_PYTHON:-python3.11}"
# pip's index of libtpu wheels; jax[tpu] pulls the libtpu that matches it.
find_links="https://storage.googleapis.com/jax-releases/libtpu_releases.html"

tpu_ssh all "cd $(quote_word "$REPO_DIR") && bash launch/remote_setup.sh \
$(quote_words "$VM_PYTHON" "jax[tpu]==$JAX_TPU_VERSION" "$find_links" "$fresh")"
