#!/usr/bin/env bash
# Sets up, builds everything (the CUDA backend too when nvcc is found) and runs the whole test suite.
# GPU tests skip visibly without a GPU; scripts/device.sh runs them on one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD=${BUILD:-build}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$(nproc)"
ctest --test-dir "$BUILD" --output-on-failure -j"$(nproc)"
