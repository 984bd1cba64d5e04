// One clock for every timestamp the engine, server and bench compare (RequestOutput's times are
// seconds on it): std::chrono::steady_clock, in seconds.
#pragma once
#include <chrono>

namespace nanovllm {
inline double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace nanovllm
