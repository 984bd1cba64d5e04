// How much faster could the decode-step projections be with cuBLASLt alone? For the four
// Qwen3-0.6B projection shapes at decode batch sizes, times (weights cold: 28 copies in turn, as
// a step's layers stream them) cuBLASLt's heuristic pick, the best of its first 16 candidates (what
// Gemm's tuning times), the best of up to 128, and those 128 again with split-K 2..16 forced where
// the algorithm allows it. Run on the GPU machine: bench_gemm_search (scripts/device.sh gemmsearch).
#include <cstdio>

#if NANOVLLM_WITH_CUDA
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <random>
#include <vector>

namespace {

#define CK(x)                                                                        \
  do {                                                                               \
    if (!(x)) {                                                                      \
      std::fprintf(stderr, "bench_gemm_search: %s failed at line %d\n", #x, __LINE__); \
      return 1;                                                                      \
    }                                                                                \
  } while (0)

constexpr int kCopies = 28;

struct Shape {
  const char* name;
  int n, k;
};

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("bench_gemm_search: skipped: no CUDA device\n");
    return 0;
  }
  cublasLtHandle_t lt;
  CK(cublasLtCreate(&lt) == CUBLAS_STATUS_SUCCESS);
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  const size_t ws_bytes = 32u << 20;
  void* ws = nullptr;
  CK(cudaMalloc(&ws, ws_bytes) == cudaSuccess);
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 0.02f);

  for (Shape sh : {Shape{"qkv", 4096, 1024}, Shape{"o", 1024, 2048}, Shape{"gate_up", 6144, 1024},
                   Shape{"down", 1024, 3072}}) {
    const size_t wn = (size_t)sh.n * sh.k;
    std::vector<__nv_bfloat16> host(wn);
    for (auto& v : host) v = __float2bfloat16(nd(rng));
    std::vector<void*> w(kCopies);
    for (auto& p : w) {
      CK(cudaMalloc(&p, wn * 2) == cudaSuccess);
      CK(cudaMemcpy(p, host.data(), wn * 2, cudaMemcpyHostToDevice) == cudaSuccess);
    }
    for (int m : {16, 64, 256}) {
      void *x = nullptr, *out = nullptr;
      CK(cudaMalloc(&x, (size_t)m * sh.k * 2) == cudaSuccess);
      CK(cudaMalloc(&out, (size_t)m * sh.n * 2) == cudaSuccess);
      CK(cudaMemset(x, 0, (size_t)m * sh.k * 2) == cudaSuccess);
      cublasLtMatmulDesc_t op;
      CK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS);
      cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
      cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
      cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
      cublasLtMatrixLayout_t a, b, c;
      cublasLtMatrixLayoutCreate(&a, CUDA_R_16BF, sh.k, sh.n, sh.k);
      cublasLtMatrixLayoutCreate(&b, CUDA_R_16BF, sh.k, m, sh.k);
      cublasLtMatrixLayoutCreate(&c, CUDA_R_16BF, sh.n, m, sh.n);
      cublasLtMatmulPreference_t pref;
      cublasLtMatmulPreferenceCreate(&pref);
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof ws_bytes);
      std::vector<cublasLtMatmulHeuristicResult_t> res(128);
      int found = 0;
      cublasLtMatmulAlgoGetHeuristic(lt, op, a, b, c, c, pref, 128, res.data(), &found);
      std::vector<cublasLtMatmulAlgo_t> cands;
      for (int i = 0; i < found; ++i)
        if (res[i].state == CUBLAS_STATUS_SUCCESS) cands.push_back(res[i].algo);
      const size_t heuristic = cands.size();
      // Split-K variants of every candidate that supports it.
      for (size_t i = 0; i < heuristic; ++i) {
        int splitk_ok = 0;
        size_t got = 0;
        cublasLtMatmulAlgoCapGetAttribute(&cands[i], CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &splitk_ok, sizeof splitk_ok, &got);
        if (!splitk_ok) continue;
        for (int sk : {2, 4, 8, 16}) {
          cublasLtMatmulAlgo_t v = cands[i];
          cublasLtMatmulAlgoConfigSetAttribute(&v, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &sk, sizeof sk);
          cublasLtMatmulHeuristicResult_t chk{};
          if (cublasLtMatmulAlgoCheck(lt, op, a, b, c, c, &v, &chk) == CUBLAS_STATUS_SUCCESS &&
              chk.workspaceSize <= ws_bytes)
            cands.push_back(v);
        }
      }
      // Microseconds per call: kCopies calls (one per weight copy) in a graph, replayed 5 times.
      const float alpha = 1.f, beta = 0.f;
      std::vector<float> us(cands.size(), -1.f);
      cudaEvent_t e0, e1;
      cudaEventCreate(&e0);
      cudaEventCreate(&e1);
      for (size_t i = 0; i < cands.size(); ++i) {
        auto call = [&](int l) {
          return cublasLtMatmul(lt, op, &alpha, w[l], a, x, b, &beta, out, c, out, c, &cands[i], ws, ws_bytes, s) ==
                 CUBLAS_STATUS_SUCCESS;
        };
        if (!call(0) || cudaStreamSynchronize(s) != cudaSuccess) continue;
        cudaGraph_t g;
        cudaGraphExec_t ge;
        if (cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) != cudaSuccess) continue;
        bool ok = true;
        for (int l = 0; l < kCopies; ++l) ok = ok && call(l);
        ok = cudaStreamEndCapture(s, &g) == cudaSuccess && ok;
        ok = ok && cudaGraphInstantiate(&ge, g, 0) == cudaSuccess;
        if (!ok) {
          cudaGetLastError();
          continue;
        }
        cudaGraphLaunch(ge, s);
        cudaEventRecord(e0, s);
        for (int r = 0; r < 5; ++r) cudaGraphLaunch(ge, s);
        cudaEventRecord(e1, s);
        cudaEventSynchronize(e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        us[i] = ms * 1e3f / (5 * kCopies);
        cudaGraphExecDestroy(ge);
        cudaGraphDestroy(g);
      }
      auto best = [&](size_t from, size_t to) {
        float v = 1e30f;
        for (size_t i = from; i < std::min(to, us.size()); ++i)
          if (us[i] > 0) v = std::min(v, us[i]);
        return v;
      };
      const double mb = wn * 2 / 1e6;
      std::printf("%-8s M=%-4d N=%-5d K=%-5d %5.1f MB: heuristic %6.2f us, best of 16 %6.2f, best of %zu %6.2f, "
                  "with split-K (%zu more) %6.2f us (%.0f GB/s)\n",
                  sh.name, m, sh.n, sh.k, mb, us.empty() ? -1.f : us[0], best(0, 16), heuristic,
                  best(0, heuristic), cands.size() - heuristic, best(0, cands.size()),
                  mb * 1e3 / best(0, cands.size()));
      std::fflush(stdout);
      cudaEventDestroy(e0);
      cudaEventDestroy(e1);
      cublasLtMatmulPreferenceDestroy(pref);
      cublasLtMatrixLayoutDestroy(a);
      cublasLtMatrixLayoutDestroy(b);
      cublasLtMatrixLayoutDestroy(c);
      cublasLtMatmulDescDestroy(op);
      cudaFree(x);
      cudaFree(out);
    }
    for (void* p : w) cudaFree(p);
  }
  cudaFree(ws);
  cublasLtDestroy(lt);
  return 0;
}

#else
int main() {
  std::printf("bench_gemm_search: skipped: built without CUDA\n");
  return 0;
}
#endif
