#!/usr/bin/env bash
# Copies the OpenBLAS the addon links (and the Fortran runtime it needs beyond
# glibc) into DIR, under their sonames, for a runtime/lib/ beside the addon
# (scripts/pack.sh's platform package, scripts/gpu_offline.sh's bundle).
#
#   scripts/openblas_runtime.sh ADDON DIR
set -euo pipefail
addon=${1:?usage: scripts/openblas_runtime.sh ADDON DIR}
dir=${2:?usage: scripts/openblas_runtime.sh ADDON DIR}
resolved() { ldd "$1" | awk -v lib="$2" '$1 == lib { print $3 }'; }
openblas=$(resolved "$addon" libopenblas.so.0)
[[ -n $openblas ]] || { echo "$addon does not link libopenblas.so.0" >&2; exit 1; }
mkdir -p "$dir"
cp -L "$openblas" "$dir/libopenblas.so.0"
for dep in libgfortran.so.5 libquadmath.so.0; do
  file=$(resolved "$openblas" "$dep")
  if [[ -n $file ]]; then cp -L "$file" "$dir/$dep"; fi
done
