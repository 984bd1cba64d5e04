#!/usr/bin/env bash
# Sets up, builds everything (the CUDA backend too when nvcc is found) and runs the whole test suite.
# GPU tests skip visibly without a GPU; scripts/device.sh runs them on one.
# Then a second, sanitized build (clang, ASan + UBSan) of only what the CPU tests need runs the
# suite again, and the fuzz targets for NANOVLLM_FUZZ_SECONDS (30) each; SANITIZE=0 skips it (its
# time on the 2-core CI machine: docs/decisions.md). Its node tests multiply their bounds on the
# server's latency by the sanitizers' slowdown (tests/node/server_helpers.mjs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD=${BUILD:-build}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$(nproc)"
ctest --test-dir "$BUILD" --output-on-failure -j"$(nproc)"

if [ "${SANITIZE:-1}" != 0 ]; then
  SAN=${SAN_BUILD:-build-san}
  cmake -S . -B "$SAN" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
        -DNANOVLLM_CUDA=OFF -DNANOVLLM_SANITIZE=ON -DNANOVLLM_FUZZ=ON \
        -DNANOVLLM_FUZZ_SECONDS="${NANOVLLM_FUZZ_SECONDS:-30}" >/dev/null
  cmake --build "$SAN" -j"$(nproc)" --target nanovllm nanovllm_tests bench_numerics fuzz_request fuzz_tokenizer
  # The Python extension is not built here (an ASan runtime cannot be preloaded into python3 in CI).
  # UB aborts (-fno-sanitize-recover), and so does a leak at exit: either fails its test.
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
    ctest --test-dir "$SAN" --output-on-failure -j"$(nproc)" -E '^python\.'
fi
