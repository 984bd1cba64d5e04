// The CPU backend's weights in their checkpoint's dtype (bf16, f16) and quantized to int8: linear
// on every path (our GEMV kernels in AVX2 and AVX-512, OpenBLAS over converted panels) and the
// embedding, against double-precision references written here; int8 against the exact product
// within the bound its rounding allows.
#include <cblas.h>
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_isa.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/half.h"

namespace nanovllm {
namespace {

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

// The instruction sets this machine can run: avx2 always, avx512 where the CPU has it.
std::vector<std::string> isas() {
  std::vector<std::string> v = {"avx2"};
  if (cpu::detect_isa() == cpu::Isa::avx512) v.push_back("avx512");
  return v;
}

std::unique_ptr<Backend> backend(const std::string& isa) {
  BackendOptions o;
  o.num_threads = 2;
  o.cpu_isa = isa;
  return make_cpu_backend(o);
}

// Weights rounded to a half dtype: the bits, and the values they hold.
struct HalfWeights {
  std::vector<uint16_t> bits;
  std::vector<float> values;
};
HalfWeights round_to(const std::vector<float>& w, DType t) {
  HalfWeights h{std::vector<uint16_t>(w.size()), std::vector<float>(w.size())};
  for (size_t i = 0; i < w.size(); ++i) {
    h.bits[i] = t == DType::bf16 ? f32_to_bf16(w[i]) : f32_to_f16(w[i]);
    h.values[i] = t == DType::bf16 ? bf16_to_f32(h.bits[i]) : f16_to_f32(h.bits[i]);
  }
  return h;
}

// Shapes: rows 1..kHalfGemvRows take the GEMV kernels (blocks of 4 rows and the 1-3 rows left),
// more take OpenBLAS over blocks of converted weights (K past 1024: blocks added along K); N not a
// multiple of the kernels' 2 or 4 weight rows, K with and without tails past the 16/32-value blocks.
const int kShapes[][3] = {{1, 7, 5},   {1, 64, 1024}, {2, 33, 17},   {3, 9, 64},   {4, 2, 40},
                          {5, 65, 130}, {8, 31, 96},  {9, 50, 70},   {16, 13, 33}, {40, 96, 200},
                          {20, 37, 2500}};

TEST(CpuHalfWeights, LinearMatchesDoubleReferenceOnEveryPath) {
  for (const std::string& isa : isas())
    for (DType t : {DType::bf16, DType::f16}) {
      auto be = backend(isa);
      uint32_t seed = 1;
      for (auto [M, N, K] : kShapes) {
        SCOPED_TRACE(isa + " " + dtype_name(t) + " M=" + std::to_string(M) + " N=" + std::to_string(N) +
                     " K=" + std::to_string(K));
        auto x = randn(size_t(M) * K, seed++);
        HalfWeights w = round_to(randn(size_t(N) * K, seed++), t);
        std::vector<float> out(size_t(M) * N, -1.0f), added = randn(size_t(M) * N, seed++);
        const std::vector<float> before = added;
        Tensor o(out.data(), DType::f32, {M, N}), a(added.data(), DType::f32, {M, N});
        const Tensor xt(x.data(), DType::f32, {M, K}), wt(w.bits.data(), t, {N, K});
        be->linear(xt, wt, o);
        be->linear_add(xt, wt, a);
        for (int m = 0; m < M; ++m)
          for (int n = 0; n < N; ++n) {
            double ref = 0, mag = 0;
            for (int k = 0; k < K; ++k) {
              ref += double(x[m * K + k]) * w.values[n * K + k];
              mag += std::abs(double(x[m * K + k]) * w.values[n * K + k]);
            }
            ASSERT_NEAR(out[m * N + n], ref, 1e-5 * mag + 1e-6) << m << "," << n;
            ASSERT_NEAR(added[m * N + n], before[m * N + n] + ref, 1e-5 * (mag + 1) + 1e-6) << m << "," << n;
          }
      }
    }
}

TEST(CpuHalfWeights, EmbeddingReadsHalfTables) {
  auto be = backend("");
  const int V = 11, H = 37;
  for (DType t : {DType::bf16, DType::f16}) {
    HalfWeights tab = round_to(randn(size_t(V) * H, 3), t);
    std::vector<int32_t> ids = {4, 0, 10, 4};
    std::vector<float> out(ids.size() * H);
    Tensor o(out.data(), DType::f32, {int64_t(ids.size()), H});
    be->embedding(Tensor(ids.data(), DType::i32, {int64_t(ids.size())}), Tensor(tab.bits.data(), t, {V, H}), o, 2.0f);
    for (size_t r = 0; r < ids.size(); ++r)
      for (int h = 0; h < H; ++h) ASSERT_EQ(out[r * H + h], 2.0f * tab.values[ids[r] * H + h]) << dtype_name(t);
  }
}

// ---- int8 ----
// Quantizes w [N, K] into int8 rows on the backend (upload_convert into an i8 tensor).
std::vector<int8_t> quantize(Backend& be, const std::vector<float>& w, int N, int K) {
  std::vector<int8_t> q(size_t(N) * (K + kI8RowTail));
  Tensor dst(q.data(), DType::i8, {N, K + kI8RowTail});
  be.upload_convert(Tensor(const_cast<float*>(w.data()), DType::f32, {N, K}), dst);
  return q;
}
float row_scale(const std::vector<int8_t>& q, int n, int K) {
  float s;
  std::memcpy(&s, &q[size_t(n) * (K + kI8RowTail) + K], 4);
  return s;
}

// Each row: scale = max |w| / 127, q = w / scale rounded to nearest (so |w - scale q| <= scale / 2),
// |q| <= 127, and the tail's sum is the sum of q.
TEST(CpuInt8Weights, QuantizationFollowsTheRule) {
  auto be = backend("");
  const int N = 9, K = 70;
  auto w = randn(size_t(N) * K, 7);
  for (int k = 0; k < K; ++k) w[3 * K + k] = 0.0f;  // an all-zero row: scale 0, every q 0
  w[5 * K + 2] = -4.0f;                             // a row whose largest magnitude is negative
  const std::vector<int8_t> q = quantize(*be, w, N, K);
  for (int n = 0; n < N; ++n) {
    float mx = 0;
    for (int k = 0; k < K; ++k) mx = std::max(mx, std::abs(w[n * K + k]));
    const float s = row_scale(q, n, K);
    EXPECT_EQ(s, mx / 127.0f) << n;
    int32_t sum = 0, stored_sum;
    for (int k = 0; k < K; ++k) {
      const int8_t v = q[size_t(n) * (K + kI8RowTail) + k];
      sum += v;
      ASSERT_LE(std::abs(int(v)), 127);
      ASSERT_LE(std::abs(w[n * K + k] - s * v), s / 2 * (1 + 1e-5f) + 1e-12f) << n << "," << k;
    }
    std::memcpy(&stored_sum, &q[size_t(n) * (K + kI8RowTail) + K + 4], 4);
    EXPECT_EQ(stored_sum, sum) << n;
  }
  EXPECT_EQ(q[size_t(5) * (K + kI8RowTail) + 2], -127);
}

// Few rows: int8 x int8 with x quantized per row at run time. The result is within the bound the
// two roundings allow of the exact product: |x - x^| <= sx / 2 and |w - w^| <= sw / 2 elementwise,
// so |x.w - x^.w^| <= sum_k |x_k| sw / 2 + sx / 2 (|w_k| + sw / 2). Many rows: OpenBLAS over the
// dequantized weights (sw q), float32 activations: the product of x with w^ to float rounding.
// And the AVX2 and AVX-512 kernels compute the same integer sums, so they agree to float rounding.
TEST(CpuInt8Weights, LinearWithinTheQuantizationBound) {
  std::vector<std::vector<float>> by_isa;
  for (const std::string& isa : isas()) {
    auto be = backend(isa);
    uint32_t seed = 11;
    std::vector<float> all;
    for (auto [M, N, K] : {std::array{1, 7, 5}, std::array{1, 64, 1024}, std::array{2, 33, 130},
                           std::array{4, 9, 64}, std::array{7, 31, 200}, std::array{16, 13, 97},
                           std::array{17, 20, 70}, std::array{40, 96, 200}, std::array{18, 21, 2100}}) {
      SCOPED_TRACE(isa + " M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K));
      auto x = randn(size_t(M) * K, seed++), w = randn(size_t(N) * K, seed++, 0.05f);
      const std::vector<int8_t> q = quantize(*be, w, N, K);
      std::vector<float> out(size_t(M) * N), added = randn(size_t(M) * N, seed++);
      const std::vector<float> before = added;
      Tensor o(out.data(), DType::f32, {M, N}), a(added.data(), DType::f32, {M, N});
      const Tensor xt(x.data(), DType::f32, {M, K}), wt(const_cast<int8_t*>(q.data()), DType::i8, {N, K + kI8RowTail});
      be->linear(xt, wt, o);
      be->linear_add(xt, wt, a);
      const bool gemv = M <= cpu::kInt8GemvRows;
      for (int m = 0; m < M; ++m) {
        float xmax = 0;
        for (int k = 0; k < K; ++k) xmax = std::max(xmax, std::abs(x[m * K + k]));
        const double sx = xmax / 127.0;
        for (int n = 0; n < N; ++n) {
          const double sw = row_scale(q, n, K);
          double exact = 0, deq = 0, bound = 0, mag = 0;
          for (int k = 0; k < K; ++k) {
            const double xv = x[m * K + k], wv = w[n * K + k];
            const double wq = sw * q[size_t(n) * (K + kI8RowTail) + k];
            exact += xv * wv;
            deq += xv * wq;
            mag += std::abs(xv * wq);
            bound += std::abs(xv) * sw / 2 + sx / 2 * (std::abs(wv) + sw / 2);
          }
          if (gemv) ASSERT_NEAR(out[m * N + n], exact, bound * 1.001 + 1e-6) << m << "," << n;
          else ASSERT_NEAR(out[m * N + n], deq, 1e-5 * mag + 1e-6) << m << "," << n;
          ASSERT_NEAR(added[m * N + n] - before[m * N + n], out[m * N + n], 1e-5 * (std::abs(before[m * N + n]) + 1))
              << "linear_add " << m << "," << n;
        }
      }
      all.insert(all.end(), out.begin(), out.end());
    }
    by_isa.push_back(all);
  }
  for (size_t i = 1; i < by_isa.size(); ++i)
    for (size_t j = 0; j < by_isa[0].size(); ++j)
      ASSERT_NEAR(by_isa[i][j], by_isa[0][j], 1e-6 * (1 + std::abs(by_isa[0][j]))) << "avx512 vs avx2 at " << j;
}

TEST(CpuInt8Weights, EmbeddingDequantizesRows) {
  auto be = backend("");
  const int V = 6, H = 21;
  auto w = randn(size_t(V) * H, 5);
  const std::vector<int8_t> q = quantize(*be, w, V, H);
  std::vector<int32_t> ids = {5, 1};
  std::vector<float> out(ids.size() * H);
  Tensor o(out.data(), DType::f32, {2, H});
  be->embedding(Tensor(ids.data(), DType::i32, {2}), Tensor(const_cast<int8_t*>(q.data()), DType::i8, {V, H + kI8RowTail}),
                o);
  for (int r = 0; r < 2; ++r)
    for (int h = 0; h < H; ++h)
      ASSERT_EQ(out[r * H + h], row_scale(q, ids[r], H) * q[size_t(ids[r]) * (H + kI8RowTail) + h]);
}

// The contract: mixed weights only under f32 activations, int8 rows of the right width, int8
// quantization only where the backend takes it.
TEST(CpuInt8Weights, ContractChecksShapesAndDtypes) {
  auto be = backend("");
  std::vector<float> x(2 * 8), out(2 * 3);
  std::vector<int8_t> q(3 * (8 + kI8RowTail));
  Tensor o(out.data(), DType::f32, {2, 3});
  EXPECT_NO_THROW(be->linear(Tensor(x.data(), DType::f32, {2, 8}), Tensor(q.data(), DType::i8, {3, 8 + kI8RowTail}), o));
  EXPECT_THROW(be->linear(Tensor(x.data(), DType::f32, {2, 8}), Tensor(q.data(), DType::i8, {3, 8}), o),
               std::invalid_argument);  // no room for the row tail: K would be 0
  std::vector<uint16_t> xb(2 * 8);
  EXPECT_THROW(be->linear(Tensor(xb.data(), DType::bf16, {2, 8}), Tensor(q.data(), DType::i8, {3, 8 + kI8RowTail}), o),
               std::invalid_argument);  // the CPU's activations are f32
  std::vector<float> w(3 * 9);
  Tensor dst(q.data(), DType::i8, {3, 8 + kI8RowTail});
  EXPECT_THROW(be->upload_convert(Tensor(w.data(), DType::f32, {3, 9}), dst), std::invalid_argument);
}

// OpenBLAS's generic fallback kernels (a CPU model it does not know: Debian's 0.3.21 on Emerald
// Rapids picks "Prescott", SSE3) are replaced by the ones the CPU's features call for once a CPU
// backend exists, and the backend's name says which core runs.
TEST(CpuBlas, GenericFallbackKernelsAreRepicked) {
  const auto be = backend("");
  EXPECT_NE(be->name().find("OpenBLAS "), std::string::npos) << be->name();
  if (std::getenv("OPENBLAS_CORETYPE")) GTEST_SKIP() << "OPENBLAS_CORETYPE names the core";
  const std::string core = openblas_get_corename();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
    EXPECT_TRUE(core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids") << core;
  else if (__builtin_cpu_supports("avx2"))
    EXPECT_NE(core, "Prescott");
}

}  // namespace
}  // namespace nanovllm
