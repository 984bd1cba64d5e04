// WorkPool: a locked queue and its threads.
#include "server/work_pool.h"

#include <cstdio>
#include <exception>

namespace nanovllm::server {

WorkPool::WorkPool(int threads) {
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

WorkPool::~WorkPool() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void WorkPool::post(std::function<void()> job) {
  {
    std::lock_guard lk(mu_);
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

size_t WorkPool::queued() const {
  std::lock_guard lk(mu_);
  return jobs_.size();
}

void WorkPool::run() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    try {
      job();
    } catch (const std::exception& e) {  // a job answers its own errors; this is a last resort
      std::fprintf(stderr, "nanovllm serve: work failed: %s\n", e.what());
    }
  }
}

}  // namespace nanovllm::server
