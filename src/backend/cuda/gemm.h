// Linear layers through cuBLASLt: out[M, N] = x[M, K] @ w[N, K]^T (or out += with `accumulate`:
// beta = 1, how a projection adds into the residual stream) with fp32 accumulation. The
// algorithm for each (M, N, K, dtypes) is chosen once and cached, so a step (or a CUDA-graph
// capture) pays no planning after the first call at that shape: for decode batch sizes that are
// powers of two (where the heuristic's first pick often leaves SMs idle) by timing cuBLASLt's
// candidates on the call's own operands (our skinny GEMM, gemv.cu, competing for M <= 8); sizes
// between reuse the plan of the power of two above; prefill sizes take the heuristic's first pick.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <functional>
#include <map>
#include <tuple>
#include <vector>

#include "backend/tensor.h"

namespace nanovllm::cuda {

class Gemm {
 public:
  // Creates the cuBLASLt handle; the caller provides the workspace. tune_all: time candidates at
  // every decode size, not only at powers of two (for measurements).
  explicit Gemm(bool tune_all);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  void set_workspace(void* ws, size_t bytes) { ws_ = ws; ws_bytes_ = bytes; }
  double tuning_seconds() const { return tuning_seconds_; }  // spent timing candidates so far
  // x and w share a dtype (bf16 or f32); out may be bf16 or f32.
  void linear(const void* x, const void* w, void* out, int64_t m, int64_t n, int64_t k, DType in_t, DType out_t,
              bool accumulate, cudaStream_t s);
  // Milliseconds per candidate for kTimedCalls calls of each, captured into a graph and replayed
  // (negative for one that fails); the FP8 GEMM times its candidates with it too.
  std::vector<float> time_in_graph(const std::vector<std::function<bool()>>& calls, cudaStream_t s);
  void add_tuning_seconds(double s) { tuning_seconds_ += s; }

 private:
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool gemv = false;  // our skinny GEMM (gemv.cu) won the timing
  };
  using Key = std::tuple<int64_t, int64_t, int64_t, int, int, bool>;  // m, n, k, in_t, out_t, accumulate
  Plan& plan_for(int64_t m, int64_t n, int64_t k, DType in_t, DType out_t, bool accumulate, const void* x,
                 const void* w, void* out, cudaStream_t s);

  void tune(Plan& p, const cublasLtMatmulHeuristicResult_t* res, int found, const void* x, const void* w, void* out,
            int64_t m, int64_t n, int64_t k, DType in_t, DType out_t, bool accumulate, cudaStream_t s);

  static constexpr int64_t kTuneMaxM = 512;
  static constexpr int kCandidates = 16;
  static constexpr int64_t kBigWeight = 32LL << 20;  // elements of w
  static constexpr int kBigCandidates = 4;
  static constexpr int kTimedCalls = 10;
  cublasLtHandle_t handle_ = nullptr;
  void* ws_ = nullptr;
  size_t ws_bytes_ = 0;
  std::map<Key, Plan> plans_;
  void* saved_ = nullptr;  // an accumulating call's output, saved while its candidates are timed
  size_t saved_bytes_ = 0;
  bool tune_all_ = false;
  double tuning_seconds_ = 0;
};

}  // namespace nanovllm::cuda
