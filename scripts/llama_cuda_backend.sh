#!/usr/bin/env bash
# Makes node-llama-cpp's CUDA backend run on this machine's GPU, for the GPU
# benchmark (scripts/gpu.sh). The prebuilt @node-llama-cpp/linux-x64-cuda
# 3.22.1 carries kernels for sm_86, sm_89 and sm_120/121 only: on an H100 or
# H200 (sm_90) it loads and then fails at its first evaluation
# (`ggml_cuda_kernel_can_use_pdl`), and the -ext package's fallback is built
# for CUDA 12. So where the card's architecture is missing, this builds that
# one library (libggml-cuda.so, a ggml backend loaded at run time) for the
# card, from the llama.cpp source node-llama-cpp ships (its git bundle, the
# release its binaries were built from), and puts it in place, keeping the
# prebuilt one beside it (.prebuilt). About 4 minutes on 16 cores.
#
# Needs the CUDA toolkit (nvcc), CMake and a C++ compiler; no network.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=node_modules/@node-llama-cpp/linux-x64-cuda/bins/linux-x64-cuda
lib=$dir/libggml-cuda.so
[[ -f $lib ]] || { echo "$lib is missing (npm install)" >&2; exit 1; }
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '. ')
if grep -aq "sm_${arch}" "$lib"; then
  echo "node-llama-cpp's CUDA backend has kernels for sm_$arch"
  exit 0
fi
src=bench/.work/llama.cpp
[[ -d $src/ggml ]] || git clone -q node_modules/node-llama-cpp/llama/gitRelease.bundle "$src"
touch "$src/ggml/ggml.pc.in" # ggml's standalone CMake wants it; llama.cpp's tree has none
export CUDACXX=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
cmake -S "$src/ggml" -B "$src/build-cuda" -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DGGML_BACKEND_DL=ON \
  -DGGML_NATIVE=OFF -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF -DCMAKE_CUDA_ARCHITECTURES="$arch" >/dev/null
cmake --build "$src/build-cuda" --target ggml-cuda -j "$(nproc)"
[[ -f $lib.prebuilt ]] || cp "$lib" "$lib.prebuilt"
cp "$src/build-cuda/bin/libggml-cuda.so" "$lib"
echo "node-llama-cpp's CUDA backend rebuilt for sm_$arch ($lib)"
