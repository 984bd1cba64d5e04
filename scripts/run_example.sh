#!/usr/bin/env bash
# The main job on a fresh machine: install, build, make the default model (random weights with
# Qwen3-0.6B's shapes and the real Qwen3 tokenizer) if it is missing, and chat with it.
# Runs on the GPU when one is usable, otherwise on the CPU (a couple of minutes on 2 cores).
# Environment: BUILD (build folder), MODEL (model directory), DEVICE (auto|cpu|cuda), MAX_TOKENS.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD=${BUILD:-build}
MODEL=${MODEL:-models/qwen3-0.6b-random}
DEVICE=${DEVICE:-auto}
MAX_TOKENS=${MAX_TOKENS:-24}

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target nanovllm

if [ ! -f "$MODEL/config.json" ]; then
  "$BUILD/nanovllm" make-model --preset qwen3-0.6b --out "$MODEL" --tokenizer models/qwen3-tokenizer
fi

# The weights are random, so the completions are gibberish: this shows the whole path (chat
# template, tokenizer, prefill, decode, sampling, detokenizing) working end to end.
"$BUILD/nanovllm" generate --model "$MODEL" --device "$DEVICE" --chat --no-thinking \
  --temperature 0.6 --max-tokens "$MAX_TOKENS" --max-model-len 1024 \
  --prompt "introduce yourself" \
  --prompt "list all prime numbers within 100" \
  --prompt "Write a haiku about paged attention."
