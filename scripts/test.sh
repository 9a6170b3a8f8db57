#!/usr/bin/env bash
# Everything `npm test` runs: setup (idempotent, builds the addon with the
# fault-injection switch, fetches Gemma 3 270M for __test__/gemma3.spec.ts
# (253 MB), Qwen2.5-Coder-0.5B for __test__/qwen2.spec.ts (491 MB) and 1.5B for
# __test__/speculative.spec.ts (1.1 GB, drafted by the 0.5B), llama.cpp's chat templates and vocab files for the tokenizer
# tests (51 MB, ~30 s, once), makes HF / MLX model directories from the GGUFs
# for __test__/model-dirs.spec.ts (mlx-lm in bench/.venv; ~3 min, once) and
# tiny random checkpoints of every architecture with mlx-lm's logits (seconds),
# Rust unit tests (the architectures against mlx-lm among them: required here,
# not skipped), a build of the examples and benches, then the vitest suites against the real models through the real addon.
# Before the tests, the API reference is generated (`npm run docs`), which fails on an
# undocumented export.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test --gemma3 --qwen2 --qwen2-1.5b --tokenizer-data --mlx-dirs --embeddings
npm run docs
# Same target directory as `napi build`, so dependencies are built once.
host=$(rustc -vV | sed -n 's/^host: //p')
MLX_SERVING_REQUIRE_TINY=1 cargo test --release --target "$host" --features fault-injection --lib
# The examples and the engine benchmark are tools of the docs and `npm run bench`: they must build.
cargo build --release --quiet --target "$host" --examples --benches
npx vitest run "$@"
