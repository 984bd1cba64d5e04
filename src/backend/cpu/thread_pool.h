// ThreadPool: the CPU backend's worker threads. Not OpenMP: libgomp's workers spin-wait at
// barriers by default, which on a busy 2-core machine made small forwards ~25x slower (see
// docs/cpu-backend.md); these spin briefly, then sleep on a futex (std::atomic::wait).
#pragma once
#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace nanovllm::cpu {

// A non-owning reference to a callable: unlike std::function it never allocates, so ops that
// hand lambdas to the pool keep the forward allocation-free.
template <class Sig> class FunctionRef;
template <class R, class... A>
class FunctionRef<R(A...)> {
 public:
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef>>>
  FunctionRef(F&& f)  // NOLINT: implicit, like std::function
      : obj_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* o, A... a) -> R { return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<A>(a)...); }) {}
  R operator()(A... a) const { return call_(obj_, std::forward<A>(a)...); }

 private:
  void* obj_;
  R (*call_)(void*, A...);
};

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);  // threads in all, the calling thread included
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return num_threads_; }
  // fn(begin, end) over [0, n) in at most size() contiguous parts of at least `grain` items.
  void parallel_for(int64_t n, int64_t grain, FunctionRef<void(int64_t, int64_t)> fn);
  // fn(i) for each i in [0, n); threads take the next index as they finish (for uneven items).
  void parallel_for_dynamic(int64_t n, FunctionRef<void(int64_t)> fn);
  // job(part) for each part in [0, parts), parts <= size(); part 0 runs on the caller.
  void run(int parts, FunctionRef<void(int)> job);

 private:
  void worker(int id);

  const int num_threads_;
  std::vector<std::thread> threads_;
  std::mutex run_mu_;  // one run at a time
  const FunctionRef<void(int)>* job_ = nullptr;
  int parts_ = 0;
  std::atomic<uint32_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;
  std::mutex error_mu_;
};

}  // namespace nanovllm::cpu
