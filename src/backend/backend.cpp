// make_backend: makes the CPU or CUDA backend; BackendOptions from the environment's switches.
#include "backend/backend.h"

#include <stdexcept>

#include "backend/cpu/cpu_backend.h"
#ifdef NANOVLLM_WITH_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace nanovllm {

bool cuda_available(std::string* why) {
#ifdef NANOVLLM_WITH_CUDA
  return cuda_device_usable(why);
#else
  if (why) *why = "this build of nanovllm has no CUDA backend (nvcc was not found when it was built)";
  return false;
#endif
}

int cuda_device_count() {
#ifdef NANOVLLM_WITH_CUDA
  return cuda_available() ? cuda_visible_devices() : 0;
#else
  return 0;
#endif
}

BackendOptions BackendOptions::with_env(const EnvOptions& env) const {
  BackendOptions o = *this;
  o.nccl_library = env.nccl_library;
  o.cuda_sync = env.cuda_sync;
  o.decode_partition = env.decode_partition;
  o.pdl = env.pdl;
  o.fuse_rope = env.fuse_rope;
  o.fp8_mma = env.fp8_mma;
  o.gemm_tune_all = env.gemm_tune_all;
  o.cpu_isa = env.cpu_isa;
  return o;
}

std::unique_ptr<Backend> make_backend(DeviceKind device, const BackendOptions& opts) {
  if (device == DeviceKind::cpu) return make_cpu_backend(opts);
  std::string why;
  if (!cuda_available(&why)) throw std::runtime_error("--device cuda: no usable GPU: " + why);
#ifdef NANOVLLM_WITH_CUDA
  return make_cuda_backend(opts);
#else
  throw std::logic_error("cuda_available() without the CUDA backend built in");
#endif
}

}  // namespace nanovllm
