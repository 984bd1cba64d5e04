// ThreadPool: fork-join over persistent workers with spin-then-futex waiting.
#include "backend/cpu/thread_pool.h"

#include <immintrin.h>

#include <algorithm>

namespace nanovllm::cpu {
namespace {
// About 10-20 us of polling before sleeping: long enough to catch the next op of a forward on an
// idle machine, short enough not to steal a busy machine's cores.
constexpr int kSpins = 4000;
}  // namespace

ThreadPool::ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
  for (int i = 1; i < num_threads_; ++i) threads_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::worker(int id) {
  uint32_t seen = 0;
  for (;;) {
    for (int i = 0; i < kSpins && generation_.load(std::memory_order_acquire) == seen; ++i) _mm_pause();
    uint32_t g;
    while ((g = generation_.load(std::memory_order_acquire)) == seen) generation_.wait(seen);
    seen = g;
    if (stop_.load()) return;
    // Every worker checks in on every run, busy or not, so none can lag into the next run.
    if (id < parts_) {
      try {
        (*job_)(id);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mu_);
        if (!error_) error_ = std::current_exception();
      }
    }
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
  }
}

void ThreadPool::run(int parts, FunctionRef<void(int)> job) {
  parts = std::min(parts, num_threads_);
  if (parts <= 1) {
    job(0);
    return;
  }
  std::lock_guard<std::mutex> lock(run_mu_);
  job_ = &job;
  parts_ = parts;
  error_ = nullptr;
  pending_.store(num_threads_ - 1, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  std::exception_ptr mine;
  try {
    job(0);
  } catch (...) {
    mine = std::current_exception();
  }
  for (int i = 0; i < kSpins && pending_.load(std::memory_order_acquire) != 0; ++i) _mm_pause();
  int p;
  while ((p = pending_.load(std::memory_order_acquire)) != 0) pending_.wait(p);
  if (mine) std::rethrow_exception(mine);
  if (error_) std::rethrow_exception(error_);
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(num_threads_, n / std::max<int64_t>(1, grain)));
  if (parts == 1) {
    fn(0, n);
    return;
  }
  run(static_cast<int>(parts), [&](int part) {
    const int64_t begin = n * part / parts, end = n * (part + 1) / parts;
    if (begin < end) fn(begin, end);
  });
}

void ThreadPool::parallel_for_dynamic(int64_t n, FunctionRef<void(int64_t)> fn) {
  if (n <= 0) return;
  if (n == 1 || num_threads_ == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<int64_t> next{0};
  run(static_cast<int>(std::min<int64_t>(num_threads_, n)), [&](int) {
    for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < n;) fn(i);
  });
}

}  // namespace nanovllm::cpu
