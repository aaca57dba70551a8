#!/usr/bin/env bash
# Runs on each worker, in the repo directory (launch/setup.sh starts it over
# ssh). Installs with apt what a fresh TPU VM lacks (PYTHON with a venv
# module that can create a venv, bubblewrap), creates .venv if missing and
# installs the pinned set plus jax[tpu]; a stamp of the inputs in
# .venv/.demix_setup makes a repeated run a no-op.
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
# apt waits for the lock that unattended upgrades often hold on a fresh VM.
apt_get() {
  sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"
}

# A real venv in a temporary directory: `-m venv --help` works without
# $python-venv (ensurepip), creating one does not.
venv_works() {
  command -v "$python" >/dev/null || return 1
  local tmp ok=0
  tmp=$(mktemp -d)
  "$python" -m venv "$tmp/venv" >/dev/null 2>&1 || ok=1
  rm -rf "$tmp"
  return $ok
}

# bwrap: the kernel sandbox of pass@k's model-written programs.
packages=()
if ! venv_works; then
  packages+=("$python" "$python-venv")
fi
if ! command -v bwrap >/dev/null; then
  packages+=(bubblewrap)
fi
if ((${#packages[@]})); then
  echo "$host: installing ${packages[*]} with apt" >&2
  apt_get update -qq
  apt_get install -y -qq "${packages[@]}"
fi
if [[ ! -x .venv/bin/python ]]; then
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
