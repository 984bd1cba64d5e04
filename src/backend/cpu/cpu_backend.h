// The CPU backend: float32 math over f32/bf16/f16 weights, multi-threaded on its own thread pool (cpu/thread_pool.h).
#pragma once
#include <memory>

#include "backend/backend.h"

namespace nanovllm {
std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& opts);
}  // namespace nanovllm
