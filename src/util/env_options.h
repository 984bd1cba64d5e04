// EnvOptions: the environment variables nanovllm reads, read and checked in one place. They are
// measurement and debugging switches, not configuration: a run is configured by EngineConfig and
// the command line. The backend never reads the environment; its knobs reach it as
// BackendOptions fields, filled from here by whoever makes the backend.
#pragma once
#include <string>

namespace nanovllm {

struct EnvOptions {
  bool cuda_sync = false;      // NANOVLLM_CUDA_SYNC (set, not "0"): every CUDA op waits for its kernels
  int decode_partition = 0;    // NANOVLLM_DECODE_PARTITION: tokens per decode split; 0 = the backend's
  bool pdl = true;             // NANOVLLM_PDL ("0" turns it off): CUDA kernels overlap the one before them
  bool fuse_rope = true;       // NANOVLLM_FUSE_ROPE ("0" turns it off): CUDA decode attention does the RoPE/KV store
  // NANOVLLM_FP8_MMA: the fewest rows CUDA's FP8 weights go to tensor cores at (up to 16): "0"
  // never (the one-warp-a-column kernel and cuBLASLt, for A/Bs), "all" from 1, else (unset) from 2.
  int fp8_mma = 2;
  bool gemm_tune_all = false;  // NANOVLLM_GEMM_TUNE_ALL ("1"): time GEMM candidates at every decode size
  std::string step_trace;      // NANOVLLM_STEP_TRACE: a CSV file for one line per engine step; empty = none
  std::string cpu_isa;         // NANOVLLM_CPU_ISA: the CPU kernels' instruction set, avx2 or avx512; empty = the best there is
  std::string worker;          // NANOVLLM_WORKER: the nanovllm executable tensor-parallel workers run as; empty = found
  std::string nccl_library;    // NANOVLLM_NCCL_LIBRARY: libnccl.so.2's path when the usual places lack it
};

// The process's options, read on the first call. Throws std::invalid_argument naming the
// variable and its value when one cannot be parsed.
const EnvOptions& env_options();
// Reads the environment now (what env_options() caches; tests call it after setenv).
EnvOptions read_env_options();

}  // namespace nanovllm
