#!/usr/bin/env bash
# Deletes the TPU VM named in the env file or, with QUEUED=true, its queued
# resource (--force also deletes the VM it created). gcloud asks to confirm.
#
# Usage: [TPU_ENV=launch/tpu.env] launch/delete.sh [--dry-run] [gcloud flags...]
# Extra flags go to gcloud as they are (e.g. --quiet to skip the prompt).

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common_args "$@"
load_env

if [[ $QUEUED == true ]]; then
  run_cmd gcloud compute tpus queued-resources delete "$QUEUED_RESOURCE_ID" \
    "${GCLOUD_FLAGS[@]}" --force "${EXTRA_ARGS[@]}"
else
  run_cmd gcloud compute tpus tpu-vm delete "$TPU_NAME" "${GCLOUD_FLAGS[@]}" \
    "${EXTRA_ARGS[@]}"
fi
