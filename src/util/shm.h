// Shared memory between the processes of a tensor-parallel group on one host: a named POSIX
// shared-memory region, and waiting on a 32-bit word in it (a futex: spin briefly, then sleep in
// the kernel until the word changes or a waker calls wake()).
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace nanovllm {

class SharedRegion {
 public:
  SharedRegion() = default;
  // A new region of `bytes` (zero-filled) under a fresh name "/nanovllm-<pid>-<n>-<tag>";
  // throws std::runtime_error naming it when the system refuses.
  static SharedRegion create(const std::string& tag, size_t bytes);
  // Maps the region `name` another process created; throws naming it when absent.
  static SharedRegion open(const std::string& name);
  SharedRegion(SharedRegion&& o) noexcept { *this = std::move(o); }
  SharedRegion& operator=(SharedRegion&& o) noexcept;
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;
  ~SharedRegion();  // unmaps; unlinks the name too if this process created it and has not yet

  // Removes the name (the mapping stays valid): once every process has mapped it, or never.
  void unlink();
  void* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& name() const { return name_; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
  std::string name_;
  bool owner_ = false;
};

// Waits until `word` differs from `old`: spins for about `spin_us` microseconds, then sleeps in
// the kernel, waking at least every 50 ms to call `tick` (which may throw: a peer died, the group
// was aborted). Returns the new value.
uint32_t wait_while_equal(const std::atomic<uint32_t>& word, uint32_t old, const std::function<void()>& tick,
                          int spin_us = 20);
// Wakes every process sleeping on `word` (call after changing it).
void wake_all(std::atomic<uint32_t>& word);

}  // namespace nanovllm
