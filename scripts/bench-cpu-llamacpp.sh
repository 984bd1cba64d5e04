#!/usr/bin/env bash
# nanovllm's CPU backend beside llama.cpp on the same weights (docs/cpu-backend.md's table), with
# the peer tools in ../shared/peers/llamacpp (their README): run-cpu.sh's workloads and its
# results layout, plus nanovllm's int8 weights (--quantization int8) beside llama.cpp's Q8_0.
#
#   scripts/bench-cpu-llamacpp.sh --nanovllm BUILD/nanovllm --hf MODEL_DIR --gguf-dir DIR
#       [--peers DIR] [--lib DIR] [--out DIR] [--reps 3] [--threads "2 1"] [--batched-threads "2"]
#
# DIR holds NAME-f16.gguf and NAME-q8_0.gguf (NAME = MODEL_DIR's basename), as run-cpu.sh's
# convert stage writes them. Each rep runs, for bench1 (1 sequence, 512 prompt tokens, 128 out) at
# each thread count: llama.cpp f16, nanovllm (checkpoint dtype), llama.cpp Q8_0, nanovllm int8;
# then batched (16 sequences) at each batched thread count: llama.cpp f16, nanovllm. Every run is
# a fresh process under peak_rss.py, with the load average before it in NAME.load.
# summarize.py's table lists nanovllm int8 as engine "nanovllmint8".
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS="$ROOT/../shared/peers/llamacpp" NANOVLLM="" HF="" GGUF="" LIB="" OUT="$PWD/results-cpu18"
REPS=3 THREADS="2 1" BTHREADS="2"
while [ $# -gt 0 ]; do
  case "$1" in
    --nanovllm) NANOVLLM=$2; shift 2 ;;
    --hf) HF=$2; shift 2 ;;
    --gguf-dir) GGUF=$2; shift 2 ;;
    --peers) PEERS=$2; shift 2 ;;
    --lib) LIB=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --batched-threads) BTHREADS=$2; shift 2 ;;
    -h|--help) sed -n 2,14p "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$NANOVLLM" ] && [ -f "$HF/config.json" ] && [ -d "$GGUF" ] || { sed -n 2,14p "$0" >&2; exit 2; }
LIB=${LIB:-$GGUF/../lib/cpu}
NAME=$(basename "$HF")
F16="$GGUF/$NAME-f16.gguf" Q8="$GGUF/$NAME-q8_0.gguf"
mkdir -p "$OUT"
PY=python3
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
run() {  # run NAME CMD...
  local name=$1; shift
  log "$name (load $(cut -d' ' -f1-3 /proc/loadavg))"
  cut -d' ' -f1-3 /proc/loadavg > "$OUT/$name.load"
  $PY "$PEERS/peak_rss.py" --stdout "$OUT/$name.json" --stderr "$OUT/$name.err" --meta "$OUT/$name.meta.json" -- "$@" \
    || log "$name failed (rc $?), see $OUT/$name.err"
}
B1="--num-seqs 1 --min-input 512 --max-input 512 --min-output 128 --max-output 128"
B16="--num-seqs 16 --min-input 100 --max-input 256 --min-output 64 --max-output 128"
for rep in $(seq 1 "$REPS"); do
  for t in $THREADS; do
    run "r${rep}_llamacpp_bench1-t$t" $PY "$PEERS/lcpp.py" bench1 --lib "$LIB" --model "$F16" --threads "$t" \
        --prompt-len 512 --gen 128
    run "r${rep}_nanovllm_bench1-t$t" "$NANOVLLM" bench --model "$HF" --device cpu --threads "$t" $B1 \
        --temperature 0 --max-model-len 1024 --json
    run "r${rep}_llamacpp_bench1-q8_0-t$t" $PY "$PEERS/lcpp.py" bench1 --lib "$LIB" --model "$Q8" --threads "$t" \
        --prompt-len 512 --gen 128
    run "r${rep}_nanovllmint8_bench1-t$t" "$NANOVLLM" bench --model "$HF" --device cpu --threads "$t" $B1 \
        --temperature 0 --max-model-len 1024 --quantization int8 --json
  done
  for t in $BTHREADS; do
    run "r${rep}_llamacpp_batched-t$t" $PY "$PEERS/lcpp.py" batched --lib "$LIB" --model "$F16" --threads "$t" $B16
    run "r${rep}_nanovllm_batched-t$t" "$NANOVLLM" bench --model "$HF" --device cpu --threads "$t" $B16 \
        --temperature 0 --json
  done
done
$PY "$PEERS/summarize.py" "$OUT" --json "$OUT/summary.json" | tee "$OUT/summary.md"
