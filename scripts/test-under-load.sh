#!/usr/bin/env bash
# Runs the whole test suite (`npm test`, any arguments passed on) while two
# busy processes keep every core loaded, as on a shared CI machine: the suite
# must pass there too. Needs stress-ng (installed from Debian if missing).
#
#   npm run test:loaded
#   LOAD_WORKERS=4 npm run test:loaded -- __test__/timeout.spec.ts
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v stress-ng >/dev/null; then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq stress-ng >/dev/null
fi

# Build first, unloaded (a build is not what this proves), then load the machine.
scripts/setup.sh --test

workers=${LOAD_WORKERS:-$(nproc)}
stress-ng --cpu "$workers" --cpu-method matrixprod --quiet &
load=$!
trap 'kill $load 2>/dev/null; wait $load 2>/dev/null || true' EXIT
echo "[test-under-load] $workers busy processes on $(nproc) cores (stress-ng pid $load)" >&2

started=$(date +%s)
scripts/test.sh "$@"
echo "[test-under-load] passed under load in $(( $(date +%s) - started )) s" >&2
