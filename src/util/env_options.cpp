// Reads and checks the NANOVLLM_* environment variables (see env_options.h).
#include "util/env_options.h"

#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace nanovllm {
namespace {

// The variable's value, or nullptr when it is unset or empty.
const char* get(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

// A whole non-negative decimal number; throws naming the variable otherwise. Its range is for
// the component that uses it to check (the CUDA backend knows its split limits).
int get_count(const char* name) {
  const char* v = get(name);
  if (!v) return 0;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*end != '\0' || n < 0 || n > (1 << 30))
    throw std::invalid_argument(std::string(name) + "=" + v + ": expected a non-negative whole number");
  return static_cast<int>(n);
}

}  // namespace

EnvOptions read_env_options() {
  EnvOptions o;
  const char* sync = get("NANOVLLM_CUDA_SYNC");
  o.cuda_sync = sync && std::strcmp(sync, "0") != 0;
  o.decode_partition = get_count("NANOVLLM_DECODE_PARTITION");
  const char* pdl = get("NANOVLLM_PDL");
  o.pdl = !(pdl && std::strcmp(pdl, "0") == 0);
  const char* fuse = get("NANOVLLM_FUSE_ROPE");
  o.fuse_rope = !(fuse && std::strcmp(fuse, "0") == 0);
  const char* mma = get("NANOVLLM_FP8_MMA");
  o.fp8_mma = !mma ? 2 : std::strcmp(mma, "0") == 0 ? 0 : std::strcmp(mma, "all") == 0 ? 1 : 2;
  const char* all = get("NANOVLLM_GEMM_TUNE_ALL");
  o.gemm_tune_all = all && std::strcmp(all, "1") == 0;
  if (const char* path = get("NANOVLLM_STEP_TRACE")) o.step_trace = path;
  if (const char* isa = get("NANOVLLM_CPU_ISA")) {
    if (std::strcmp(isa, "avx2") != 0 && std::strcmp(isa, "avx512") != 0)
      throw std::invalid_argument(std::string("NANOVLLM_CPU_ISA=") + isa + ": expected avx2 or avx512");
    o.cpu_isa = isa;
  }
  if (const char* path = get("NANOVLLM_WORKER")) o.worker = path;
  if (const char* path = get("NANOVLLM_NCCL_LIBRARY")) o.nccl_library = path;
  return o;
}

const EnvOptions& env_options() {
  static const EnvOptions o = read_env_options();
  return o;
}

}  // namespace nanovllm
