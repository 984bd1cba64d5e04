// The CUDA backend: bf16 storage, fp32 accumulation, cuBLASLt GEMMs, our own paged attention.
// This header is plain C++ (no CUDA headers) so that backend.cpp can include it.
#pragma once
#include <memory>
#include <string>

#include "backend/backend.h"

namespace nanovllm {
bool cuda_device_usable(std::string* why);
int cuda_visible_devices();  // cudaGetDeviceCount
std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& opts);
}  // namespace nanovllm
