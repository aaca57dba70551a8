#!/usr/bin/env bash
# Lowers and compiles CONFIG's steps for the slice's accelerator type with
# XLA:TPU on worker 0 without running them (python -m demix_jax.aot
# --topology=$ACCELERATOR_TYPE: the same command works on any machine with
# requirements-tpu.txt installed) and prints the memory each device needs.
# Run it after setup.sh and before run.sh, while the TPU is free.
#
# Usage: [TPU_ENV=launch/tpu.env] launch/compile_check.sh [--dry-run] [ARGS...]
#   ARGS go to demix_jax.aot.

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common_args "$@"
load_env
: "${CONFIG:?set CONFIG (e.g. configs/qwen3_1p7b.py) in $TPU_ENV}"

tpu_ssh 0 "cd $(quote_word "$REPO_DIR") && .venv/bin/python -m demix_jax.aot \
$(quote_words --config="$CONFIG" --topology="$ACCELERATOR_TYPE" "${EXTRA_ARGS[@]}")"
