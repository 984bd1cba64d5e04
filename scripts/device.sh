#!/usr/bin/env bash
# The one script that runs every GPU test and benchmark on a machine with a GPU; logs and
# summary.txt go to $OUT (default /tmp/device-out).
#   build machine: bash scripts/device.sh pack [build-dir]  # copies binaries + the libraries they
#                                                           # need into .devbin/ (git-ignored), xz
#   GPU machine:   bash scripts/device.sh [steps...]        # in a copy of the checkout with .devbin/
# Steps (default: env tests bench e2e sanitize): env, tests, bench, gemm, e2e, base, curve, online,
# sanitize, numerics, python, sampling (what sampling settings cost), fixtures (the HF sampling fixtures),
# families (the workload on the Llama 3.2 1B, Gemma 3 1B and Qwen2.5 0.5B shapes), fp8 (the FP8 op
# tests under memcheck and racecheck, the workload and batch 1 with FP8 KV and FP8 weights),
# fuse (the decode RoPE/KV store in the attention kernel against two kernels, NANOVLLM_FUSE_ROPE=0),
# fp8mma (the FP8 tensor-core skinny GEMM, on from M = 2 by default: its op tests with
# NANOVLLM_FP8_MMA=1 and =all, under memcheck and racecheck, gemm-stack-fp8 and the engine at batch
# 1-16 and on the workload with FP8 weights, on against off),
# profile (each kernel's own time at batch 1 under Nsight Compute, by kernel, a step: the FP8
# checkpoint and bf16, scripts/ncu_kernels.py),
# split (batch 1 against the decode split size, NANOVLLM_DECODE_PARTITION), ab1 (batch 1 and the
# e4m3-KV workload, an older build packed with PACK_BASE against this one),
# tp2 (tensor parallelism on a two-GPU machine: its tests, TP 1 vs 2 on the workload and batch 1,
# memcheck over both ranks). On one GPU the tensor-parallel path is covered by `tests` (a one-rank
# NCCL group inside a captured graph) and `base` (TP 1 against a build from before it).
# (No nsys step: on the H200 machine nsys recorded but could not import its report, run 34.)
# base: the bench.py workload and batch 1 again with an older build for an A/B on one machine,
# alternating (BASE_BUNDLE, default .devbin/base.tar.xz: a bundle from `pack`, copied there);
# BASE_OPS=1 adds both builds' decode attention (`bench_cuda_ops --quick decode`). The two bundles
# and the checkout must fit what travels to the GPU machine: the older bundle's lib/ may be left
# empty (this bundle's libraries serve both).
# The GPU machine needs the CUDA toolkit (libcublasLt, compute-sanitizer) but not the libraries
# the binaries were linked against on the build machine: the bundle holds those.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [[ "${1:-}" == "pack" ]]; then
  BUILD=${2:-build-cuda}
  rm -rf .devbin && mkdir -p .devbin/stage/lib
  mkdir -p "$(git rev-parse --git-path info)"
  grep -qx "/.devbin/" "$(git rev-parse --git-path info/exclude)" 2>/dev/null || echo "/.devbin/" >>"$(git rev-parse --git-path info/exclude)"
  # The bundle travels beside the checkout (~30 MB) under a 64 MiB limit: the binaries the default
  # steps need, bench_numerics included (the CudaNumerics tests run it from beside the test
  # binary), ~35 MB at xz -9; PACK_EXTRA="bench_tokenizer" adds that one.
  for b in nanovllm nanovllm_cuda_tests bench_cuda_ops bench_numerics ${PACK_EXTRA:-}; do
    [[ -x $BUILD/$b ]] && cp "$BUILD/$b" .devbin/stage/ && strip .devbin/stage/$b
  done
  # Non-system libraries (everything but glibc's own and the CUDA driver/toolkit ones).
  for b in .devbin/stage/*; do [[ -f $b ]] && ldd "$b"; done | awk '/=>/ {print $3}' | sort -u |
    grep -vE 'libc\.so|libm\.so|libdl\.so|librt\.so|libpthread\.so|ld-linux|libcublas|libcuda' |
    while read -r lib; do cp -L "$lib" .devbin/stage/lib/; done
  # PY_FOR_DEVICE=/path/to/python3.X (the GPU machine's version): nanovllm._core for it, linked
  # against this build's static libraries, with the Python package beside it (the `python` step).
  if [[ -n ${PY_FOR_DEVICE:-} ]]; then
    mkdir -p .devbin/stage/python/nanovllm
    cp python/nanovllm/*.py python/nanovllm/py.typed .devbin/stage/python/nanovllm/
    inc=$($PY_FOR_DEVICE -c "import sysconfig; print(sysconfig.get_paths()['include'])")
    suf=$($PY_FOR_DEVICE -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
    g++ -O2 -std=c++20 -shared -fPIC -fvisibility=hidden -Iinclude -Isrc -I"$inc" python/src/bindings.cpp \
      -o ".devbin/stage/python/nanovllm/_core$suf" "$BUILD/libnanovllm_lib.a" "$BUILD/libnanovllm_cuda_kernels.a" \
      $(pkg-config --libs libpcre2-8 libutf8proc libxxhash openblas) -fopenmp -L/usr/local/cuda/lib64 \
      -lcudart_static -lrt -ldl -lpthread && strip ".devbin/stage/python/nanovllm/_core$suf"
  fi
  # PACK_BASE=dir: an older build's stripped nanovllm (and its commit.txt) into base/, for the `ab1`
  # step; in one archive with this build's binaries it adds little (xz finds the shared code).
  # With its bench_cuda_ops too when PACK_BASE has one (ab1's AB_OPS).
  if [[ -n ${PACK_BASE:-} ]]; then
    mkdir -p .devbin/stage/base && cp "$PACK_BASE"/nanovllm "$PACK_BASE"/commit.txt .devbin/stage/base/
    [[ -x $PACK_BASE/bench_cuda_ops ]] && cp "$PACK_BASE"/bench_cuda_ops .devbin/stage/base/
  fi
  git rev-parse HEAD >.devbin/stage/commit.txt
  git status --short -- src/backend/cuda tests/test_backend_ops.cpp bench scripts >>.devbin/stage/commit.txt
  XZ_OPT="-9 -T2" tar -C .devbin/stage -cJf .devbin/bundle.tar.xz . && rm -rf .devbin/stage
  ls -la .devbin
  exit 0
fi

OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
BIN=/tmp/nanovllm-bin
rm -rf $BIN && mkdir -p $BIN && tar -C $BIN -xJf .devbin/bundle.tar.xz
CUBLAS_DIR=$(dirname "$(find /usr/local/cuda*/ /opt /usr/lib -name 'libcublasLt.so.13*' 2>/dev/null | head -1)")
export LD_LIBRARY_PATH=$BIN/lib:$CUBLAS_DIR:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PATH=/usr/local/cuda/bin:$PATH
SAN=$(command -v compute-sanitizer || find / -name compute-sanitizer -type f 2>/dev/null | head -1)
# NCCL (tensor parallelism; dlopen'ed): the GPU machine's own (its CUDA toolkit, or PyTorch's wheel).
# Not bundled: the library is 200 MB.
[[ -n ${NANOVLLM_NCCL_LIBRARY:-} ]] || export NANOVLLM_NCCL_LIBRARY=$(find /usr/local/cuda*/ /usr/lib /usr/local/lib \
  /opt -name 'libnccl.so.2' 2>/dev/null | head -1)
SUMMARY=$OUT/summary.txt
STEPS=("$@")
[[ ${#STEPS[@]} -eq 0 ]] && STEPS=(env tests bench e2e sanitize)
note() { echo "$*" | tee -a "$SUMMARY"; }
# The qwen3-0.6b preset in bf16 (/tmp/m06) and as a Qwen3-FP8-style checkpoint (/tmp/m06fp8), made
# once a machine; make-model's output appended to $1.
models() {
  [[ -d /tmp/m06 ]] || $BIN/nanovllm make-model --preset qwen3-0.6b --out /tmp/m06 >>"$1" 2>&1
  [[ -d /tmp/m06fp8 ]] || $BIN/nanovllm make-model --preset qwen3-0.6b --quantize fp8 --out /tmp/m06fp8 >>"$1" 2>&1
}
# A batch-1 run's TPOT and its decode rate (tok/s, finer than TPOT's two decimals) from log $1.
tpot() { echo "$(grep -E '^TPOT' "$1" | tail -1 | tr -s ' '); $(grep -oE 'Decode: [0-9.]+tok/s' "$1" | tail -1)"; }
B1="--num-seqs 1 --min-input 128 --max-input 128 --min-output 512 --max-output 512"  # batch 1's bench flags

for step in "${STEPS[@]}"; do
  case $step in
    env)
      { cat $BIN/commit.txt; nvidia-smi; echo "cublasLt: $CUBLAS_DIR"; echo "sanitizer: $SAN"; } >"$OUT/env.txt" 2>&1
      note "commit $(head -1 $BIN/commit.txt); $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
      note "nccl: ${NANOVLLM_NCCL_LIBRARY:-not found}"
      ;;
    tests)
      $BIN/nanovllm_cuda_tests ${TESTS_FILTER:+--gtest_filter="$TESTS_FILTER"} 2>&1 | tee "$OUT/tests.log" | tail -25
      note "tests: $(grep -E '^\[  (PASSED|FAILED)' "$OUT/tests.log" | tr '\n' ' ')"
      grep -E '^\[achieved\]' "$OUT/tests.log" >"$OUT/achieved.txt"  # each op's error beside its tolerance
      ;;
    bench)
      $BIN/bench_cuda_ops ${BENCH_SECTIONS:-} 2>&1 | tee "$OUT/bench_ops.log"  # BENCH_SECTIONS: e.g. "decode small"
      ;;
    gemm)  # the 28 layers' projections at decode batches, weights streaming from HBM (bf16, then FP8)
      $BIN/bench_cuda_ops gemm-stack gemm-stack-fp8 2>&1 | tee -a "$OUT/gemm.log" | grep -E 'layer|FP8'
      ;;
    sanitize)
      # memcheck over every op test; racecheck over the attention kernels (shared-memory users).
      # (ClearErrors is left out: its deliberate 1 PiB cudaMalloc would count as an API error.)
      # SANITIZE_FILTER=gtest-filter: memcheck and racecheck (SANITIZE_TOOLS) over those op tests only.
      if [[ -n ${SANITIZE_FILTER:-} ]]; then
        for tool in ${SANITIZE_TOOLS:-memcheck racecheck}; do
          $SAN --tool $tool --error-exitcode 3 $BIN/nanovllm_cuda_tests --gtest_filter="$SANITIZE_FILTER" \
            >>"$OUT/sanitize.log" 2>&1
          note "$tool ($SANITIZE_FILTER): rc=$? $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/sanitize.log" | tail -1)"
        done
        continue
      fi
      $SAN --tool memcheck --error-exitcode 3 $BIN/nanovllm_cuda_tests --gtest_filter=-BackendOps.ClearErrors >"$OUT/sanitize.log" 2>&1
      note "memcheck (op tests): rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/sanitize.log" | tail -1)"
      $SAN --tool racecheck --error-exitcode 3 $BIN/nanovllm_cuda_tests --gtest_filter='AttentionOps.Prefill:AttentionOps.Decode:AttentionOps.DecodeFusedRope:BackendOps.RmsNorm:BackendOps.SiluMul:BackendOps.QkNormRopeStore:CudaSampling.*' >>"$OUT/sanitize.log" 2>&1
      note "racecheck (attention, norm, silu, rope, sampling): rc=$? $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/sanitize.log" | tail -1)"
      if [[ -x $BIN/nanovllm ]]; then
        # A small model with CUDA-supported head_dim 64, graphs for batch sizes up to 8.
        $BIN/nanovllm make-model --preset tiny --head-dim 64 --out /tmp/tiny64 >>"$OUT/sanitize.log" 2>&1
        $SAN --tool memcheck --error-exitcode 3 $BIN/nanovllm bench --model /tmp/tiny64 --device cuda --num-seqs 6 \
          --max-num-seqs 8 --min-input 16 --max-input 300 --min-output 4 --max-output 40 >>"$OUT/sanitize.log" 2>&1
        note "memcheck (short engine run, graphs): rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/sanitize.log" | tail -1)"
      fi
      ;;
    e2e)
      [[ -d /tmp/m06 ]] || $BIN/nanovllm make-model --preset qwen3-0.6b --out /tmp/m06 >"$OUT/e2e.log" 2>&1
      # Process start to first generated token (the whole process, teardown included), 3 times.
      for i in 1 2 3; do
        t0=$(date +%s.%N)
        $BIN/nanovllm generate --model /tmp/m06 --device cuda --prompt "Hello" --max-tokens 1 --no-progress \
          >>"$OUT/startup.log" 2>&1
        t1=$(date +%s.%N)
        note "start to first token (generate --max-tokens 1, wall): $(awk "BEGIN{printf \"%.2f\", $t1 - $t0}") s"
      done
      grep "start-up" "$OUT/startup.log" | tee -a "$SUMMARY"
      # nano-vLLM's bench.py workload (256 seqs, prompts 100-1024, outputs 100-1024).
      NANOVLLM_STEP_TRACE=$OUT/steps.csv $BIN/nanovllm bench --model /tmp/m06 --device cuda ${BENCH_ARGS:-} 2>&1 |
        tee -a "$OUT/e2e.log" | tail -12
      note "e2e bench.py workload: $(grep -E 'Throughput' "$OUT/e2e.log" | tail -1)"
      python3 scripts/fit_steps.py "$OUT/steps.csv" 2>&1 | tee -a "$SUMMARY"  # where the time went
      # Batch-1 decode latency.
      $BIN/nanovllm bench --model /tmp/m06 --device cuda $B1 2>&1 | tee -a "$OUT/e2e.log" | tail -8
      note "e2e batch 1: $(tpot "$OUT/e2e.log")"
      for env in ${BENCH_ENV_SWEEP:-}; do  # the same workload under each NAME=VALUE given
        env "$env" $BIN/nanovllm bench --model /tmp/m06 --device cuda ${BENCH_ARGS:-} 2>&1 | tee -a "$OUT/e2e.log" | tail -3
        note "e2e bench.py workload, $env: $(grep -E 'Throughput' "$OUT/e2e.log" | tail -1)"
      done
      if [[ -n ${PDL_AB:-} ]]; then  # the same without programmatic dependent launch
        NANOVLLM_PDL=0 $BIN/nanovllm bench --model /tmp/m06 --device cuda $B1 2>&1 | tee -a "$OUT/e2e.log" | tail -3
        note "e2e batch 1, NANOVLLM_PDL=0: $(tpot "$OUT/e2e.log")"
      fi
      ;;
    base)
      BASE=/tmp/nanovllm-base
      rm -rf $BASE && mkdir -p $BASE && tar -C $BASE -xJf "${BASE_BUNDLE:-.devbin/base.tar.xz}"
      [[ -d /tmp/m06 ]] || $BIN/nanovllm make-model --preset qwen3-0.6b --out /tmp/m06 >"$OUT/e2e.log" 2>&1
      for i in 1 2; do
        LD_LIBRARY_PATH=$BASE/lib:$LD_LIBRARY_PATH $BASE/nanovllm bench --model /tmp/m06 --device cuda ${BENCH_ARGS:-} 2>&1 |
          tee -a "$OUT/base.log" | tail -3
        note "base ($(head -1 $BASE/commit.txt | cut -c1-7)) bench.py workload: $(grep -E 'Throughput' "$OUT/base.log" | tail -1)"
        $BIN/nanovllm bench --model /tmp/m06 --device cuda ${BENCH_ARGS:-} 2>&1 | tee -a "$OUT/e2e.log" | tail -3
        note "this build bench.py workload: $(grep -E 'Throughput' "$OUT/e2e.log" | tail -1)"
      done
      LD_LIBRARY_PATH=$BASE/lib:$LD_LIBRARY_PATH $BASE/nanovllm bench --model /tmp/m06 --device cuda $B1 2>&1 |
        tee -a "$OUT/base.log" | tail -3
      note "base batch 1: $(tpot "$OUT/base.log")"
      $BIN/nanovllm bench --model /tmp/m06 --device cuda $B1 2>&1 | tee -a "$OUT/e2e.log" | tail -3
      note "this build batch 1: $(tpot "$OUT/e2e.log")"
      if [[ -n ${BASE_OPS:-} ]]; then  # decode attention, the older build then this one
        for d in $BASE $BIN; do
          echo "== $(head -1 $d/commit.txt | cut -c1-7)" >>"$OUT/base-ops.log"
          LD_LIBRARY_PATH=$d/lib:$LD_LIBRARY_PATH $d/bench_cuda_ops --quick decode 2>&1 | tee -a "$OUT/base-ops.log" |
            grep -E "B=1 |B=16 |B=256 ctx=100"
        done
      fi
      ;;
    curve)  # the throughput-latency curve: a max_num_seqs sweep
      [[ -d /tmp/m06 ]] || $BIN/nanovllm make-model --preset qwen3-0.6b --out /tmp/m06 >"$OUT/e2e.log" 2>&1
      $BIN/nanovllm bench --model /tmp/m06 --device cuda --sweep max_num_seqs=${CURVE_SEQS:-8,32,64,128,256} \
        --out-prefix "$OUT/sweep" 2>&1 | tee "$OUT/curve.log" | tail -8
      note "sweep: $(tr '\n' ' ' <"$OUT/sweep.csv" | cut -c1-600)"
      ;;
    online)  # the server on the GPU under bench --online (copy models/ too: serve needs the tokenizer)
      [[ -f /tmp/m06/tokenizer.json ]] || $BIN/nanovllm make-model --preset qwen3-0.6b --out /tmp/m06 >"$OUT/e2e.log" 2>&1
      $BIN/nanovllm serve --model /tmp/m06 --device cuda --port 8123 >"$OUT/serve.log" 2>&1 &
      SERVER=$!
      for i in $(seq 60); do
        python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8123/health', timeout=1)" 2>/dev/null && break
        sleep 1
      done
      for rate in ${ONLINE_RATES:-16 0}; do
        $BIN/nanovllm bench --online --url http://127.0.0.1:8123 --request-rate $rate 2>&1 | tee -a "$OUT/online.log" | tail -8
        note "online, request rate $rate: $(grep -E 'Throughput' "$OUT/online.log" | tail -1); TTFT/TPOT: $(grep -E '^(TTFT|TPOT)' "$OUT/online.log" | tail -2 | tr -s ' ' | tr '\n' ';')"
      done
      kill $SERVER; wait $SERVER 2>/dev/null
      ;;
    numerics)  # CUDA's logits against float32, beside transformers' bf16 (tests/reference/make_numerics_fixtures.py)
      [[ -d /tmp/m06 ]] || $BIN/nanovllm make-model --preset qwen3-0.6b --out /tmp/m06 >>"$OUT/numerics.log" 2>&1
      FX=${NUMERICS_FIXTURES:-tests/fixtures/numerics}
      BF16=tests/fixtures/models/tiny-tied-bf16
      if [[ -n ${NUMERICS_REMAKE:-} || ! -f $FX/qwen3-0.6b.json ]]; then
        FX=$OUT/numerics && BF16=$OUT/tiny-tied-bf16 && mkdir -p "$FX"
        python3 tests/reference/make_numerics_fixtures.py tiny-tied=tests/fixtures/models/tiny-tied \
          small-untied=tests/fixtures/models/small-untied qwen3-0.6b=/tmp/m06 \
          --bf16-copy "tiny-tied-bf16=tests/fixtures/models/tiny-tied=$BF16" --out "$FX" >>"$OUT/numerics.log" 2>&1
        rm -f "$BF16/generation_config.json"
      fi
      for m in ${NUMERICS_MODELS:-tiny-tied small-untied tiny-tied-bf16 qwen3-0.6b}; do
        dir=tests/fixtures/models/$m && [[ $m == qwen3-0.6b ]] && dir=/tmp/m06
        [[ $m == tiny-tied-bf16 ]] && dir=$BF16
        $BIN/bench_numerics --model "$dir" --fixture "$FX/$m.json" --check ${NUMERICS_ARGS:-} 2>/dev/null |
          tee -a "$OUT/numerics.log" | grep -E "^ |^model|argmax|CUDA is" | grep -v "prefix-cache\|512\|eager" -A0
        note "numerics $m: $(grep -E 'argmax equal' "$OUT/numerics.log" | tail -1); $(grep -E 'CUDA is' "$OUT/numerics.log" | tail -1)"
      done
      ;;
    sampling)  # what sampling settings cost: the workload and batch 1 plain, with Qwen3's settings, with logprobs
      [[ -d /tmp/m06 ]] || $BIN/nanovllm make-model --preset qwen3-0.6b --out /tmp/m06 >"$OUT/sampling.log" 2>&1
      for round in 1 2; do  # alternating, in one call
        for args in "" "--top-p 0.95 --top-k 20" "--logprobs 5" "--top-p 0.95"; do
          $BIN/nanovllm bench --model /tmp/m06 --device cuda $args 2>&1 | tee -a "$OUT/sampling.log" | tail -2
          note "sampling workload [${args:-temperature only}]: $(grep -E 'Throughput' "$OUT/sampling.log" | tail -1)"
        done
        for args in "" "--top-p 0.95 --top-k 20"; do
          $BIN/nanovllm bench --model /tmp/m06 --device cuda $B1 $args 2>&1 | tee -a "$OUT/sampling.log" | tail -2
          note "sampling batch 1 [${args:-temperature only}]: $(tpot "$OUT/sampling.log")"
        done
      done
      ;;
    families)  # the bench.py workload and batch 1 on the other families' real shapes (random weights)
      for p in ${FAMILY_PRESETS:-llama3.2-1b gemma3-1b qwen2.5-0.5b}; do
        [[ -d /tmp/$p ]] || $BIN/nanovllm make-model --preset $p --out /tmp/$p >>"$OUT/families.log" 2>&1
        $BIN/nanovllm bench --model /tmp/$p --device cuda 2>&1 | tee -a "$OUT/families.log" | tail -3
        note "family $p bench.py workload: $(grep -E 'Throughput' "$OUT/families.log" | tail -1)"
        $BIN/nanovllm bench --model /tmp/$p --device cuda $B1 2>&1 | tee -a "$OUT/families.log" | tail -3
        note "family $p batch 1: $(tpot "$OUT/families.log")"
      done
      grep -E "KV cache|start-up" "$OUT/families.log" | tee -a "$SUMMARY"
      ;;
    fixtures)  # the Hugging Face sampling fixtures (tests/reference/make_sampling_fixtures.py), into $OUT/sampling
      python3 tests/reference/make_sampling_fixtures.py "$OUT/sampling" 2>&1 | tail -3 | tee -a "$SUMMARY"
      ;;
    python)  # the Python package (packed with PY_FOR_DEVICE): nano-vLLM's bench.py beside `nanovllm bench`
      [[ -d /tmp/m06 ]] || $BIN/nanovllm make-model --preset qwen3-0.6b --out /tmp/m06 >"$OUT/python.log" 2>&1
      PYTHONPATH=$BIN/python python3 -c "import sys, nanovllm; print(sys.version.split()[0], nanovllm.__file__)" 2>&1 |
        tee -a "$OUT/python.log"
      for i in 1 2; do  # alternating, in one call
        PYTHONPATH=$BIN/python NANOVLLM_MODEL=/tmp/m06 python3 examples/python/bench.py 2>>"$OUT/python.err" |
          tee -a "$OUT/python.log"
        note "python bench.py: $(grep -E 'Throughput' "$OUT/python.log" | tail -1)"
        $BIN/nanovllm bench --model /tmp/m06 --device cuda 2>&1 | tee -a "$OUT/e2e.log" | tail -3
        note "nanovllm bench: $(grep -E 'Throughput' "$OUT/e2e.log" | tail -1)"
      done
      ;;
    tp2)  # tensor parallelism on two GPUs (NCCL_NVLS_ENABLE stays 0): the TP tests, then TP 1 vs 2 alternating
      export NCCL_NVLS_ENABLE=0
      ngpu=$(nvidia-smi -L | wc -l)
      note "tp2: $ngpu GPUs"
      $BIN/nanovllm_cuda_tests --gtest_filter='*TensorParallel*' 2>&1 | tee "$OUT/tp2-tests.log" | tail -5
      note "tp2 tests: $(grep -E '^\[  (PASSED|FAILED)|SKIPPED' "$OUT/tp2-tests.log" | tr '\n' ' ')"
      [[ -d /tmp/m06 ]] || $BIN/nanovllm make-model --preset qwen3-0.6b --out /tmp/m06 >>"$OUT/tp2.log" 2>&1
      for round in 1 2; do
        for tp in 1 2; do
          $BIN/nanovllm bench --model /tmp/m06 --device cuda --tp $tp 2>&1 | tee -a "$OUT/tp2.log" | tail -2
          note "tp $tp bench.py workload: $(grep -E 'Throughput' "$OUT/tp2.log" | tail -1)"
          $BIN/nanovllm bench --model /tmp/m06 --device cuda --tp $tp $B1 2>&1 | tee -a "$OUT/tp2.log" | tail -2
          note "tp $tp batch 1: $(tpot "$OUT/tp2.log")"
        done
      done
      grep -E 'tensor-parallel rank|start-up' "$OUT/tp2.log" | tail -3 | tee -a "$SUMMARY"
      if [[ -n $SAN ]]; then  # memcheck over both ranks of a short run
        $SAN --tool memcheck --target-processes all --error-exitcode 3 $BIN/nanovllm bench --model /tmp/m06 \
          --device cuda --tp 2 --num-seqs 4 --min-input 32 --max-input 64 --min-output 8 --max-output 16 \
          --max-model-len 512 --enforce-eager >"$OUT/tp2-memcheck.log" 2>&1
        note "tp2 memcheck: exit $? ($(grep -E 'ERROR SUMMARY' "$OUT/tp2-memcheck.log" | sort | uniq -c | tr '\n' ' '))"
      fi
      ;;
    fp8mma)  # the FP8 tensor-core skinny GEMM (gemv_fp8_mma.cu) against the paths it replaces
      NANOVLLM_FP8_MMA=1 $BIN/nanovllm_cuda_tests --gtest_filter='Fp8GemmOps.*' >"$OUT/fp8mma-tests.log" 2>&1
      note "fp8 mma op tests (from M = 2): rc=$? $(grep -E '^\[  (PASSED|FAILED)' "$OUT/fp8mma-tests.log" | tr '\n' ' ')"
      NANOVLLM_FP8_MMA=all $BIN/nanovllm_cuda_tests --gtest_filter='Fp8GemmOps.Linear*:Fp8GemmOps.Norm*' \
        >>"$OUT/fp8mma-tests.log" 2>&1
      note "fp8 mma op tests (from M = 1): rc=$?"
      if [[ -n $SAN ]]; then
        for tool in memcheck racecheck; do
          NANOVLLM_FP8_MMA=1 $SAN --tool $tool --error-exitcode 3 $BIN/nanovllm_cuda_tests \
            --gtest_filter='Fp8GemmOps.Linear*:Fp8GemmOps.Norm*' >>"$OUT/fp8mma-sanitize.log" 2>&1
          # racecheck also flags cuBLASLt's own nvjet kernels (the M > 16 path): count ours apart
          note "fp8 mma $tool: rc=$? $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/fp8mma-sanitize.log" | tail -1);" \
            "outside cuBLASLt: $(grep 'Race reported' "$OUT/fp8mma-sanitize.log" | grep -vc nvjet)"
        done
      fi
      for v in 1 0; do
        note "gemm-stack-fp8, NANOVLLM_FP8_MMA=$v:"
        NANOVLLM_FP8_MMA=$v $BIN/bench_cuda_ops gemm-stack-fp8 2>&1 | tee -a "$OUT/fp8mma.log" | grep -E 'M=' | tee -a "$SUMMARY"
      done
      [[ -d /tmp/m06fp8 ]] || $BIN/nanovllm make-model --preset qwen3-0.6b --quantize fp8 --out /tmp/m06fp8 >>"$OUT/fp8mma.log" 2>&1
      for bs in 1 2 4 8 16; do
        for v in all 1 0; do
          [[ $bs != 1 && $v == all ]] && continue
          r=$(NANOVLLM_FP8_MMA=$v $BIN/nanovllm bench --model /tmp/m06fp8 --device cuda --num-seqs $bs --min-input 128 \
            --max-input 128 --min-output 512 --max-output 512 2>&1 | tee -a "$OUT/fp8mma.log" | grep -E '^(Throughput|TPOT)' | tr -s ' ' | tr '\n' ' ')
          note "FP8 checkpoint, $bs sequences, NANOVLLM_FP8_MMA=$v: $r"
        done
      done
      for v in 1 0 1 0; do
        r=$(NANOVLLM_FP8_MMA=$v $BIN/nanovllm bench --model /tmp/m06fp8 --device cuda 2>&1 | tee -a "$OUT/fp8mma.log" | grep -E '^Throughput')
        note "workload, FP8 checkpoint, NANOVLLM_FP8_MMA=$v: $r"
      done
      ;;
    fp8)  # FP8: the op tests over FP8 caches and weights, then the workload and batch 1 with FP8 KV,
          # FP8 weights (--quantization fp8, and a Qwen3-FP8-style checkpoint) and both, beside bf16
      $BIN/nanovllm_cuda_tests --gtest_filter='*Fp8*:*FP8*' 2>&1 | tee "$OUT/fp8-tests.log" | tail -15
      note "fp8 op tests: $(grep -E '^\[  (PASSED|FAILED)' "$OUT/fp8-tests.log" | tr '\n' ' ')"
      grep -E '^\[achieved\]' "$OUT/fp8-tests.log" >"$OUT/fp8-achieved.txt"
      if [[ -n $SAN && -n ${FP8_SANITIZE:-1} ]]; then
        $SAN --tool memcheck --error-exitcode 3 $BIN/nanovllm_cuda_tests --gtest_filter='*Fp8*:*FP8*' >"$OUT/fp8-sanitize.log" 2>&1
        note "fp8 memcheck: rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/fp8-sanitize.log" | tail -1)"
        $SAN --tool racecheck --error-exitcode 3 $BIN/nanovllm_cuda_tests --gtest_filter='AttentionOps.PrefillFp8:AttentionOps.DecodeFp8' >>"$OUT/fp8-sanitize.log" 2>&1
        note "fp8 racecheck: rc=$? $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/fp8-sanitize.log" | tail -1)"
      fi
      models "$OUT/fp8.log"
      for round in 1 2; do  # alternating, in one call
        for args in "--model /tmp/m06" "--model /tmp/m06 --kv-cache-dtype fp8" ${FP8_WEIGHTS_RUNS:-"--model /tmp/m06fp8" "--model /tmp/m06fp8 --kv-cache-dtype fp8"}; do
          $BIN/nanovllm bench --device cuda $args 2>&1 | tee -a "$OUT/fp8.log" | tail -2
          note "fp8 workload [$args]: $(grep -E 'Throughput' "$OUT/fp8.log" | tail -1)"
        done
        for args in "--model /tmp/m06" ${FP8_WEIGHTS_RUNS:-"--model /tmp/m06fp8" "--model /tmp/m06 --quantization fp8"}; do
          $BIN/nanovllm bench --device cuda $B1 $args 2>&1 | tee -a "$OUT/fp8.log" | tail -2
          note "fp8 batch 1 [$args]: $(tpot "$OUT/fp8.log")"
        done
      done
      grep -E "KV cache|start-up" "$OUT/fp8.log" | sort | uniq | head -12 | tee -a "$SUMMARY"
      ;;
    fuse)  # the decode RoPE/KV store fused into the attention: NANOVLLM_FUSE_ROPE=0 (two kernels)
           # against the default, alternating in one call: the workload (bf16 and FP8 KV) and batch 1
           # (bf16 and a Qwen3-FP8-style checkpoint); then the ops (decode section, quick)
      models "$OUT/fuse.log"
      for round in ${FUSE_ROUNDS:-1 2}; do
        for fuse in 0 1; do
          for args in "--model /tmp/m06" "--model /tmp/m06 --kv-cache-dtype fp8"; do
            NANOVLLM_FUSE_ROPE=$fuse $BIN/nanovllm bench --device cuda $args 2>&1 | tee -a "$OUT/fuse.log" | tail -1
            note "fuse=$fuse workload [$args]: $(grep -E 'Throughput' "$OUT/fuse.log" | tail -1)"
          done
          for args in "--model /tmp/m06" "--model /tmp/m06fp8"; do
            NANOVLLM_FUSE_ROPE=$fuse $BIN/nanovllm bench --device cuda $B1 $args 2>&1 | tee -a "$OUT/fuse.log" | tail -1
            note "fuse=$fuse batch 1 [$args]: $(tpot "$OUT/fuse.log")"
          done
        done
      done
      $BIN/bench_cuda_ops --quick decode 2>&1 | tee "$OUT/fuse-ops.log" | grep -E "ctx=100" | tee -a "$SUMMARY"
      ;;
    profile)  # each kernel's own time in batch-1 decode steps (ncu runs them one at a time, no PDL)
      NCU=$(command -v ncu || find / -name ncu -type f -perm -u+x 2>/dev/null | head -1)
      [[ -n $NCU ]] || { note "profile: no ncu"; continue; }
      models "$OUT/profile.log"
      for m in ${PROFILE_MODELS:-m06fp8 m06}; do
        # the timed run only (bench --profile): 16 steps of one sequence, ~145 kernels each
        timeout 300 "$NCU" --profile-from-start off --graph-profiling node --print-kernel-base function \
          --metrics gpu__time_duration.sum --csv $BIN/nanovllm bench --profile --model /tmp/$m --device cuda \
          --num-seqs 1 --min-input 128 --max-input 128 --min-output 16 --max-output 16 \
          >"$OUT/profile-$m.csv" 2>>"$OUT/profile.log"
        note "profile, batch 1, /tmp/$m (rc=$?):"
        python3 scripts/ncu_kernels.py "$OUT/profile-$m.csv" 2>&1 | tee -a "$SUMMARY"
      done
      ;;
    ab1)  # batch 1 (FP8 checkpoint and bf16) and the workload with an e4m3 cache, the build packed
          # with PACK_BASE (base/) against this one, alternating, AB_ROUNDS rounds (2)
      [[ -x $BIN/base/nanovllm ]] || { note "ab1: no base/ in the bundle (pack with PACK_BASE)"; continue; }
      models "$OUT/ab1.log"
      for round in $(seq ${AB_ROUNDS:-2}); do
        for d in $BIN/base $BIN; do
          c=$(head -1 $d/commit.txt | cut -c1-7)
          for m in m06fp8 m06; do
            for x in "" ${AB_B1_EXTRA:+"$AB_B1_EXTRA"}; do  # AB_B1_EXTRA: batch 1 also with these flags
              $d/nanovllm bench --device cuda --model /tmp/$m $B1 $x >>"$OUT/ab1.log" 2>&1
              note "ab1 $c batch 1 [$m${x:+ $x}]: $(tpot "$OUT/ab1.log")"
            done
          done
          for x in "--kv-cache-dtype fp8" ${AB_BF16:+""}; do  # AB_BF16=1: the bf16-KV workload too
            $d/nanovllm bench --device cuda --model /tmp/m06 $x >>"$OUT/ab1.log" 2>&1
            note "ab1 $c workload [m06${x:+, e4m3 KV}]: $(grep -E 'Throughput' "$OUT/ab1.log" | tail -1)"
          done
          # AB_OPS=1: both builds' decode attention at small batches, in the first round
          if [[ -n ${AB_OPS:-} && $round == 1 && -x $d/bench_cuda_ops ]]; then
            $d/bench_cuda_ops --quick decode >"$OUT/ab1-ops-$c.log" 2>&1
            grep -E "B=(1|16) " "$OUT/ab1-ops-$c.log" | sed "s/^/ab1 $c ops: /" | tee -a "$SUMMARY"
          fi
        done
      done
      ;;
    split)  # batch 1 against the decode split size (NANOVLLM_DECODE_PARTITION fixes it; unset: the
            # backend's, 32 tokens at batch 1), FP8 checkpoint and bf16, two rounds alternating
      models "$OUT/split.log"
      for round in $(seq ${SPLIT_ROUNDS:-2}); do
        for m in ${SPLIT_MODELS:-m06fp8 m06}; do
          for p in "" ${SPLIT_SIZES:-64 128 256 1024}; do
            NANOVLLM_DECODE_PARTITION=$p $BIN/nanovllm bench --device cuda --model /tmp/$m $B1 >>"$OUT/split.log" 2>&1
            note "split [$m, partition ${p:-default}]: $(tpot "$OUT/split.log")"
          done
        done
      done
      ;;
    *) echo "unknown step $step" ;;
  esac
done
echo "==== summary"
cat "$SUMMARY"
