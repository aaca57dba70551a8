#!/usr/bin/env bash
# Runs on each worker, in the repo directory (launch/setup.sh starts it over
# ssh). Creates .venv if missing and installs the pinned set plus jax[tpu];
# a stamp of the inputs in .venv/.demix_setup makes a repeated run a no-op.
#
# Usage: bash launch/remote_setup.sh PYTHON JAX_TPU_REQ FIND_LINKS [fresh|keep]
#   e.g. bash launch/remote_setup.sh python3.11 'jax[tpu]==0.10.2' URL keep

set -euo pipefail
if (($# < 3)); then
  sed -n '2,/^[^#]/{/^#/!q;s/^# \{0,1\}//;p}' "$0" >&2
  exit 2
fi
python=$1 jax_req=$2 find_links=$3 mode=${4:-keep}
host=$(hostname)
stamp_file=.venv/.demix_setup

if [[ $mode == fresh ]]; then
  rm -rf .venv
fi
if [[ ! -x .venv/bin/python ]]; then
  if ! command -v "$python" >/dev/null || ! "$python" -m venv --help >/dev/null 2>&1; then
    echo "$host: installing $python and its venv module" >&2
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$python" "$python-venv"
  fi
  "$python" -m venv .venv
fi

# Everything that decides what gets installed.
stamp="$(cat requirements*.txt pyproject.toml | sha256sum | cut -d' ' -f1) $jax_req"
if [[ -f $stamp_file && $(cat "$stamp_file") == "$stamp" ]]; then
  echo "$host: .venv is up to date"
  exit 0
fi
rm -f "$stamp_file"
pip=(.venv/bin/python -m pip install --quiet)
"${pip[@]}" --upgrade pip
"${pip[@]}" -r requirements.txt
if [[ -f requirements-nodeps.txt ]]; then
  "${pip[@]}" --no-deps -r requirements-nodeps.txt
fi
# Not in requirements.txt: jax[tpu] exists for TPU hosts only. Same version
# as the pinned jax, so pip adds libtpu and changes nothing else.
"${pip[@]}" "$jax_req" -f "$find_links"
"${pip[@]}" --no-deps -e .
.venv/bin/python -c "import jax, libtpu; print('$host: jax', jax.__version__)"
echo "$stamp" >"$stamp_file"
