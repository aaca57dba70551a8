#!/usr/bin/env bash
# Shows the run log (~/demix_logs/run.HOST.log) of one worker, or of all
# workers with each line prefixed by its host name. Follows it until Ctrl-C.
#
# Usage: [TPU_ENV=launch/tpu.env] launch/logs.sh [--dry-run] [WORKER|all]
#          [--lines=N] [--no-follow]
#   WORKER defaults to 0; --lines defaults to 100.

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common_args "$@"
load_env
worker=0 lines=100 follow=true
for arg in "${EXTRA_ARGS[@]}"; do
  case $arg in
    all | [0-9] | [1-9][0-9] | [1-9][0-9][0-9]) worker=$arg ;;
    --lines=*) lines=${arg#--lines=} ;;
    --no-follow) follow=false ;;
    *) die "unexpected argument: $arg (want WORKER|all, --lines=N, --no-follow)" ;;
  esac
done
[[ $lines =~ ^[0-9]+$ ]] || die "--lines wants a number, not '$lines'"

# Expanded on the worker, not here.
# shellcheck disable=SC2016,SC2088
log='~/demix_logs/run.$(hostname).log'
command="tail -n $lines"
if [[ $follow == true ]]; then
  command+=" -F"
fi
command+=" $log"
if [[ $worker == all ]]; then
  # shellcheck disable=SC2016
  command+=' | sed -u "s/^/[$(hostname)] /"'
fi
tpu_ssh "$worker" "$command"
