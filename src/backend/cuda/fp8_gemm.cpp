// FP8-weight linear layers: the skinny kernel, cuBLASLt's scaled FP8 GEMM, the bf16 fallback (see
// fp8_gemm.h).
#include "backend/cuda/fp8_gemm.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <string>

#include "backend/cuda/cublaslt.h"
#include "backend/cuda/cuda_check.h"

namespace nanovllm::cuda {
namespace {

constexpr const char* kOp = "linear (FP8)";

std::string shape_str(int64_t m, int64_t n, int64_t k) {
  return "x [" + std::to_string(m) + ", " + std::to_string(k) + "] @ w [" + std::to_string(n) + ", " +
         std::to_string(k) + "]^T";
}

std::string status_str(cublasStatus_t st) {
  const char* name = cublaslt().GetStatusName(st);
  return std::string(name ? name : "?") + " (" + std::to_string(static_cast<int>(st)) + ")";
}

void check_lt(cublasStatus_t st, const std::string& what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("CUDA backend, op '") + kOp + "': " + what + " failed: cuBLASLt status " +
                             status_str(st));
}

cudaDataType_t out_type(DType t) {
  if (t == DType::bf16) return CUDA_R_16BF;
  if (t == DType::f32) return CUDA_R_32F;
  throw std::invalid_argument(std::string(kOp) + ": output dtype " + dtype_name(t) + " (expected BF16 or F32)");
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

Fp8Gemm::Fp8Gemm(Gemm& bf16, AllocationTracker* tracker) : bf16_(bf16), tracker_(tracker) {
  check_cublas(cublaslt().Create(&handle_), kOp, "cublasLtCreate");
}

Fp8Gemm::~Fp8Gemm() {
  for (auto& [key, p] : plans_) {
    if (p.a) cublaslt().MatrixLayoutDestroy(p.a);
    if (p.b) cublaslt().MatrixLayoutDestroy(p.b);
    if (p.c) cublaslt().MatrixLayoutDestroy(p.c);
    if (p.op) cublaslt().MatmulDescDestroy(p.op);
  }
  for (Buffer* b : {&act_, &act_scale_, &dequant_, &tune_out_})
    for (void* p : b->all) {
      tracker_->remove(p);
      cudaFree(p);
    }
  if (handle_) cublaslt().Destroy(handle_);
}

void* Fp8Gemm::grow(Buffer& b, size_t want, const char* what, cudaStream_t s) {
  if (want <= b.bytes) return b.ptr;
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  check(cudaStreamIsCapturing(s, &st), kOp, "cudaStreamIsCapturing");
  if (st != cudaStreamCaptureStatusNone)
    throw std::runtime_error(std::string("CUDA backend, op '") + kOp + "': the " + what + " buffer would grow from " +
                             std::to_string(b.bytes) + " to " + std::to_string(want) +
                             " bytes during CUDA-graph capture; run this shape once outside a capture first (the "
                             "engine's warm-up does)");
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, want);
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw_cuda(kOp, ("cudaMalloc of " + std::to_string(want) + " bytes for the " + what).c_str(), e);
  }
  tracker_->add(p, want);
  b.all.push_back(p);  // the old buffer stays: a captured graph may hold it
  b.ptr = p;
  b.bytes = want;
  return p;
}

// cuBLAS is column-major: row-major w [N, K] is a K x N matrix (ld K) used transposed ("TN", the
// layout FP8 needs on Hopper), x [M, K] (its e4m3 copy) is K x M (ld K), out [M, N] is N x M (ld N),
// as in gemm.cpp. So cuBLASLt's A is the weight and its B the activations: A's scales are the
// weight's, B's x's.
Fp8Gemm::Plan& Fp8Gemm::plan_for(int64_t m, int64_t n, int64_t k, DType out_t, bool accumulate, Mode mode,
                                  const Fp8Weight& w, const void* q, const float* xs, cudaStream_t s) {
  const void *a_scale = w.scale, *b_scale = xs;
  const Key key{m, n, k, static_cast<int>(out_t), accumulate, static_cast<int>(mode)};
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  check(cudaStreamIsCapturing(s, &capturing), kOp, "cudaStreamIsCapturing");
  const bool decode_size = m <= kTuneMaxM && (m <= 8 || m % 16 == 0);
  const bool pow2 = (m & (m - 1)) == 0;
  const Plan* above = nullptr;
  if (decode_size && !pow2) {
    int64_t p2 = 1;
    while (p2 < m) p2 <<= 1;
    auto a = plans_.find(Key{p2, n, k, static_cast<int>(out_t), accumulate, static_cast<int>(mode)});
    if (a != plans_.end() && a->second.ok) above = &a->second;
  }
  const bool tune = decode_size && !above && capturing == cudaStreamCaptureStatusNone;
  Plan p;
  const std::string where = shape_str(m, n, k);
  check_lt(cublaslt().MatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate for " + where);
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  check_lt(cublaslt().MatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "set TRANSA");
  check_lt(cublaslt().MatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "set TRANSB");
  const int32_t a_mode = mode == Mode::per_channel ? CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F
                                                   : CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
  const int32_t b_mode = mode == Mode::per_channel ? CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F
                                                   : CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  // A library without these modes says so here: the shape takes the fallback.
  p.status = cublaslt().MatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &a_mode, sizeof(a_mode));
  if (p.status == CUBLAS_STATUS_SUCCESS)
    p.status = cublaslt().MatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &b_mode, sizeof(b_mode));
  // The scale pointers are in place before the heuristic, as NVIDIA's samples and TransformerEngine
  // do (a null one may read as "no scaling"); each call sets its own again (scaled_gemm).
  set_scale_pointers(p, a_scale, b_scale);
  check_lt(cublaslt().MatrixLayoutCreate(&p.a, CUDA_R_8F_E4M3, k, n, k), "layout w for " + where);
  check_lt(cublaslt().MatrixLayoutCreate(&p.b, CUDA_R_8F_E4M3, k, m, k), "layout x for " + where);
  check_lt(cublaslt().MatrixLayoutCreate(&p.c, out_type(out_t), n, m, n), "layout out for " + where);
  if (p.status == CUBLAS_STATUS_SUCCESS) {
    cublasLtMatmulPreference_t pref = nullptr;
    check_lt(cublaslt().MatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
    size_t ws = ws_bytes_;
    cublaslt().MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    cublasLtMatmulHeuristicResult_t res[kCandidates];
    int found = 0;
    p.status = cublaslt().MatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.c, p.c, pref, tune ? kCandidates : 1, res,
                                              &found);
    cublaslt().MatmulPreferenceDestroy(pref);
    if (p.status == CUBLAS_STATUS_SUCCESS && found > 0 && res[0].state == CUBLAS_STATUS_SUCCESS) {
      p.ok = true;
      p.algo = res[0].algo;
      cublasLtMatmulHeuristicResult_t check_res{};
      if (above && cublaslt().MatmulAlgoCheck(handle_, p.op, p.a, p.b, p.c, p.c, &above->algo, &check_res) ==
                       CUBLAS_STATUS_SUCCESS)
        p.algo = above->algo;
      if (tune && found > 1) {
        // The heuristic's first pick for these skinny FP8 shapes measured up to 2x slower than the
        // bf16 GEMM it replaces (H100): time every candidate, writing to a scratch output.
        const auto t0 = std::chrono::steady_clock::now();
        void* scratch = grow(tune_out_, static_cast<size_t>(m * n) * dtype_size(out_t), "tuning output", s);
        const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
        std::vector<std::function<bool()>> calls;
        std::vector<int> which;
        for (int i = 0; i < found; ++i) {
          if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
          const cublasLtMatmulAlgo_t* algo = &res[i].algo;
          const cublasLtMatmulDesc_t op = p.op;
          const cublasLtMatrixLayout_t la = p.a, lb = p.b, lc = p.c;
          calls.push_back([=, this] {
            return cublaslt().Matmul(handle_, op, &alpha, w.q, la, q, lb, &beta, scratch, lc, scratch, lc, algo, ws_,
                                  ws_bytes_, s) == CUBLAS_STATUS_SUCCESS;
          });
          which.push_back(i);
        }
        const std::vector<float> ms = bf16_.time_in_graph(calls, s);
        float best = 1e30f;
        for (size_t i = 0; i < ms.size(); ++i)
          if (ms[i] >= 0.f && ms[i] < best) {
            best = ms[i];
            p.algo = res[which[i]].algo;
          }
        check(cudaStreamSynchronize(s), kOp, "cudaStreamSynchronize (tuning)");
        bf16_.add_tuning_seconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
    } else if (p.status == CUBLAS_STATUS_SUCCESS) {
      p.status = found > 0 ? res[0].state : CUBLAS_STATUS_NOT_SUPPORTED;
    }
  }
  return plans_.emplace(key, p).first->second;
}

void Fp8Gemm::set_scale_pointers(Plan& p, const void* a_scale, const void* b_scale) {
  check_lt(cublaslt().MatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale, sizeof(a_scale)),
           "set A_SCALE_POINTER");
  check_lt(cublaslt().MatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale, sizeof(b_scale)),
           "set B_SCALE_POINTER");
}

bool Fp8Gemm::scaled_gemm(const void* x, const Fp8Weight& w, void* out, int64_t m, int64_t n, int64_t k, DType out_t,
                          bool accumulate, Mode mode, cudaStream_t s, std::string* why) {
  // VEC128 scales of the activations are read M-contiguous (offset g * M + r for row r, group g:
  // PyTorch's is_blockwise_1x128_scaling); TransformerEngine pads that M to a multiple of 4. A
  // multiple of 4 rows reads the same either way, so cuBLASLt takes those and the skinny kernel
  // the 1-3 rows left (docs/cuda.md). Outer-vector scales are plain vectors: all rows.
  const int64_t mq = mode == Mode::block128 ? m / 4 * 4 : m;
  const int64_t groups = mode == Mode::block128 ? (k + 127) / 128 : 1;
  auto* q = static_cast<uint8_t*>(grow(act_, static_cast<size_t>(mq * k), "quantized activations", s));
  auto* xs = static_cast<float*>(grow(act_scale_, static_cast<size_t>(mq * groups) * sizeof(float),
                                      "activation scales", s));
  // Quantized first: a plan made now times its candidates on these operands.
  launch_quantize_fp8_rows(x, static_cast<int>(mq), static_cast<int>(k), mode == Mode::block128 ? 128 : 0, q, xs, s);
  Plan& p = plan_for(mq, n, k, out_t, accumulate, mode, w, q, xs, s);
  if (!p.ok) {
    *why = "cuBLASLt has no FP8 algorithm for " + shape_str(mq, n, k) + " -> " + dtype_name(out_t) +
           (mode == Mode::block128 ? " with BLK128x128/VEC128 scales" : " with outer-vector scales") +
           " (status " + status_str(p.status) + ")";
    return false;
  }
  set_scale_pointers(p, w.scale, xs);
  const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
  check_lt(cublaslt().Matmul(handle_, p.op, &alpha, w.q, p.a, q, p.b, &beta, out, p.c, out, p.c, &p.algo, ws_,
                          ws_bytes_, s),
           "cublasLtMatmul (FP8, " + std::string(mode == Mode::block128 ? "128x128 blocks" : "per channel") +
               ") for " + shape_str(mq, n, k) + " -> " + dtype_name(out_t));
  if (mq < m)
    launch_gemv_fp8(static_cast<const char*>(x) + mq * k * 2, w,
                    static_cast<char*>(out) + mq * n * static_cast<int64_t>(dtype_size(out_t)), out_t,
                    static_cast<int>(m - mq), static_cast<int>(n), static_cast<int>(k), accumulate, s);
  return true;
}

void Fp8Gemm::dequantized_gemm(const void* x, const Fp8Weight& w, void* out, int64_t m, int64_t n, int64_t k,
                               DType out_t, bool accumulate, cudaStream_t s) {
  void* wb = grow(dequant_, static_cast<size_t>(n * k) * 2, "dequantized weight (fallback)", s);
  launch_dequantize_fp8(w, static_cast<int>(n), static_cast<int>(k), wb, s);
  bf16_.linear(x, wb, out, m, n, k, DType::bf16, out_t, accumulate, s);
}

void Fp8Gemm::report_fallback(int64_t n, int64_t k, const Fp8Weight& w, const std::string& why) {
  if (!reported_.insert({n, k, w.block_rows, w.block_cols}).second) return;
  std::fprintf(stderr,
               "nanovllm: warning: FP8 weight [%lld, %lld] with %d x %d scale blocks: %s; above %lld rows it is "
               "dequantized to bf16 for the bf16 GEMM instead (correct, slower)\n",
               (long long)n, (long long)k, w.block_rows, w.block_cols, why.c_str(), (long long)kSkinnyMaxM);
}

void Fp8Gemm::linear(const void* x, const Fp8Weight& w, void* out, int64_t m, int64_t n, int64_t k, DType out_t,
                     bool accumulate, cudaStream_t s) {
  if (m == 0 || n == 0) return;
  if (mma(x, w, out, m, n, k)) {
    launch_fp8_mma(x, w, out, out_t, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), accumulate, s);
    return;
  }
  if (m <= kSkinnyMaxM) {
    launch_gemv_fp8(x, w, out, out_t, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), accumulate, s);
    return;
  }
  // {1, K}: one scale a row (a per-tensor checkpoint's scale repeated by the loader counts too).
  const bool per_channel = w.block_rows == 1 && w.scale_cols == 1;
  const bool block128 = w.block_rows == 128 && w.block_cols == 128;
  std::string why;
  if (!per_channel && !block128) {
    why = "cuBLASLt has no scale mode for these blocks (it takes per-channel {1, K} and {128, 128})";
  } else if (block128 && (n % 128 != 0 || k % 512 != 0)) {
    // Whole blocks only: TransformerEngine (whose GEMM-ready block scales these are) requires them,
    // PyTorch's checks allow partial ones; cuBLASLt's handling of a partial block is unverified.
    // And a block row of scales 16-byte aligned (PyTorch: "16-byte aligned strides";
    // TransformerEngine pads it to 4 floats): K / 128 a multiple of 4. Every Qwen3 N and K passes.
    why = "cuBLASLt's 128 x 128 path is used for N % 128 == 0 and K % 512 == 0 only (whole blocks, block rows of "
          "scales a multiple of 4)";
  } else if (k % 16 != 0 || !aligned16(x) || !aligned16(w.q)) {
    why = "cuBLASLt's FP8 GEMM needs K % 16 == 0 and 16-byte aligned x and w";
  } else if (scaled_gemm(x, w, out, m, n, k, out_t, accumulate, per_channel ? Mode::per_channel : Mode::block128, s,
                         &why)) {
    return;
  }
  report_fallback(n, k, w, why);
  dequantized_gemm(x, w, out, m, n, k, out_t, accumulate, s);
}

}  // namespace nanovllm::cuda
