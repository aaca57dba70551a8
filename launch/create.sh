#!/usr/bin/env bash
# Creates the TPU VM named in the env file, or, with QUEUED=true, a queued
# resource that creates it once capacity is free (SPOT=true: spot capacity).
#
# Usage: [TPU_ENV=launch/tpu.env] launch/create.sh [--dry-run] [gcloud flags...]
# Extra flags go to gcloud as they are (e.g. --reserved, --description=...).

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common_args "$@"
load_env
: "${ACCELERATOR_TYPE:?set ACCELERATOR_TYPE (e.g. v5litepod-8, v5p-32) in $TPU_ENV}"
: "${RUNTIME_VERSION:?set RUNTIME_VERSION (e.g. v2-alpha-tpuv5-lite) in $TPU_ENV}"

spot=()
if [[ $SPOT == true ]]; then
  spot=(--spot)
fi

if [[ $QUEUED == true ]]; then
  run_cmd gcloud compute tpus queued-resources create "$QUEUED_RESOURCE_ID" \
    --node-id="$TPU_NAME" "${GCLOUD_FLAGS[@]}" \
    --accelerator-type="$ACCELERATOR_TYPE" \
    --runtime-version="$RUNTIME_VERSION" "${spot[@]}" "${EXTRA_ARGS[@]}"
  echo "Queued. The VM exists once this reports ACTIVE:" >&2
  echo "  gcloud compute tpus queued-resources describe $(quote_words \
    "$QUEUED_RESOURCE_ID" "${GCLOUD_FLAGS[@]}") --format='value(state.state)'" >&2
else
  run_cmd gcloud compute tpus tpu-vm create "$TPU_NAME" "${GCLOUD_FLAGS[@]}" \
    --accelerator-type="$ACCELERATOR_TYPE" \
    --version="$RUNTIME_VERSION" "${spot[@]}" "${EXTRA_ARGS[@]}"
fi
echo "Next: launch/sync.sh, then launch/setup.sh." >&2
