// Linear layers over FP8 weights (f8e4m3 with block scales, backend.h's Tensor::scale) under bf16
// activations: out[M, N] = x[M, K] @ w[N, K]^T (or out += with `accumulate`), three ways:
// - M = 1 (batch-1 decode): the skinny GEMM (gemv_fp8.cu), weights dequantized in registers, the
//   activations exact; M = 2..16: its tensor-core form (gemv_fp8_mma.cu; BackendOptions::fp8_mma),
//   as exact, where it takes the shape, else the skinny GEMM up to M = 8;
// - larger M, weights with per-output-channel scales {1, K}: x quantized to e4m3 per row, then
//   cuBLASLt's FP8 GEMM with outer-vector scales (A: the weight's N scales, B: x's M scales);
// - larger M, 128 x 128 block scales: x quantized per row and 128-column group, cuBLASLt's FP8 GEMM
//   with BLK128x128 scales for the weight and VEC128 for x (DeepSeek's and vLLM's scheme);
// anything else (other scale blocks, shapes or layouts cuBLASLt has no algorithm for): the weight
// dequantized into a bf16 scratch buffer and the bf16 Gemm, reported once on stderr. Scale layouts
// and where they come from: docs/cuda.md, "FP8 weight GEMMs".
//
// Graph capture: the quantized activations, their scales and the fallback's bf16 weight live in
// buffers that grow only outside a capture (the engine runs every shape eagerly before it
// captures: the memory profile's prefill, then one warm-up forward per graph size); a call that
// would need to grow one while capturing throws, naming the buffer and the sizes.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "backend/allocation_tracker.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/kernels.h"
#include "backend/tensor.h"

namespace nanovllm::cuda {

class Fp8Gemm {
 public:
  // bf16: the backend's bf16 GEMM (the fallback's); tracker: counts this class's buffers in the
  // backend's peak. The caller provides the workspace (it may be the bf16 Gemm's: one stream).
  Fp8Gemm(Gemm& bf16, AllocationTracker* tracker);
  ~Fp8Gemm();
  Fp8Gemm(const Fp8Gemm&) = delete;
  Fp8Gemm& operator=(const Fp8Gemm&) = delete;

  void set_workspace(void* ws, size_t bytes) { ws_ = ws; ws_bytes_ = bytes; }
  // out[m, n] (+)= x[m, k] w^T; x bf16, out bf16 or f32.
  void linear(const void* x, const Fp8Weight& w, void* out, int64_t m, int64_t n, int64_t k, DType out_t,
              bool accumulate, cudaStream_t s);

  // Whether a call of m rows takes an exact path (the skinny kernels: activations not quantized):
  // m <= kSkinnyMaxM, or the tensor-core form takes the operands (n: output columns).
  bool exact(const void* x, const Fp8Weight& w, const void* out, int64_t m, int64_t n, int64_t k) const {
    return m <= kSkinnyMaxM || mma(x, w, out, m, n, k);
  }
  // Whether the tensor-core skinny GEMM (gemv_fp8_mma.cu) serves a call of m rows.
  bool mma(const void* x, const Fp8Weight& w, const void* out, int64_t m, int64_t n, int64_t k) const {
    return mma_min_m_ > 0 && m >= mma_min_m_ && m <= kMmaMaxM && fp8_mma_supported(x, w, out, (int)m, (int)n, (int)k);
  }
  // BackendOptions::fp8_mma: the fewest rows the tensor-core form takes (0: none, the one-warp-a-column
  // kernel up to M = 8 and cuBLASLt beyond; 2: M = 2..16; 1: M = 1 too).
  void set_mma(int min_m) { mma_min_m_ = min_m; }

  static constexpr int64_t kSkinnyMaxM = 8;
  static constexpr int64_t kMmaMaxM = 16;

 private:
  enum class Mode { per_channel, block128 };
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool ok = false;  // cuBLASLt has an algorithm; else the fallback
    cublasStatus_t status = CUBLAS_STATUS_SUCCESS;  // the heuristic's, for the report
  };
  using Key = std::tuple<int64_t, int64_t, int64_t, int, bool, int>;  // m, n, k, out_t, accumulate, mode
  // A device buffer that grows (never shrinks: a captured graph may hold an old pointer, so old
  // ones live until this class does).
  struct Buffer {
    void* ptr = nullptr;
    size_t bytes = 0;
    std::vector<void*> all;
  };

  // The plan of a shape: cuBLASLt's candidates timed on the call's operands (q, its scales xs) at
  // the engine's decode sizes that are powers of two up to kTuneMaxM, the plan of the power of two
  // above reused between them, the heuristic's first pick elsewhere (prefill) and under capture.
  Plan& plan_for(int64_t m, int64_t n, int64_t k, DType out_t, bool accumulate, Mode mode, const Fp8Weight& w,
                 const void* q, const float* xs, cudaStream_t s);
  static void set_scale_pointers(Plan& p, const void* a_scale, const void* b_scale);
  void* grow(Buffer& b, size_t want, const char* what, cudaStream_t s);
  bool scaled_gemm(const void* x, const Fp8Weight& w, void* out, int64_t m, int64_t n, int64_t k, DType out_t,
                   bool accumulate, Mode mode, cudaStream_t s, std::string* why);
  void dequantized_gemm(const void* x, const Fp8Weight& w, void* out, int64_t m, int64_t n, int64_t k, DType out_t,
                        bool accumulate, cudaStream_t s);
  void report_fallback(int64_t n, int64_t k, const Fp8Weight& w, const std::string& why);

  Gemm& bf16_;
  int mma_min_m_ = 2;
  AllocationTracker* tracker_;
  cublasLtHandle_t handle_ = nullptr;
  void* ws_ = nullptr;
  size_t ws_bytes_ = 0;
  std::map<Key, Plan> plans_;
  Buffer act_, act_scale_, dequant_, tune_out_;  // tune_out_: where timed candidates write
  static constexpr int64_t kTuneMaxM = 512;
  static constexpr int kCandidates = 16;
  std::set<std::tuple<int64_t, int64_t, int, int>> reported_;  // n, k, scale block: fallbacks reported
};

}  // namespace nanovllm::cuda
