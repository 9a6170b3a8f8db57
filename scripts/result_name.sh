#!/usr/bin/env bash
# The path of a result file: bench/results/<device>-<date>-<build>-<what>, e.g.
# bench/results/h200-2026-11-27-e931603-tests.log. <device> is DEVICE when given
# (cpu, h100, ...), else the first NVIDIA GPU's model, else cpu; <date> is UTC;
# <build> is the checked-out commit, with -dirty when tracked files differ from it.
#
#   scripts/result_name.sh WHAT [DEVICE]     # WHAT: e.g. bench.md, tests.log
#   scripts/result_name.sh --build           # <build> alone
set -euo pipefail
cd "$(dirname "$0")/.."
build=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ $build != unknown ]] && ! git diff --quiet HEAD -- 2>/dev/null; then build+=-dirty; fi
what=${1:?usage: scripts/result_name.sh WHAT [DEVICE] | --build}
[[ $what == --build ]] && { echo "$build"; exit 0; }
device=${2:-}
if [[ -z $device ]]; then
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 || true)
  # "NVIDIA H200" -> h200, "NVIDIA H100 80GB HBM3" -> h100
  if [[ -n $gpu ]]; then device=$(echo "$gpu" | sed 's/^NVIDIA //' | awk '{print tolower($1)}'); else device=cpu; fi
fi
echo "bench/results/$device-$(date -u +%F)-$build-$what"
