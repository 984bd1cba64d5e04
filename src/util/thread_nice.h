// Making the calling thread nicer (lower CPU priority under contention). Linux keeps the nice value
// per thread, and a thread inherits its creator's: threads started after this call get it too.
#pragma once
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>

namespace nanovllm {
// Raises the calling thread's nice value by `by` (at most to 19). Raising needs no privilege;
// lowering would, so a non-positive `by` does nothing. Returns false if the kernel refused.
inline bool raise_thread_nice(int by) {
  if (by <= 0) return true;
  const pid_t tid = gettid();
  const int now = getpriority(PRIO_PROCESS, static_cast<id_t>(tid));  // -1 is also a valid nice value
  return setpriority(PRIO_PROCESS, static_cast<id_t>(tid), std::min(19, now + by)) == 0;
}
}  // namespace nanovllm
