// Error checks for CUDA runtime and cuBLASLt calls: a failure throws std::runtime_error naming
// the op that was running and CUDA's own message, so an engine step reports where it broke.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace nanovllm::cuda {

[[noreturn]] inline void throw_cuda(const char* op, const char* what, cudaError_t e) {
  throw std::runtime_error(std::string("CUDA backend, op '") + op + "': " + what + " failed: " +
                           cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

inline void check(cudaError_t e, const char* op, const char* what) {
  if (e != cudaSuccess) throw_cuda(op, what, e);
}

inline void check_cublas(cublasStatus_t s, const char* op, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("CUDA backend, op '") + op + "': " + what +
                             " failed: cuBLASLt status " + std::to_string(static_cast<int>(s)));
}

}  // namespace nanovllm::cuda
