// AllocationTracker: the bytes a backend has handed out, now and at peak (for EngineStats).
#pragma once
#include <algorithm>
#include <cstddef>
#include <mutex>
#include <unordered_map>

namespace nanovllm {

class AllocationTracker {
 public:
  void add(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    sizes_[p] = bytes;
    current_ += bytes;
    peak_ = std::max(peak_, current_);
  }
  // Forgets p (unknown pointers are ignored: the caller frees them all the same).
  void remove(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sizes_.find(p);
    if (it == sizes_.end()) return;
    current_ -= it->second;
    sizes_.erase(it);
  }
  size_t peak() const {
    std::lock_guard<std::mutex> lock(mu_);
    return peak_;
  }

 private:
  mutable std::mutex mu_;
  std::unordered_map<void*, size_t> sizes_;
  size_t current_ = 0, peak_ = 0;
};

}  // namespace nanovllm
