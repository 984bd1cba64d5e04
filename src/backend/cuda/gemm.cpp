// cuBLASLt linear layers with a per-shape plan cache (see gemm.h).
#include "backend/cuda/gemm.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cuda/cublaslt.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"

namespace nanovllm::cuda {
namespace {
cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::bf16: return CUDA_R_16BF;
    case DType::f32: return CUDA_R_32F;
    case DType::f16: return CUDA_R_16F;
    default: break;
  }
  throw std::invalid_argument(std::string("linear: unsupported dtype ") + dtype_name(t));
}
}  // namespace

Gemm::Gemm(bool tune_all) : tune_all_(tune_all) {
  check_cublas(cublaslt().Create(&handle_), "linear", "cublasLtCreate");
}

Gemm::~Gemm() {
  for (auto& [key, p] : plans_) {
    cublaslt().MatrixLayoutDestroy(p.a);
    cublaslt().MatrixLayoutDestroy(p.b);
    cublaslt().MatrixLayoutDestroy(p.c);
    cublaslt().MatmulDescDestroy(p.op);
  }
  if (handle_) cublaslt().Destroy(handle_);
  if (saved_) cudaFree(saved_);
}

// cuBLAS is column-major: there row-major w [N, K] is a K x N matrix (ld K), used transposed;
// x [M, K] is K x M (ld K); out [M, N] is N x M (ld N). So out^T = w x^T needs no copies.
Gemm::Plan& Gemm::plan_for(int64_t m, int64_t n, int64_t k, DType in_t, DType out_t, bool accumulate, const void* x,
                           const void* w, void* out, cudaStream_t s) {
  Key key{m, n, k, static_cast<int>(in_t), static_cast<int>(out_t), accumulate};
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  Plan p;
  const cudaDataType_t ab = cuda_type(in_t), c = cuda_type(out_t);
  const cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  check_cublas(cublaslt().MatmulDescCreate(&p.op, compute, CUDA_R_32F), "linear", "cublasLtMatmulDescCreate");
  cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  check_cublas(cublaslt().MatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "linear", "set TRANSA");
  check_cublas(cublaslt().MatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "linear", "set TRANSB");
  check_cublas(cublaslt().MatrixLayoutCreate(&p.a, ab, k, n, k), "linear", "layout w");
  check_cublas(cublaslt().MatrixLayoutCreate(&p.b, ab, k, m, k), "linear", "layout x");
  check_cublas(cublaslt().MatrixLayoutCreate(&p.c, c, n, m, n), "linear", "layout out");

  cublasLtMatmulPreference_t pref;
  check_cublas(cublaslt().MatmulPreferenceCreate(&pref), "linear", "preference");
  size_t ws = ws_bytes_;
  cublaslt().MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  check(cudaStreamIsCapturing(s, &capturing), "linear", "cudaStreamIsCapturing");
  // Decode batch sizes (the engine's graph sizes: 1, 2, 4, 8, then multiples of 16) are tuned,
  // prefill lengths are not. To keep start-up short only powers of two are timed; a size between
  // takes the plan of the power of two above it (captured first: the engine goes largest first)
  // when that algorithm accepts its shape. Large weights (the lm-head: streaming-bound, where the
  // heuristic's pick is good) are timed only at M <= 8, where the skinny GEMM may win, over fewer
  // candidates: each of their calls takes ~0.1 ms.
  const bool big = n * k > kBigWeight;
  const bool decode_size = big ? m <= 8 : m <= kTuneMaxM && (m <= 8 || m % 16 == 0);
  const bool pow2 = (m & (m - 1)) == 0;
  const Plan* above = nullptr;
  if (decode_size && !pow2 && !tune_all_) {
    int64_t p2 = 1;
    while (p2 < m) p2 <<= 1;
    auto a = plans_.find(Key{p2, n, k, static_cast<int>(in_t), static_cast<int>(out_t), accumulate});
    if (a != plans_.end()) above = &a->second;
  }
  const bool tune = decode_size && !above && capturing == cudaStreamCaptureStatusNone;
  const int candidates = big ? kBigCandidates : kCandidates;
  cublasLtMatmulHeuristicResult_t res[kCandidates];
  int found = 0;
  cublasStatus_t st =
      cublaslt().MatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.c, p.c, pref, tune ? candidates : 1, res, &found);
  cublaslt().MatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0)
    throw std::runtime_error("linear: cuBLASLt has no algorithm for x [" + std::to_string(m) + ", " +
                             std::to_string(k) + "] @ w [" + std::to_string(n) + ", " + std::to_string(k) + "]^T (" +
                             dtype_name(in_t) + " -> " + dtype_name(out_t) + ")");
  p.algo = res[0].algo;
  if (above) {
    cublasLtMatmulHeuristicResult_t check_res{};
    if (above->gemv && gemv_supported(x, w, in_t, out_t, m, k))
      p.gemv = true;
    else if (!above->gemv &&
             cublaslt().MatmulAlgoCheck(handle_, p.op, p.a, p.b, p.c, p.c, &above->algo, &check_res) == CUBLAS_STATUS_SUCCESS)
      p.algo = above->algo;
  }
  if (tune) {
    const auto t0 = std::chrono::steady_clock::now();
    this->tune(p, res, found, x, w, out, m, n, k, in_t, out_t, accumulate, s);
    tuning_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return plans_.emplace(key, p).first->second;
}

// Milliseconds per candidate for kTimedCalls calls, each candidate's calls captured into a CUDA
// graph and replayed (after a warm-up replay) as the engine runs them: timing eager calls would
// measure the host's launch rate, not the kernels. Negative for a candidate that fails.
std::vector<float> Gemm::time_in_graph(const std::vector<std::function<bool()>>& calls, cudaStream_t s) {
  std::vector<float> ms(calls.size(), -1.f);
  cudaEvent_t start = nullptr, stop = nullptr;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  for (size_t i = 0; i < calls.size(); ++i) {
    auto run = [&] {
      try {
        return calls[i]();
      } catch (const std::exception&) {  // a launch that fails must not leave a capture open
        return false;
      }
    };
    if (!run()) continue;
    if (cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) != cudaSuccess) continue;
    bool ok = true;
    for (int r = 0; r < kTimedCalls && ok; ++r) ok = run();
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    ok = cudaStreamEndCapture(s, &graph) == cudaSuccess && ok;
    ok = ok && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
    ok = ok && cudaGraphLaunch(exec, s) == cudaSuccess;
    ok = ok && cudaEventRecord(start, s) == cudaSuccess && cudaGraphLaunch(exec, s) == cudaSuccess &&
         cudaEventRecord(stop, s) == cudaSuccess && cudaEventSynchronize(stop) == cudaSuccess;
    if (ok) cudaEventElapsedTime(&ms[i], start, stop);
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();  // a candidate that failed leaves no error behind
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms;
}

// Times cuBLASLt's candidates (and our skinny GEMM where it applies) and keeps the fastest. The
// timed calls run on the call's own operands; an accumulating call's `out` (the residual stream,
// perhaps a live request's under enforce_eager) is saved first and put back afterwards.
void Gemm::tune(Plan& p, const cublasLtMatmulHeuristicResult_t* res, int found, const void* x, const void* w,
                void* out, int64_t m, int64_t n, int64_t k, DType in_t, DType out_t, bool accumulate, cudaStream_t s) {
  const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
  const size_t out_bytes = (size_t)m * n * dtype_size(out_t);
  if (accumulate && out_bytes > saved_bytes_) {  // kept for the next tuning (the o and down projections: ~1 MB)
    check(cudaStreamSynchronize(s), "linear", "cudaStreamSynchronize (tuning)");
    if (saved_) check(cudaFree(saved_), "linear", "cudaFree");
    saved_ = nullptr;
    check(cudaMalloc(&saved_, out_bytes), "linear", "cudaMalloc (the output saved while tuning)");
    saved_bytes_ = out_bytes;
  }
  if (accumulate)
    check(cudaMemcpyAsync(saved_, out, out_bytes, cudaMemcpyDeviceToDevice, s), "linear", "cudaMemcpyAsync");
  std::vector<std::function<bool()>> calls;
  std::vector<int> which;  // index into res, or -1 for the skinny GEMM
  for (int i = 0; i < found; ++i) {
    if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
    const cublasLtMatmulAlgo_t* algo = &res[i].algo;
    calls.push_back([=, this, &p] {
      return cublaslt().Matmul(handle_, p.op, &alpha, w, p.a, x, p.b, &beta, out, p.c, out, p.c, algo, ws_, ws_bytes_,
                            s) == CUBLAS_STATUS_SUCCESS;
    });
    which.push_back(i);
  }
  if (gemv_supported(x, w, in_t, out_t, m, k)) {
    calls.push_back([=] {
      launch_gemv(x, w, out, out_t, (int)m, (int)n, (int)k, accumulate, s);
      return true;
    });
    which.push_back(-1);
  }
  const std::vector<float> ms = time_in_graph(calls, s);
  if (std::none_of(ms.begin(), ms.end(), [](float v) { return v >= 0.f; }))
    std::fprintf(stderr, "nanovllm: warning: could not time GEMM candidates for [%lld x %lld x %lld]; using "
                 "cuBLASLt's heuristic pick\n", (long long)m, (long long)n, (long long)k);
  float best_ms = 1e30f;
  for (size_t i = 0; i < ms.size(); ++i) {
    if (ms[i] < 0.f || ms[i] >= best_ms) continue;
    best_ms = ms[i];
    p.gemv = which[i] < 0;
    if (!p.gemv) p.algo = res[which[i]].algo;
  }
  if (accumulate)
    check(cudaMemcpyAsync(out, saved_, out_bytes, cudaMemcpyDeviceToDevice, s), "linear", "cudaMemcpyAsync");
  check(cudaStreamSynchronize(s), "linear", "cudaStreamSynchronize (tuning)");
}

void Gemm::linear(const void* x, const void* w, void* out, int64_t m, int64_t n, int64_t k, DType in_t, DType out_t,
                  bool accumulate, cudaStream_t s) {
  if (m == 0 || n == 0) return;
  Plan& p = plan_for(m, n, k, in_t, out_t, accumulate, x, w, out, s);
  if (p.gemv && gemv_supported(x, w, in_t, out_t, m, k)) {
    launch_gemv(x, w, out, out_t, (int)m, (int)n, (int)k, accumulate, s);
    return;
  }
  const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
  check_cublas(cublaslt().Matmul(handle_, p.op, &alpha, w, p.a, x, p.b, &beta, out, p.c, out, p.c, &p.algo, ws_,
                              ws_bytes_, s),
               "linear", "cublasLtMatmul");
}

}  // namespace nanovllm::cuda
