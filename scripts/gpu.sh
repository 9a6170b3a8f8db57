#!/usr/bin/env bash
# The engine on an NVIDIA GPU in one command: MLX's CUDA runtime
# (mlx-cuda-13, same MLX version as the CPU one), the addon, the vitest suite
# on the GPU and the GPU benchmark, with logs in bench/results/.
#
#   scripts/gpu.sh               # setup (CUDA runtime), npm test, bench
#   scripts/gpu.sh --no-setup    # the runtime and addon are in place already
#
# Needs an NVIDIA driver for CUDA 13 and what scripts/setup.sh needs (Rust,
# Python, Node, network). The addon is built against MLX's CPU headers and loads
# the CUDA libmlx unchanged; MLX's default device is then the GPU (stats().device).
# Afterwards `scripts/setup.sh` (MLX_SERVING_BACKEND unset) goes back to the CPU runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=$(date -u +%Y-%m-%d-%H-%M)
mkdir -p bench/results
if [[ "${1:-}" != "--no-setup" ]]; then
  # Build on the CPU runtime (mlx-sys compiles against its CMake package, which
  # needs no CUDA toolkit), then put the CUDA runtime beside the addon.
  scripts/setup.sh --test
  MLX_SERVING_BACKEND=cuda scripts/setup.sh --test
fi
log=bench/results/gpu-test-$stamp.log
node scripts/device-check.mjs 2>&1 | tee "$log"
grep -q '^device: cuda' "$log" || { echo "MLX does not see a CUDA GPU (see $log)" >&2; exit 1; }
# package.spec.ts installs the packed tarballs from npm's registry; it runs
# with plain `npm test`.
npx vitest run --exclude __test__/package.spec.ts 2>&1 | tee -a "$log"
python=$(command -v python3)
if "$python" -c 'import mlx_lm' 2>/dev/null; then export MLX_LM_PYTHON=$python; fi
"$python" scripts/random_mlx_model.py bench/.work/llama-3.2-1b-random --shape llama-3.2-1b --tokenizer models/SmolLM2-135M-Instruct-mlx-4bit
node bench/gpu.mjs bench/.work/llama-3.2-1b-random=bench/.work/llama-3.2-1b-random 2>&1 | tee bench/results/gpu-bench-$stamp.log
