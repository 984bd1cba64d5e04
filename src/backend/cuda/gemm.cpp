// cuBLASLt linear layers with a per-shape plan cache (see gemm.h).
#include "backend/cuda/gemm.h"

#include <stdexcept>
#include <string>

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

Gemm::Gemm() { check_cublas(cublasLtCreate(&handle_), "linear", "cublasLtCreate"); }

Gemm::~Gemm() {
  for (auto& [key, p] : plans_) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.op);
  }
  if (handle_) cublasLtDestroy(handle_);
}

// cuBLAS is column-major: there row-major w [N, K] is a K x N matrix (ld K), used transposed;
// x [M, K] is K x M (ld K); out [M, N] is N x M (ld N). So out^T = w x^T needs no copies.
Gemm::Plan& Gemm::plan_for(int64_t m, int64_t n, int64_t k, DType in_t, DType out_t, const void* x, const void* w,
                           void* out, cudaStream_t s) {
  Key key{m, n, k, static_cast<int>(in_t), static_cast<int>(out_t)};
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  Plan p;
  const cudaDataType_t ab = cuda_type(in_t), c = cuda_type(out_t);
  const cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  check_cublas(cublasLtMatmulDescCreate(&p.op, compute, CUDA_R_32F), "linear", "cublasLtMatmulDescCreate");
  cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  check_cublas(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "linear", "set TRANSA");
  check_cublas(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "linear", "set TRANSB");
  check_cublas(cublasLtMatrixLayoutCreate(&p.a, ab, k, n, k), "linear", "layout w");
  check_cublas(cublasLtMatrixLayoutCreate(&p.b, ab, k, m, k), "linear", "layout x");
  check_cublas(cublasLtMatrixLayoutCreate(&p.c, c, n, m, n), "linear", "layout out");

  cublasLtMatmulPreference_t pref;
  check_cublas(cublasLtMatmulPreferenceCreate(&pref), "linear", "preference");
  size_t ws = ws_bytes_;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  check(cudaStreamIsCapturing(s, &capturing), "linear", "cudaStreamIsCapturing");
  // Tune the decode batch sizes (the engine's graph sizes: 1, 2, 4, 8, then multiples of 16),
  // not every prefill length: each tuning costs a few milliseconds once per shape.
  const bool tune = m <= kTuneMaxM && (m <= 8 || m % 16 == 0) && capturing == cudaStreamCaptureStatusNone;
  cublasLtMatmulHeuristicResult_t res[kCandidates];
  int found = 0;
  cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.c, p.c, pref, tune ? kCandidates : 1, res, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0)
    throw std::runtime_error("linear: cuBLASLt has no algorithm for x [" + std::to_string(m) + ", " +
                             std::to_string(k) + "] @ w [" + std::to_string(n) + ", " + std::to_string(k) + "]^T (" +
                             dtype_name(in_t) + " -> " + dtype_name(out_t) + ")");
  p.algo = res[0].algo;
  if (tune) this->tune(p, res, found, x, w, out, m, n, k, in_t, out_t, s);
  return plans_.emplace(key, p).first->second;
}

// Milliseconds for kTimedCalls calls of `call` captured into a CUDA graph and replayed once (after a
// warm-up replay), as the engine runs them: timing eager calls would measure the host's launch
// rate, not the kernels. Negative when the call fails.
float Gemm::time_in_graph(const std::function<bool()>& call, cudaStream_t s) {
  if (!call()) return -1.f;
  if (cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) != cudaSuccess) return -1.f;
  bool ok = true;
  for (int r = 0; r < kTimedCalls && ok; ++r) ok = call();
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ok = cudaStreamEndCapture(s, &graph) == cudaSuccess && ok;
  ok = ok && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
  float ms = -1.f;
  if (ok) {
    cudaEvent_t start, stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    ok = cudaGraphLaunch(exec, s) == cudaSuccess;
    cudaEventRecord(start, s);
    ok = ok && cudaGraphLaunch(exec, s) == cudaSuccess;
    cudaEventRecord(stop, s);
    ok = cudaEventSynchronize(stop) == cudaSuccess && ok;
    if (ok) cudaEventElapsedTime(&ms, start, stop);
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
  if (exec) cudaGraphExecDestroy(exec);
  if (graph) cudaGraphDestroy(graph);
  cudaGetLastError();  // a candidate that failed leaves no error behind
  return ok ? ms : -1.f;
}

// Times cuBLASLt's candidates (and our skinny GEMM where it applies) and keeps the fastest.
void Gemm::tune(Plan& p, const cublasLtMatmulHeuristicResult_t* res, int found, const void* x, const void* w,
                void* out, int64_t m, int64_t n, int64_t k, DType in_t, DType out_t, cudaStream_t s) {
  const float alpha = 1.f, beta = 0.f;
  float best_ms = 1e30f;
  for (int i = 0; i < found; ++i) {
    if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
    const float ms = time_in_graph(
        [&] {
          return cublasLtMatmul(handle_, p.op, &alpha, w, p.a, x, p.b, &beta, out, p.c, out, p.c, &res[i].algo, ws_,
                                ws_bytes_, s) == CUBLAS_STATUS_SUCCESS;
        },
        s);
    if (ms >= 0.f && ms < best_ms) {
      best_ms = ms;
      p.algo = res[i].algo;
    }
  }
  if (gemv_supported(x, w, in_t, out_t, m, k)) {
    const float ms = time_in_graph(
        [&] {
          launch_gemv(x, w, out, out_t, (int)m, (int)n, (int)k, s);
          return true;
        },
        s);
    if (ms >= 0.f && ms < best_ms) p.gemv = true;
  }
  check(cudaStreamSynchronize(s), "linear", "cudaStreamSynchronize (tuning)");
}

void Gemm::linear(const void* x, const void* w, void* out, int64_t m, int64_t n, int64_t k, DType in_t, DType out_t,
                  cudaStream_t s) {
  if (m == 0 || n == 0) return;
  Plan& p = plan_for(m, n, k, in_t, out_t, x, w, out, s);
  if (p.gemv && gemv_supported(x, w, in_t, out_t, m, k)) {
    launch_gemv(x, w, out, out_t, (int)m, (int)n, (int)k, s);
    return;
  }
  const float alpha = 1.f, beta = 0.f;
  check_cublas(cublasLtMatmul(handle_, p.op, &alpha, w, p.a, x, p.b, &beta, out, p.c, out, p.c, &p.algo, ws_,
                              ws_bytes_, s),
               "linear", "cublasLtMatmul");
}

}  // namespace nanovllm::cuda
