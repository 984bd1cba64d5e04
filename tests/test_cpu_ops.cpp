// The CPU backend's ops against naive double-precision references written here: random inputs,
// several shapes, block boundaries, GQA, and prefix-cached prefill equal to a full prefill.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/half.h"
#include "backend/cpu/thread_pool.h"
#include "backend/rng.h"

namespace nanovllm {
namespace {

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

Tensor T32(std::vector<float>& v, std::initializer_list<int64_t> shape) { return Tensor(v.data(), DType::f32, shape); }
Tensor TI(std::vector<int32_t>& v, std::initializer_list<int64_t> shape) { return Tensor(v.data(), DType::i32, shape); }

class CpuOps : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> be = make_cpu_backend(BackendOptions{.num_threads = 2});
};

// ---- linear ----
TEST_F(CpuOps, LinearMatchesDoubleReferenceOnBothGemmPaths) {
  // Rows 1..8 take the AVX2 kernel, more take OpenBLAS; odd N and K exercise the tails.
  const int shapes[][3] = {{1, 7, 5}, {1, 64, 1024}, {3, 33, 17}, {4, 2, 8}, {8, 65, 130}, {9, 50, 70}, {40, 96, 200}};
  uint32_t seed = 1;
  for (auto [M, N, K] : shapes) {
    auto x = randn(size_t(M) * K, seed++), w = randn(size_t(N) * K, seed++);
    std::vector<float> out(size_t(M) * N, -1.0f);
    const std::vector<float> before = randn(size_t(M) * N, seed++);
    std::vector<float> added = before;
    Tensor o = T32(out, {M, N}), a = T32(added, {M, N});
    be->linear(T32(x, {M, K}), T32(w, {N, K}), o);
    be->linear_add(T32(x, {M, K}), T32(w, {N, K}), a);  // out += x w^T: the residual-stream projections
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) {
        double ref = 0, mag = 0;
        for (int k = 0; k < K; ++k) {
          ref += double(x[m * K + k]) * w[n * K + k];
          mag += std::abs(double(x[m * K + k]) * w[n * K + k]);
        }
        ASSERT_NEAR(out[m * N + n], ref, 1e-5 * mag + 1e-6) << "M=" << M << " N=" << N << " K=" << K << " at " << m << "," << n;
        ASSERT_NEAR(added[m * N + n], before[m * N + n] + ref, 1e-5 * (mag + 1) + 1e-6)
            << "linear_add M=" << M << " N=" << N << " K=" << K << " at " << m << "," << n;
      }
  }
}

// The per-row factor of a folded RMSNorm (FoldedNorm): 1 / sqrt(mean(h[t]^2) + eps).
std::vector<double> folded_factors(const std::vector<float>& h, int T, int H, double eps) {
  std::vector<double> f(T);
  for (int t = 0; t < T; ++t) {
    double ss = 0;
    for (int i = 0; i < H; ++i) ss += double(h[t * H + i]) * h[t * H + i];
    f[t] = 1 / std::sqrt(ss / H + eps);
  }
  return f;
}

// ---- norms, activation, gathers ----
TEST_F(CpuOps, RmsNorm) {
  const int T = 5, H = 37;
  const float eps = 1e-6f;
  auto x = randn(T * H, 10), w = randn(H, 12);
  std::vector<float> out(T * H);
  Tensor o = T32(out, {T, H});
  be->rms_norm(T32(x, {T, H}), T32(w, {H}), eps, o);
  for (int t = 0; t < T; ++t) {
    double ss = 0;
    for (int i = 0; i < H; ++i) ss += double(x[t * H + i]) * x[t * H + i];
    for (int i = 0; i < H; ++i) EXPECT_NEAR(out[t * H + i], x[t * H + i] / std::sqrt(ss / H + eps) * w[i], 1e-5);
  }
}

// Folding a norm's weight into the projection after it: scale_columns(w, g) gives w diag(g), so
// (x / rms(x)) diag(g) w^T = (1 / rms(x)) x (w diag(g))^T.
TEST_F(CpuOps, ScaleColumns) {
  const int N = 6, K = 9;
  auto w = randn(N * K, 13), g = randn(K, 14);
  std::vector<float> folded = w;
  Tensor ft = T32(folded, {N, K});
  be->scale_columns(ft, T32(g, {K}));
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) EXPECT_EQ(folded[n * K + k], w[n * K + k] * g[k]);
  std::vector<float> bad(K + 1);
  EXPECT_THROW(be->scale_columns(ft, T32(bad, {K + 1})), std::invalid_argument);
}

// norm_linear_act: act(y[:, :I]) * y[:, I:] with y = rms_norm(x, g) w^T, against float64, both
// activations.
TEST_F(CpuOps, NormLinearActMatchesDoubleReference) {
  const int T = 3, K = 40, I = 13;
  auto x = randn(T * K, 30, 2.0f), w = randn(2 * I * K, 31, 0.2f), g = randn(K, 32, 0.3f);
  for (auto& v : g) v += 1.0f;
  for (Activation act : {Activation::silu, Activation::gelu_tanh}) {
    std::vector<float> out(T * I), gate_up(T * 2 * I), normed(T * K);
    Tensor o = T32(out, {T, I}), gu = T32(gate_up, {T, 2 * I}), nt = T32(normed, {T, K});
    be->norm_linear_act(T32(x, {T, K}), T32(g, {K}), 1e-6f, T32(w, {2 * I, K}), act, o, gu, nt);
    for (int t = 0; t < T; ++t) {
      double ss = 0;
      for (int k = 0; k < K; ++k) ss += double(x[t * K + k]) * x[t * K + k];
      const double inv = 1 / std::sqrt(ss / K + 1e-6);
      for (int i = 0; i < I; ++i) {
        double yg = 0, yu = 0;
        for (int k = 0; k < K; ++k) {
          const double xn = x[t * K + k] * inv * g[k];
          yg += xn * w[i * K + k];
          yu += xn * w[(I + i) * K + k];
        }
        const double a = act == Activation::silu
                             ? yg / (1 + std::exp(-yg))
                             : 0.5 * yg * (1 + std::tanh(0.7978845608028654 * (yg + 0.044715 * yg * yg * yg)));
        EXPECT_NEAR(out[t * I + i], a * yu, 1e-5 * (1 + std::abs(a * yu))) << t << "," << i;
      }
    }
  }
}

// The softmax's and SiLU's e^x (cpu_math.h's exp8): within 2 ulp of e^x in double over the whole
// range, gradual underflow to 0, +inf past FLT_MAX, NaN kept.
TEST(CpuMath, ExpWithinTwoUlpOfDoubleAndIeeeAtTheEdges) {
  std::vector<float> x;
  for (double v = -110; v <= 90; v += 0.00731) x.push_back(static_cast<float>(v));
  for (float v : {0.f, -0.f, 1e-8f, -1e-8f, 0.3465f, -0.3467f, 88.7f, 88.72f, 88.73f, 89.5f, 1e30f, -87.33f, -87.34f,
                  -103.9f, -104.f, -150.f, -1e30f, INFINITY, -INFINITY})
    x.push_back(v);
  x.push_back(NAN);
  std::vector<float> y(x.size());
  cpu::exp_rows(x.data(), y.data(), static_cast<int64_t>(x.size()));
  int checked = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i])) {
      EXPECT_TRUE(std::isnan(y[i]));
      continue;
    }
    const double ref = std::exp(static_cast<double>(x[i]));
    if (ref > std::numeric_limits<float>::max()) {
      EXPECT_EQ(y[i], INFINITY) << "x " << x[i];
      continue;
    }
    const float r = static_cast<float>(ref);
    const double ulp = ref < std::numeric_limits<float>::min() ? std::ldexp(1.0, -149)
                                                               : std::nextafter(r, INFINITY) - static_cast<double>(r);
    EXPECT_LE(std::abs(y[i] - ref), 2 * ulp) << "x " << x[i] << ": " << y[i] << " against " << ref;
    ++checked;
  }
  EXPECT_GT(checked, 27000);
}

TEST(CpuMath, LogWithinTwoUlpOfDoubleAndIeeeAtTheEdges) {
  std::vector<float> x;
  for (double e = -149; e <= 128; e += 0.0071) x.push_back(static_cast<float>(std::exp2(e)));  // subnormals to FLT_MAX
  for (double v = 0.5; v <= 2.0; v += 1e-5) x.push_back(static_cast<float>(v));  // around 1, where ln x -> 0
  for (float v : {1.0f, std::nextafter(1.0f, 0.0f), std::nextafter(1.0f, 2.0f), 0.70710677f, 0.70710683f,
                  std::numeric_limits<float>::min(), std::numeric_limits<float>::denorm_min(),
                  std::numeric_limits<float>::max(), std::ldexp(1.0f, -24), 1.0f - std::ldexp(1.0f, -24)})
    x.push_back(v);
  const std::vector<float> edges = {0.0f, -0.0f, INFINITY, -1.0f, -INFINITY, -1e-40f, NAN};
  x.insert(x.end(), edges.begin(), edges.end());
  std::vector<float> y(x.size());
  cpu::log_rows(x.data(), y.data(), static_cast<int64_t>(x.size()));
  int checked = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i]) || x[i] < 0 || std::isinf(x[i]) || x[i] == 0) {
      const float ref = std::log(x[i]);
      if (std::isnan(ref)) EXPECT_TRUE(std::isnan(y[i])) << "x " << x[i];
      else EXPECT_EQ(y[i], ref) << "x " << x[i];
      continue;
    }
    const double ref = std::log(static_cast<double>(x[i]));
    const float r = static_cast<float>(ref);
    const double ulp = r == 0 ? std::ldexp(1.0, -149) : std::abs(std::nextafter(r, 2 * r) - static_cast<double>(r));
    EXPECT_LE(std::abs(y[i] - ref), 2 * ulp) << "x " << x[i] << ": " << y[i] << " against " << ref;
    ++checked;
  }
  EXPECT_GT(checked, 180000);
}

TEST_F(CpuOps, SiluMul) {
  const int T = 3, I = 29;
  auto x = randn(T * 2 * I, 20, 3.0f);
  std::vector<float> out(T * I);
  Tensor o = T32(out, {T, I});
  be->silu_mul(T32(x, {T, 2 * I}), FoldedNorm{}, o);
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < I; ++i) {
      double g = x[t * 2 * I + i], u = x[t * 2 * I + I + i];
      EXPECT_NEAR(out[t * I + i], g / (1 + std::exp(-g)) * u, 1e-5 * (1 + std::abs(g * u)));
    }
  // With a folded norm, row t's gate and up are scaled by the norm's factor of h[t] first.
  const int H = 11;
  auto h = randn(T * H, 21, 4.0f);
  Tensor ht = T32(h, {T, H});
  be->silu_mul(T32(x, {T, 2 * I}), FoldedNorm{&ht, 1e-6f}, o);
  const std::vector<double> f = folded_factors(h, T, H, 1e-6);
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < I; ++i) {
      double g = x[t * 2 * I + i] * f[t], u = x[t * 2 * I + I + i] * f[t];
      EXPECT_NEAR(out[t * I + i], g / (1 + std::exp(-g)) * u, 1e-5 * (1 + std::abs(g * u))) << t << "," << i;
    }
}

// act_mul with tanh-GELU (Gemma's gelu_pytorch_tanh): 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))) * u,
// with and without a folded norm; SiLU through act_mul is silu_mul.
TEST_F(CpuOps, ActMulGeluTanh) {
  const int T = 3, I = 29, H = 11;
  auto x = randn(T * 2 * I, 22, 3.0f), h = randn(T * H, 23, 4.0f);
  Tensor ht = T32(h, {T, H});
  const std::vector<double> f = folded_factors(h, T, H, 1e-6);
  const double k = std::sqrt(2.0 / M_PI);
  for (bool fold : {false, true}) {
    std::vector<float> out(T * I, -1.0f);
    Tensor o = T32(out, {T, I});
    be->act_mul(T32(x, {T, 2 * I}), fold ? FoldedNorm{&ht, 1e-6f} : FoldedNorm{}, Activation::gelu_tanh, o);
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < I; ++i) {
        const double s = fold ? f[t] : 1.0;
        const double g = x[t * 2 * I + i] * s, u = x[t * 2 * I + I + i] * s;
        const double ref = 0.5 * g * (1 + std::tanh(k * (g + 0.044715 * g * g * g))) * u;
        EXPECT_NEAR(out[t * I + i], ref, 1e-5 * (1 + std::abs(ref))) << "fold " << fold << " at " << t << "," << i;
      }
    std::vector<float> silu(T * I), via_act(T * I);
    Tensor st = T32(silu, {T, I}), at = T32(via_act, {T, I});
    be->silu_mul(T32(x, {T, 2 * I}), fold ? FoldedNorm{&ht, 1e-6f} : FoldedNorm{}, st);
    be->act_mul(T32(x, {T, 2 * I}), fold ? FoldedNorm{&ht, 1e-6f} : FoldedNorm{}, Activation::silu, at);
    EXPECT_EQ(silu, via_act);
  }
}

// residual += x / rms(x) * w (Gemma's post-attention and post-feedforward norms), row by row.
TEST_F(CpuOps, RmsNormAdd) {
  const int T = 5, H = 37;
  const float eps = 1e-6f;
  auto x = randn(T * H, 24, 3.0f), w = randn(H, 25), r0 = randn(T * H, 26, 2.0f);
  std::vector<float> r = r0;
  Tensor rt = T32(r, {T, H});
  be->rms_norm_add(T32(x, {T, H}), T32(w, {H}), eps, rt);
  for (int t = 0; t < T; ++t) {
    double ss = 0;
    for (int i = 0; i < H; ++i) ss += double(x[t * H + i]) * x[t * H + i];
    for (int i = 0; i < H; ++i) {
      const double ref = r0[t * H + i] + x[t * H + i] / std::sqrt(ss / H + eps) * w[i];
      EXPECT_NEAR(r[t * H + i], ref, 1e-5 * (1 + std::abs(ref))) << t << "," << i;
    }
  }
  std::vector<float> small(T * (H - 1));
  Tensor bad = T32(small, {T, H - 1});
  EXPECT_THROW(be->rms_norm_add(T32(x, {T, H}), T32(w, {H}), eps, bad), std::invalid_argument);
}

// x[t, :] += bias; softcap: x = cap * tanh(x / cap).
TEST_F(CpuOps, AddBiasAndSoftcap) {
  const int T = 4, N = 19;
  auto x0 = randn(T * N, 27, 2.0f), bias = randn(N, 28);
  std::vector<float> x = x0;
  Tensor xt = T32(x, {T, N});
  be->add_bias(xt, T32(bias, {N}));
  for (int t = 0; t < T; ++t)
    for (int n = 0; n < N; ++n) EXPECT_EQ(x[t * N + n], x0[t * N + n] + bias[n]);
  std::vector<float> wrong(N + 1);
  EXPECT_THROW(be->add_bias(xt, T32(wrong, {N + 1})), std::invalid_argument);

  const int B = 3, V = 70000;  // more than one parallel chunk
  const float cap = 30.0f;
  auto logits0 = randn(size_t(B) * V, 29, 40.0f);
  std::vector<float> logits = logits0;
  Tensor lt = T32(logits, {B, V});
  be->softcap(lt, cap);
  for (size_t i = 0; i < logits.size(); ++i) {
    const double ref = cap * std::tanh(double(logits0[i]) / cap);
    ASSERT_NEAR(logits[i], ref, 2e-6 * (1 + std::abs(ref))) << i;
  }
  EXPECT_THROW(be->softcap(lt, 0.0f), std::invalid_argument);
}

// Gemma's embedding: rows times a factor (sqrt(hidden)).
TEST_F(CpuOps, EmbeddingScale) {
  const int V = 10, H = 6;
  auto table = randn(V * H, 31);
  std::vector<int32_t> ids = {3, 0, 9, 3};
  std::vector<float> out(4 * H);
  Tensor o = T32(out, {4, H});
  const float scale = std::sqrt(float(H));
  be->embedding(TI(ids, {4}), T32(table, {V, H}), o, scale);
  for (int t = 0; t < 4; ++t)
    for (int i = 0; i < H; ++i) EXPECT_EQ(out[t * H + i], table[ids[t] * H + i] * scale);
}

TEST_F(CpuOps, EmbeddingAndGatherRows) {
  const int V = 10, H = 6;
  auto table = randn(V * H, 30);
  std::vector<int32_t> ids = {3, 0, 9, 3};
  std::vector<float> out(4 * H);
  Tensor o = T32(out, {4, H});
  be->embedding(TI(ids, {4}), T32(table, {V, H}), o);
  for (int t = 0; t < 4; ++t)
    for (int i = 0; i < H; ++i) EXPECT_EQ(out[t * H + i], table[ids[t] * H + i]);
  std::vector<int32_t> idx = {2, 0};
  std::vector<float> g(2 * H);
  Tensor gt = T32(g, {2, H});
  be->gather_rows(o, TI(idx, {2}), gt);
  for (int i = 0; i < H; ++i) {
    EXPECT_EQ(g[i], table[9 * H + i]);
    EXPECT_EQ(g[H + i], table[3 * H + i]);
  }
  std::vector<int32_t> bad_ids = {10};
  Tensor o1 = T32(out, {1, H});
  EXPECT_THROW(be->embedding(TI(bad_ids, {1}), T32(table, {V, H}), o1), std::invalid_argument);
}

TEST_F(CpuOps, UploadConvertHalfTypes) {
  std::vector<float> vals = {0.0f, 1.0f, -2.5f, 3.140625f, 65504.0f, 1e-7f, -0.0f};
  std::vector<uint16_t> bf(vals.size()), hf(vals.size());
  for (size_t i = 0; i < vals.size(); ++i) {
    bf[i] = f32_to_bf16(vals[i]);
    hf[i] = f32_to_f16(vals[i]);
  }
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.5f), 0xc100);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);  // halfway: rounds to even
  std::vector<float> out(vals.size());
  Tensor o = T32(out, {int64_t(vals.size())});
  be->upload_convert(Tensor(bf.data(), DType::bf16, {int64_t(vals.size())}), o);
  for (size_t i = 0; i < vals.size(); ++i) EXPECT_NEAR(out[i], vals[i], std::abs(vals[i]) / 128) << i;
  be->upload_convert(Tensor(hf.data(), DType::f16, {int64_t(vals.size())}), o);
  for (size_t i = 0; i < vals.size(); ++i) EXPECT_NEAR(out[i], vals[i], std::abs(vals[i]) / 1024 + 6e-8) << i;
}

// ---- q/k norm + rope + store ----
// Reference rope table as HF builds it (float32 inv_freq and angle).
std::vector<float> rope_table(int max_pos, int D, double theta) {
  std::vector<float> t(size_t(max_pos) * D);
  for (int p = 0; p < max_pos; ++p)
    for (int i = 0; i < D / 2; ++i) {
      double a = double(p) / std::pow(theta, 2.0 * i / D);
      t[p * D + i] = float(std::cos(a));
      t[p * D + D / 2 + i] = float(std::sin(a));
    }
  return t;
}

void ref_norm_rope(const float* x, const float* w, const float* cs, double eps, int D, double* out) {
  double ss = 0;
  for (int d = 0; d < D; ++d) ss += double(x[d]) * x[d];
  double inv = 1 / std::sqrt(ss / D + eps);
  for (int d = 0; d < D / 2; ++d) {
    double x1 = x[d] * inv * w[d], x2 = x[d + D / 2] * inv * w[d + D / 2];
    out[d] = x1 * cs[d] - x2 * cs[D / 2 + d];
    out[d + D / 2] = x2 * cs[d] + x1 * cs[D / 2 + d];
  }
}

TEST_F(CpuOps, QkNormRopeStore) {
  const int T = 4, Hq = 4, Hkv = 2, D = 16, nb = 3, bs = 4, max_pos = 64;
  const float eps = 1e-6f;
  auto qkv = randn(T * (Hq + 2 * Hkv) * D, 40), qw = randn(D, 41), kw = randn(D, 42);
  auto cs = rope_table(max_pos, D, 10000.0);
  std::vector<int32_t> pos = {0, 5, 63, 17}, slots = {0, 7, -1, 11};
  std::vector<float> kc(nb * bs * Hkv * D, 99.0f), vc(nb * bs * Hkv * D, 99.0f), q(T * Hq * D);
  Tensor kt = T32(kc, {nb, bs, Hkv, D}), vt = T32(vc, {nb, bs, Hkv, D}), qt = T32(q, {T, Hq, D});
  const int row = (Hq + 2 * Hkv) * D;
  // q and k against the reference on `src` (qkv, or its rows scaled by a folded norm's factor f);
  // v copied as it is, or scaled by f.
  auto check = [&](const std::vector<float>& src, const std::vector<double>* f) {
    std::vector<double> ref(D);
    for (int t = 0; t < T; ++t) {
      for (int h = 0; h < Hq; ++h) {
        ref_norm_rope(&src[t * row + h * D], qw.data(), &cs[pos[t] * D], eps, D, ref.data());
        for (int d = 0; d < D; ++d) EXPECT_NEAR(q[(t * Hq + h) * D + d], ref[d], 1e-4 * (1 + std::abs(ref[d])));
      }
      for (int h = 0; h < Hkv; ++h) {
        if (slots[t] < 0) continue;
        ref_norm_rope(&src[t * row + (Hq + h) * D], kw.data(), &cs[pos[t] * D], eps, D, ref.data());
        for (int d = 0; d < D; ++d) {
          EXPECT_NEAR(kc[(slots[t] * Hkv + h) * D + d], ref[d], 1e-4 * (1 + std::abs(ref[d])));
          const float v_in = qkv[t * row + (Hq + Hkv + h) * D + d];
          if (!f) {
            EXPECT_EQ(vc[(slots[t] * Hkv + h) * D + d], v_in);
          } else {
            const double v = v_in * (*f)[t];
            EXPECT_NEAR(vc[(slots[t] * Hkv + h) * D + d], v, 1e-6 * (1 + std::abs(v)));
          }
        }
      }
    }
  };
  be->qk_norm_rope_store({T32(qkv, {T, row}), FoldedNorm{}, Tensor{}, T32(qw, {D}), T32(kw, {D}), TI(pos, {T}),
                          T32(cs, {max_pos, D}), eps, Hq, Hkv, slots.data()},
                         {kt, vt}, qt);
  check(qkv, nullptr);
  // Slots not written keep their old contents (token 2 had slot -1).
  int untouched = 0;
  for (float v : kc) untouched += v == 99.0f;
  EXPECT_EQ(untouched, (nb * bs - 3) * Hkv * D);

  // A folded norm: the same as the op on qkv rows scaled by the norm's factor of h[t] first.
  const int H = 24;
  auto h = randn(T * H, 43, 3.0f);
  Tensor ht = T32(h, {T, H});
  const std::vector<double> f = folded_factors(h, T, H, eps);
  std::vector<float> scaled = qkv;
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < row; ++i) scaled[t * row + i] = float(qkv[t * row + i] * f[t]);
  be->qk_norm_rope_store({T32(qkv, {T, row}), FoldedNorm{&ht, eps}, Tensor{}, T32(qw, {D}), T32(kw, {D}),
                          TI(pos, {T}), T32(cs, {max_pos, D}), eps, Hq, Hkv, slots.data()},
                         {kt, vt}, qt);
  check(scaled, &f);
}

// The projection's bias (Qwen2) is added after the folded norm's factor and before the q/k norm and
// RoPE, v gets its bias too; undefined norm weights (Llama, Qwen2, Mistral) mean no q/k norm.
TEST_F(CpuOps, QkRopeStoreBiasAndNoNorm) {
  const int T = 4, Hq = 4, Hkv = 2, D = 16, nb = 3, bs = 4, max_pos = 64, H = 24;
  const float eps = 1e-6f;
  const int row = (Hq + 2 * Hkv) * D;
  auto qkv = randn(T * row, 50), qw = randn(D, 51), kw = randn(D, 52), bias = randn(row, 53, 0.5f);
  auto h = randn(T * H, 54, 3.0f);
  Tensor ht = T32(h, {T, H});
  const std::vector<double> f = folded_factors(h, T, H, eps);
  auto cs = rope_table(max_pos, D, 10000.0);
  std::vector<int32_t> pos = {0, 5, 63, 17}, slots = {0, 7, -1, 11};
  // One head in double: x * pre + bias, RMS-normed with w when given, rotated.
  auto ref_head = [&](int t, int col, const std::vector<float>* w, bool with_bias, double pre, double* out) {
    std::vector<double> y(D);
    for (int d = 0; d < D; ++d) y[d] = qkv[t * row + col + d] * pre + (with_bias ? bias[col + d] : 0.0);
    double inv = 1;
    if (w) {
      double ss = 0;
      for (double v : y) ss += v * v;
      inv = 1 / std::sqrt(ss / D + eps);
    }
    const float* c = &cs[pos[t] * D];
    for (int d = 0; d < D / 2; ++d) {
      const double x1 = y[d] * inv * (w ? (*w)[d] : 1.0), x2 = y[d + D / 2] * inv * (w ? (*w)[d + D / 2] : 1.0);
      out[d] = x1 * c[d] - x2 * c[D / 2 + d];
      out[d + D / 2] = x2 * c[d] + x1 * c[D / 2 + d];
    }
  };
  for (bool with_bias : {false, true})
    for (bool with_norm : {false, true})
      for (bool fold : {false, true}) {
        if (!with_bias && with_norm) continue;  // QkNormRopeStore above
        SCOPED_TRACE(std::string("bias ") + (with_bias ? "yes" : "no") + ", norm " + (with_norm ? "yes" : "no") +
                     ", folded " + (fold ? "yes" : "no"));
        std::vector<float> kc(nb * bs * Hkv * D, 99.0f), vc(kc.size(), 99.0f), q(T * Hq * D, -1.0f);
        Tensor kt = T32(kc, {nb, bs, Hkv, D}), vt = T32(vc, {nb, bs, Hkv, D}), qt = T32(q, {T, Hq, D});
        RopeStore in{.qkv = T32(qkv, {T, row}),
                     .folded = fold ? FoldedNorm{&ht, eps} : FoldedNorm{},
                     .qkv_bias = with_bias ? T32(bias, {row}) : Tensor{},
                     .q_norm_w = with_norm ? T32(qw, {D}) : Tensor{},
                     .k_norm_w = with_norm ? T32(kw, {D}) : Tensor{},
                     .positions = TI(pos, {T}),
                     .cos_sin = T32(cs, {max_pos, D}),
                     .eps = eps,
                     .num_q_heads = Hq,
                     .num_kv_heads = Hkv,
                     .slot_mapping = slots.data()};
        be->qk_norm_rope_store(in, {kt, vt}, qt);
        std::vector<double> ref(D);
        for (int t = 0; t < T; ++t) {
          const double pre = fold ? f[t] : 1.0;
          for (int hh = 0; hh < Hq; ++hh) {
            ref_head(t, hh * D, with_norm ? &qw : nullptr, with_bias, pre, ref.data());
            for (int d = 0; d < D; ++d)
              EXPECT_NEAR(q[(t * Hq + hh) * D + d], ref[d], 1e-5 * (1 + std::abs(ref[d])))
                  << t << " q" << hh << " " << d;
          }
          if (slots[t] < 0) continue;
          for (int hh = 0; hh < Hkv; ++hh) {
            ref_head(t, (Hq + hh) * D, with_norm ? &kw : nullptr, with_bias, pre, ref.data());
            for (int d = 0; d < D; ++d) {
              EXPECT_NEAR(kc[(slots[t] * Hkv + hh) * D + d], ref[d], 1e-5 * (1 + std::abs(ref[d])))
                  << t << " k" << hh << " " << d;
              const int vcol = (Hq + Hkv + hh) * D + d;
              const double v = qkv[t * row + vcol] * pre + (with_bias ? bias[vcol] : 0.0);
              EXPECT_NEAR(vc[(slots[t] * Hkv + hh) * D + d], v, 1e-6 * (1 + std::abs(v)))
                  << t << " v" << hh << " " << d;
            }
          }
        }
        int untouched = 0;
        for (float v : kc) untouched += v == 99.0f;
        EXPECT_EQ(untouched, (nb * bs - 3) * Hkv * D);
      }
  // One norm weight without the other is a contract error.
  std::vector<float> kc(nb * bs * Hkv * D), vc(kc.size()), q(T * Hq * D);
  Tensor kt = T32(kc, {nb, bs, Hkv, D}), vt = T32(vc, {nb, bs, Hkv, D}), qt = T32(q, {T, Hq, D});
  RopeStore half{.qkv = T32(qkv, {T, row}), .q_norm_w = T32(qw, {D}), .positions = TI(pos, {T}),
                 .cos_sin = T32(cs, {max_pos, D}), .eps = eps, .num_q_heads = Hq, .num_kv_heads = Hkv,
                 .slot_mapping = slots.data()};
  EXPECT_THROW(be->qk_norm_rope_store(half, {kt, vt}, qt), std::invalid_argument);
}

// ---- paged attention ----
struct Batch {
  std::vector<int32_t> cu_q, seqlens_k, tables, slots;
  int max_blocks = 0;
  AttentionMetadata meta(bool prefill) const {
    AttentionMetadata m;
    m.is_prefill = prefill;
    m.num_seqs = int(seqlens_k.size());
    m.num_tokens = cu_q.back();
    for (size_t i = 0; i < seqlens_k.size(); ++i) {
      m.max_seqlen_q = std::max(m.max_seqlen_q, cu_q[i + 1] - cu_q[i]);
      m.max_seqlen_k = std::max(m.max_seqlen_k, seqlens_k[i]);
    }
    m.cu_seqlens_q = cu_q.data();
    m.seqlens_k = seqlens_k.data();
    m.slot_mapping = slots.data();
    m.block_tables = tables.data();
    m.max_num_blocks = max_blocks;
    return m;
  }
};

// Builds sequences with (q_len, k_len) over a shuffled set of blocks, so that tables are not identity.
Batch make_batch(const std::vector<std::pair<int, int>>& seqs, int bs, int num_blocks, uint32_t seed) {
  Batch b;
  std::vector<int32_t> free_blocks(num_blocks);
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::shuffle(free_blocks.begin(), free_blocks.end(), std::mt19937(seed));
  for (auto [q, k] : seqs) b.max_blocks = std::max(b.max_blocks, (k + bs - 1) / bs + 1);
  b.cu_q.push_back(0);
  size_t next = 0;
  for (auto [q, k] : seqs) {
    b.cu_q.push_back(b.cu_q.back() + q);
    b.seqlens_k.push_back(k);
    std::vector<int32_t> row(b.max_blocks, -1);
    for (int i = 0; i < (k + bs - 1) / bs; ++i) row[i] = free_blocks.at(next++);
    for (int j = 0; j < q; ++j) {
      int p = k - q + j;
      b.slots.push_back(row[p / bs] * bs + p % bs);
    }
    b.tables.insert(b.tables.end(), row.begin(), row.end());
  }
  return b;
}

// softmax(s) v over the cache positions a query at position pos sees, in double, read straight from
// the tables: [0, pos], or with a window (pos - window, pos]; s = scale q.k, or with soft-capping
// softcap * tanh(scale q.k / softcap). A naive softmax over exactly the allowed keys.
void ref_attention(const std::vector<float>& q, const std::vector<float>& kc, const std::vector<float>& vc,
                   const Batch& b, int Hq, int Hkv, int D, int bs, const AttentionOptions& o,
                   std::vector<double>& out) {
  out.assign(q.size(), 0.0);
  for (size_t i = 0; i < b.seqlens_k.size(); ++i) {
    const int q_len = b.cu_q[i + 1] - b.cu_q[i];
    for (int j = 0; j < q_len; ++j) {
      const int t = b.cu_q[i] + j, pos = b.seqlens_k[i] - q_len + j;
      const int lo = o.window > 0 ? std::max(0, pos - o.window + 1) : 0;
      for (int h = 0; h < Hq; ++h) {
        const int kvh = h / (Hq / Hkv);
        std::vector<double> s(pos + 1 - lo);
        double mx = -1e300, sum = 0;
        for (int p = lo; p <= pos; ++p) {
          const int slot = b.tables[i * b.max_blocks + p / bs] * bs + p % bs;
          double d = 0;
          for (int e = 0; e < D; ++e) d += double(q[(t * Hq + h) * D + e]) * kc[(slot * Hkv + kvh) * D + e];
          d *= o.scale;
          if (o.softcap > 0) d = o.softcap * std::tanh(d / o.softcap);
          s[p - lo] = d;
          mx = std::max(mx, d);
        }
        for (auto& x : s) sum += (x = std::exp(x - mx));
        for (int p = lo; p <= pos; ++p) {
          const int slot = b.tables[i * b.max_blocks + p / bs] * bs + p % bs;
          for (int e = 0; e < D; ++e) out[(t * Hq + h) * D + e] += s[p - lo] / sum * vc[(slot * Hkv + kvh) * D + e];
        }
      }
    }
  }
}
void ref_attention(const std::vector<float>& q, const std::vector<float>& kc, const std::vector<float>& vc,
                   const Batch& b, int Hq, int Hkv, int D, int bs, float scale, std::vector<double>& out) {
  ref_attention(q, kc, vc, b, Hq, Hkv, D, bs, AttentionOptions{.scale = scale}, out);
}

struct AttnCase {
  int Hq, Hkv, D, bs;
  bool prefill;
  std::vector<std::pair<int, int>> seqs;  // (new tokens, context length including them)
};

TEST_F(CpuOps, PagedAttentionMatchesReference) {
  const std::vector<AttnCase> cases = {
      {4, 2, 16, 4, true, {{5, 5}, {3, 9}, {1, 1}}},         // fresh prefill, prefix-cached prefill, 1-token
      {6, 1, 8, 1, true, {{7, 7}, {2, 12}}},                 // block size 1, MQA
      {8, 8, 64, 16, true, {{20, 37}, {16, 16}, {17, 33}}},   // block boundaries at 16, 32
      {4, 2, 12, 3, false, {{1, 1}, {1, 3}, {1, 4}, {1, 50}}}, // decode, head_dim not a multiple of 8
      {16, 8, 128, 256, false, {{1, 300}, {1, 256}, {1, 257}}},
      // 8-key score batches with a head_dim tail (12), and P.V chunks of 5 and 8+2 vectors
      {2, 1, 12, 16, true, {{19, 40}, {1, 9}}},
      {4, 2, 40, 8, false, {{1, 30}, {1, 8}, {1, 17}}},
      {4, 4, 80, 32, true, {{40, 70}, {1, 33}}},
  };
  uint32_t seed = 100;
  for (const auto& c : cases) {
    int need = 0;
    for (auto [q, k] : c.seqs) need += (k + c.bs - 1) / c.bs;
    const int nb = need + 3;
    Batch b = make_batch(c.seqs, c.bs, nb, seed++);
    const int T = b.cu_q.back();
    auto q = randn(size_t(T) * c.Hq * c.D, seed++);
    auto kc = randn(size_t(nb) * c.bs * c.Hkv * c.D, seed++), vc = randn(size_t(nb) * c.bs * c.Hkv * c.D, seed++);
    std::vector<float> out(q.size());
    Tensor ot = T32(out, {T, c.Hq, c.D});
    const float scale = 1.0f / std::sqrt(float(c.D));
    be->attention(T32(q, {T, c.Hq, c.D}), {T32(kc, {nb, c.bs, c.Hkv, c.D}), T32(vc, {nb, c.bs, c.Hkv, c.D})},
                  b.meta(c.prefill), scale, ot);
    std::vector<double> ref;
    ref_attention(q, kc, vc, b, c.Hq, c.Hkv, c.D, c.bs, scale, ref);
    for (size_t i = 0; i < out.size(); ++i)
      ASSERT_NEAR(out[i], ref[i], 2e-5 * (1 + std::abs(ref[i]))) << "case Hq=" << c.Hq << " D=" << c.D << " bs=" << c.bs << " i=" << i;
  }
}

// Sliding windows and soft-capping against the naive softmax over the allowed keys, on both CPU
// paths (query tiles of OpenBLAS for chunks of >= kMinTiledQuery tokens, per token below): windows
// smaller than, equal to and larger than the context, not multiples of the block size, a window
// that starts inside the cached prefix or an earlier chunk, window 1 (only the token itself), GQA.
TEST_F(CpuOps, WindowAndSoftcapAttentionMatchesReference) {
  struct Case {
    int Hq, Hkv, D, bs;
    bool prefill;
    std::vector<std::pair<int, int>> seqs;
    std::vector<std::pair<int, float>> opts;  // (window, softcap)
    float q_std = 1.0f;
  };
  const std::vector<Case> cases = {
      // fresh prefill on the tiled path (q_len >= 8, tiles of 32), a prefix-cached chunk, a short chunk
      {4, 2, 16, 4, true, {{40, 40}, {37, 90}, {3, 9}, {1, 1}},
       {{1, 0}, {3, 0}, {5, 0}, {16, 0}, {33, 0}, {40, 0}, {90, 0}, {1000, 0}}},
      // softcap alone and with windows, scores large enough for the tanh to bend (q_std 3)
      {4, 2, 16, 4, true, {{40, 40}, {37, 90}, {3, 9}}, {{0, 2.0f}, {0, 50.0f}, {7, 2.0f}, {45, 1.5f}}, 3.0f},
      // GQA 6:1, block size 1, chunk after a long prefix where the window starts inside the prefix
      {6, 1, 8, 1, true, {{20, 120}, {9, 9}}, {{1, 0}, {50, 0}, {101, 0}, {120, 0}, {30, 3.0f}}, 2.0f},
      // head_dim with a tail (12); windows that split blocks of 16
      {2, 1, 12, 16, true, {{19, 40}, {33, 33}}, {{17, 0}, {20, 0}, {32, 0}, {21, 4.0f}}},
      // decode: windows below, at and above the context, across pages
      {4, 2, 40, 8, false, {{1, 1}, {1, 8}, {1, 17}, {1, 30}, {1, 100}},
       {{1, 0}, {8, 0}, {17, 0}, {29, 0}, {30, 0}, {31, 0}, {64, 0}, {10, 2.5f}, {0, 2.5f}}, 2.0f},
      {16, 8, 128, 256, false, {{1, 300}, {1, 256}, {1, 257}, {1, 2}}, {{256, 0}, {255, 0}, {100, 30.0f}, {0, 30.0f}}},
  };
  uint32_t seed = 500;
  for (const auto& c : cases) {
    int need = 0;
    for (auto [q, k] : c.seqs) need += (k + c.bs - 1) / c.bs;
    const int nb = need + 3;
    Batch b = make_batch(c.seqs, c.bs, nb, seed++);
    const int T = b.cu_q.back();
    auto q = randn(size_t(T) * c.Hq * c.D, seed++, c.q_std);
    auto kc = randn(size_t(nb) * c.bs * c.Hkv * c.D, seed++), vc = randn(size_t(nb) * c.bs * c.Hkv * c.D, seed++);
    for (auto [window, softcap] : c.opts) {
      SCOPED_TRACE("Hq " + std::to_string(c.Hq) + " D " + std::to_string(c.D) + " bs " + std::to_string(c.bs) +
                   " window " + std::to_string(window) + " softcap " + std::to_string(softcap));
      const AttentionOptions o{.scale = 1.0f / std::sqrt(float(c.D)), .window = window, .softcap = softcap};
      std::vector<float> out(q.size(), -7.0f);
      Tensor ot = T32(out, {T, c.Hq, c.D});
      be->attention(T32(q, {T, c.Hq, c.D}), {T32(kc, {nb, c.bs, c.Hkv, c.D}), T32(vc, {nb, c.bs, c.Hkv, c.D})},
                    b.meta(c.prefill), o, ot);
      std::vector<double> ref;
      ref_attention(q, kc, vc, b, c.Hq, c.Hkv, c.D, c.bs, o, ref);
      for (size_t i = 0; i < out.size(); ++i)
        ASSERT_NEAR(out[i], ref[i], 2e-5 * (1 + std::abs(ref[i]))) << "i=" << i;
    }
  }
  // A window changes the answer where it cuts keys off, and only there: a window covering the
  // whole context is the plain causal attention.
  Batch b = make_batch({{12, 30}}, 4, 10, 9);
  auto q = randn(12 * 2 * 8, 1), kc = randn(10 * 4 * 1 * 8, 2), vc = randn(10 * 4 * 1 * 8, 3);
  std::vector<float> plain(q.size()), wide(q.size()), narrow(q.size());
  Tensor pt = T32(plain, {12, 2, 8}), wt = T32(wide, {12, 2, 8}), nt = T32(narrow, {12, 2, 8});
  const PagedKV cache{T32(kc, {10, 4, 1, 8}), T32(vc, {10, 4, 1, 8})};
  be->attention(T32(q, {12, 2, 8}), cache, b.meta(true), AttentionOptions{.scale = 0.3f}, pt);
  be->attention(T32(q, {12, 2, 8}), cache, b.meta(true), AttentionOptions{.scale = 0.3f, .window = 30}, wt);
  be->attention(T32(q, {12, 2, 8}), cache, b.meta(true), AttentionOptions{.scale = 0.3f, .window = 29}, nt);
  EXPECT_EQ(plain, wide);
  EXPECT_NE(plain, narrow);
}

// With a window, the same tokens give the same outputs prefilled at once, as a cached prefix plus a
// chunk whose first window starts inside the prefix, or decoded token by token.
TEST_F(CpuOps, WindowedChunksEqualFullPrefill) {
  const int Hq = 4, Hkv = 2, D = 32, bs = 8, L = 45, P = 29, nb = 8, max_pos = 64;
  const int row = (Hq + 2 * Hkv) * D;
  auto qkv = randn(size_t(L) * row, 210);
  auto cs = rope_table(max_pos, D, 1e6);
  for (auto [window, softcap] : std::vector<std::pair<int, float>>{{5, 0}, {13, 0}, {16, 2.0f}, {44, 0}}) {
    SCOPED_TRACE("window " + std::to_string(window) + " softcap " + std::to_string(softcap));
    const AttentionOptions o{.scale = 1.0f / std::sqrt(float(D)), .window = window, .softcap = softcap};
    auto run = [&](const std::vector<std::pair<int, int>>& chunks) {
      std::vector<float> kc(nb * bs * Hkv * D, 0.0f), vc(kc.size(), 0.0f);
      std::vector<float> all(size_t(L) * Hq * D);
      for (auto [begin, end] : chunks) {
        const int T = end - begin;
        Batch b = make_batch({{T, end}}, bs, nb, 7);
        std::vector<int32_t> pos(T);
        std::iota(pos.begin(), pos.end(), begin);
        std::vector<float> part(qkv.begin() + size_t(begin) * row, qkv.begin() + size_t(end) * row);
        std::vector<float> q(size_t(T) * Hq * D), out(q.size());
        Tensor kt = T32(kc, {nb, bs, Hkv, D}), vt = T32(vc, {nb, bs, Hkv, D}), qt = T32(q, {T, Hq, D}),
               ot = T32(out, {T, Hq, D});
        be->qk_norm_rope_store({.qkv = T32(part, {T, row}), .positions = TI(pos, {T}), .cos_sin = T32(cs, {max_pos, D}),
                                .eps = 1e-6f, .num_q_heads = Hq, .num_kv_heads = Hkv, .slot_mapping = b.slots.data()},
                               {kt, vt}, qt);
        be->attention(qt, {kt, vt}, b.meta(T > 1), o, ot);
        std::copy(out.begin(), out.end(), all.begin() + size_t(begin) * Hq * D);
      }
      return all;
    };
    auto full = run({{0, L}});
    auto cached = run({{0, P}, {P, L}});
    std::vector<std::pair<int, int>> steps = {{0, P}};
    for (int t = P; t < L; ++t) steps.push_back({t, t + 1});
    auto decoded = run(steps);
    for (size_t i = 0; i < full.size(); ++i) {
      ASSERT_NEAR(cached[i], full[i], 1e-5 * (1 + std::abs(full[i]))) << i;
      ASSERT_NEAR(decoded[i], full[i], 1e-5 * (1 + std::abs(full[i]))) << i;
    }
  }
}

// The cache path end to end: a prompt prefilled at once, or as a cached prefix plus a chunk,
// or token by token as decode, gives the same attention output for the same tokens.
TEST_F(CpuOps, PrefixCachedPrefillEqualsFullPrefill) {
  const int Hq = 4, Hkv = 2, D = 32, bs = 8, L = 21, P = 13, nb = 6, max_pos = 64;
  const int row = (Hq + 2 * Hkv) * D;
  auto qkv = randn(size_t(L) * row, 200), qw = randn(D, 201), kw = randn(D, 202);
  auto cs = rope_table(max_pos, D, 1e6);
  const float scale = 1.0f / std::sqrt(float(D));
  auto run = [&](const std::vector<std::pair<int, int>>& chunks) {
    std::vector<float> kc(nb * bs * Hkv * D, 0.0f), vc(kc.size(), 0.0f), last;
    std::vector<float> all(size_t(L) * Hq * D);
    for (auto [begin, end] : chunks) {
      const int T = end - begin;
      Batch b = make_batch({{T, end}}, bs, nb, 7);  // same seed: the same block table every chunk
      std::vector<int32_t> pos(T);
      std::iota(pos.begin(), pos.end(), begin);
      std::vector<float> part(qkv.begin() + size_t(begin) * row, qkv.begin() + size_t(end) * row);
      std::vector<float> q(size_t(T) * Hq * D), out(q.size());
      Tensor kt = T32(kc, {nb, bs, Hkv, D}), vt = T32(vc, {nb, bs, Hkv, D}), qt = T32(q, {T, Hq, D}),
             ot = T32(out, {T, Hq, D});
      be->qk_norm_rope_store({T32(part, {T, row}), FoldedNorm{}, Tensor{}, T32(qw, {D}), T32(kw, {D}), TI(pos, {T}),
                              T32(cs, {max_pos, D}), 1e-6f, Hq, Hkv, b.slots.data()},
                             {kt, vt}, qt);
      be->attention(qt, {kt, vt}, b.meta(T > 1), scale, ot);
      std::copy(out.begin(), out.end(), all.begin() + size_t(begin) * Hq * D);
    }
    return all;
  };
  auto full = run({{0, L}});
  auto cached = run({{0, P}, {P, L}});
  std::vector<std::pair<int, int>> steps = {{0, P}};
  for (int t = P; t < L; ++t) steps.push_back({t, t + 1});
  auto decoded = run(steps);
  for (size_t i = 0; i < full.size(); ++i) {
    ASSERT_NEAR(cached[i], full[i], 1e-5 * (1 + std::abs(full[i]))) << i;
    ASSERT_NEAR(decoded[i], full[i], 1e-5 * (1 + std::abs(full[i]))) << i;
  }
}

// ---- half-precision KV caches (bf16, f16) ----
// A cache's bits in dtype t from f32 values, and the values those bits hold.
std::pair<std::vector<uint16_t>, std::vector<float>> half_cache(const std::vector<float>& v, DType t) {
  std::vector<uint16_t> bits(v.size());
  std::vector<float> held(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    bits[i] = t == DType::bf16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
    held[i] = t == DType::bf16 ? bf16_to_f32(bits[i]) : f16_to_f32(bits[i]);
  }
  return {bits, held};
}

// Attention over bf16 and f16 caches equals the double reference over the values the cache holds,
// to float32 rounding, on both paths (prefill tiles, per-token decode), with a window and
// soft-capping, and head_dims with tails past 8 and 64.
TEST_F(CpuOps, PagedAttentionOverHalfCachesMatchesReference) {
  struct Case {
    int Hq, Hkv, D, bs;
    bool prefill;
    std::vector<std::pair<int, int>> seqs;
    AttentionOptions o;
  };
  const std::vector<Case> cases = {
      {4, 2, 16, 4, true, {{20, 20}, {9, 30}, {3, 9}}, {}},
      {16, 8, 128, 256, false, {{1, 300}, {1, 256}, {1, 17}}, {}},
      {4, 2, 12, 3, false, {{1, 50}, {1, 4}}, {.window = 7}},
      {2, 1, 80, 16, true, {{33, 70}, {1, 9}}, {.window = 20, .softcap = 2.0f}},
  };
  uint32_t seed = 300;
  for (DType t : {DType::bf16, DType::f16})
    for (const auto& c : cases) {
      SCOPED_TRACE(std::string(dtype_name(t)) + " D=" + std::to_string(c.D) + " bs=" + std::to_string(c.bs));
      int need = 0;
      for (auto [q, k] : c.seqs) need += (k + c.bs - 1) / c.bs;
      const int nb = need + 2;
      Batch b = make_batch(c.seqs, c.bs, nb, seed++);
      const int T = b.cu_q.back();
      auto q = randn(size_t(T) * c.Hq * c.D, seed++);
      auto [kbits, kheld] = half_cache(randn(size_t(nb) * c.bs * c.Hkv * c.D, seed++), t);
      auto [vbits, vheld] = half_cache(randn(size_t(nb) * c.bs * c.Hkv * c.D, seed++), t);
      std::vector<float> out(q.size());
      Tensor ot = T32(out, {T, c.Hq, c.D});
      AttentionOptions o = c.o;
      o.scale = 1.0f / std::sqrt(float(c.D));
      be->attention(T32(q, {T, c.Hq, c.D}),
                    {Tensor(kbits.data(), t, {nb, c.bs, c.Hkv, c.D}), Tensor(vbits.data(), t, {nb, c.bs, c.Hkv, c.D})},
                    b.meta(c.prefill), o, ot);
      std::vector<double> ref;
      ref_attention(q, kheld, vheld, b, c.Hq, c.Hkv, c.D, c.bs, o, ref);
      for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-5 * (1 + std::abs(ref[i]))) << i;
    }
  // k and v of different dtypes are a contract error.
  std::vector<uint16_t> kb(2 * 4 * 1 * 8);
  std::vector<float> vf(kb.size()), q(8), out(8);
  Batch b = make_batch({{1, 1}}, 4, 2, 1);
  Tensor ot = T32(out, {1, 1, 8});
  EXPECT_THROW(be->attention(T32(q, {1, 1, 8}), {Tensor(kb.data(), DType::bf16, {2, 4, 1, 8}), T32(vf, {2, 4, 1, 8})},
                             b.meta(false), 1.0f, ot),
               std::invalid_argument);
}

// The RoPE store into a bf16 or f16 cache writes what the f32 cache gets, rounded to nearest
// even (half.h's f32_to_bf16 / f32_to_f16), bit for bit; the query stays f32.
TEST_F(CpuOps, QkNormRopeStoreRoundsIntoHalfCaches) {
  const int T = 5, Hq = 4, Hkv = 2, D = 40, nb = 3, bs = 4, max_pos = 64;
  const int row = (Hq + 2 * Hkv) * D;
  auto qkv = randn(T * row, 60), qw = randn(D, 61), kw = randn(D, 62), bias = randn(row, 63);
  auto cs = rope_table(max_pos, D, 10000.0);
  std::vector<int32_t> pos = {0, 5, 63, 17, 2}, slots = {0, 7, -1, 11, 3};
  auto in = [&](std::vector<float>& src) {
    return RopeStore{.qkv = T32(src, {T, row}), .qkv_bias = T32(bias, {row}), .q_norm_w = T32(qw, {D}),
                     .k_norm_w = T32(kw, {D}), .positions = TI(pos, {T}), .cos_sin = T32(cs, {max_pos, D}),
                     .eps = 1e-6f, .num_q_heads = Hq, .num_kv_heads = Hkv, .slot_mapping = slots.data()};
  };
  const size_t n = size_t(nb) * bs * Hkv * D;
  std::vector<float> kf(n), vf(n), qf(size_t(T) * Hq * D);
  Tensor qft = T32(qf, {T, Hq, D});
  be->qk_norm_rope_store(in(qkv), {T32(kf, {nb, bs, Hkv, D}), T32(vf, {nb, bs, Hkv, D})}, qft);
  for (DType t : {DType::bf16, DType::f16}) {
    std::vector<uint16_t> kh(n, 0x7777), vh(n, 0x7777);
    std::vector<float> qh(qf.size());
    Tensor qht = T32(qh, {T, Hq, D});
    be->qk_norm_rope_store(in(qkv), {Tensor(kh.data(), t, {nb, bs, Hkv, D}), Tensor(vh.data(), t, {nb, bs, Hkv, D})}, qht);
    EXPECT_EQ(qh, qf);
    int written = 0;
    for (size_t i = 0; i < n; ++i) {
      if (kh[i] == 0x7777 && vh[i] == 0x7777) continue;
      ++written;
      ASSERT_EQ(kh[i], t == DType::bf16 ? f32_to_bf16(kf[i]) : f32_to_f16(kf[i])) << dtype_name(t) << " k " << i;
      ASSERT_EQ(vh[i], t == DType::bf16 ? f32_to_bf16(vf[i]) : f32_to_f16(vf[i])) << dtype_name(t) << " v " << i;
    }
    EXPECT_EQ(written, 4 * Hkv * D) << dtype_name(t);  // four tokens have slots
  }
}

// ---- FP8 KV caches (f8e4m3, f8e5m2) with per-layer scales ----
// A cache's codes in FP8 dtype t from f32 values stored as v / scale, and the values those codes
// hold once dequantized (code's value times scale, in double as the reference reads them).
std::pair<std::vector<uint8_t>, std::vector<double>> fp8_cache(const std::vector<float>& v, DType t, float scale) {
  std::vector<uint8_t> codes(v.size());
  std::vector<double> held(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    codes[i] = t == DType::f8e4m3 ? f32_to_fp8_e4m3(v[i] / scale) : f32_to_fp8_e5m2(v[i] / scale);
    held[i] = double(t == DType::f8e4m3 ? fp8_e4m3_to_f32(codes[i]) : fp8_e5m2_to_f32(codes[i])) * scale;
  }
  return {codes, held};
}

// Attention over FP8 caches equals the double reference over the dequantized cache (code x scale)
// to float32 rounding, on both paths (prefill tiles, per-token decode), GQA and MQA, windows and
// soft-capping, odd lengths, block sizes 1 to 256, head_dims with tails; K and V scales differ.
TEST_F(CpuOps, PagedAttentionOverFp8CachesMatchesReference) {
  struct Case {
    int Hq, Hkv, D, bs;
    bool prefill;
    std::vector<std::pair<int, int>> seqs;
    AttentionOptions o;
  };
  const std::vector<Case> cases = {
      {4, 2, 16, 4, true, {{20, 20}, {9, 30}, {3, 9}, {1, 1}}, {}},
      {16, 8, 128, 256, false, {{1, 300}, {1, 256}, {1, 17}}, {}},
      {4, 2, 12, 3, false, {{1, 50}, {1, 4}}, {.window = 7}},
      {2, 1, 80, 16, true, {{33, 70}, {1, 9}}, {.window = 20, .softcap = 2.0f}},
      {6, 1, 8, 1, true, {{13, 13}, {2, 31}}, {.softcap = 5.0f}},
      {8, 2, 40, 7, false, {{1, 1}, {1, 15}, {1, 99}}, {.window = 33}},
  };
  uint32_t seed = 900;
  for (DType t : {DType::f8e4m3, DType::f8e5m2})
    for (const auto& [k_scale, v_scale] :
         std::vector<std::pair<float, float>>{{0.01f, 0.02f}, {1.0f, 1.0f}, {3.5f, 0.25f}})
      for (const auto& c : cases) {
        SCOPED_TRACE(std::string(dtype_name(t)) + " D=" + std::to_string(c.D) + " bs=" + std::to_string(c.bs) +
                     " k_scale " + std::to_string(k_scale) + " v_scale " + std::to_string(v_scale));
        int need = 0;
        for (auto [q, k] : c.seqs) need += (k + c.bs - 1) / c.bs;
        const int nb = need + 2;
        Batch b = make_batch(c.seqs, c.bs, nb, seed++);
        const int T = b.cu_q.back();
        auto q = randn(size_t(T) * c.Hq * c.D, seed++);
        // values spread so that x / scale runs from subnormals to near the format's top
        auto [kcodes, kheld] = fp8_cache(randn(size_t(nb) * c.bs * c.Hkv * c.D, seed++, 200 * k_scale), t, k_scale);
        auto [vcodes, vheld] = fp8_cache(randn(size_t(nb) * c.bs * c.Hkv * c.D, seed++, 200 * v_scale), t, v_scale);
        std::vector<float> out(q.size());
        Tensor ot = T32(out, {T, c.Hq, c.D});
        AttentionOptions o = c.o;
        o.scale = 1.0f / std::sqrt(float(c.D)) / (200 * k_scale);  // scores of order 1, not a one-hot softmax
        const PagedKV cache{Tensor(kcodes.data(), t, {nb, c.bs, c.Hkv, c.D}),
                            Tensor(vcodes.data(), t, {nb, c.bs, c.Hkv, c.D}), k_scale, v_scale};
        be->attention(T32(q, {T, c.Hq, c.D}), cache, b.meta(c.prefill), o, ot);
        std::vector<float> kf(kheld.begin(), kheld.end()), vf(vheld.begin(), vheld.end());  // exact: few bits
        std::vector<double> ref;
        ref_attention(q, kf, vf, b, c.Hq, c.Hkv, c.D, c.bs, o, ref);
        const double vmax = 200.0 * v_scale * 5;  // |ref| is bounded by the largest |v|
        for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-5 * (vmax + std::abs(ref[i]))) << i;
      }
}

// Every one of the 256 codes read back exactly as half.h decodes it (NaN codes as NaN, e5m2's
// infinities as infinities), through the vector loads of decode attention: one key, so the output
// is its V row times a weight of exactly 1.
TEST_F(CpuOps, Fp8CacheReadsEveryCodeExactly) {
  const int D = 256;
  for (DType t : {DType::f8e4m3, DType::f8e5m2}) {
    SCOPED_TRACE(dtype_name(t));
    std::vector<uint8_t> kc(D, 0x00), vc(D);
    for (int c = 0; c < D; ++c) vc[c] = static_cast<uint8_t>(c);
    Batch b = make_batch({{1, 1}}, 1, 1, 1);
    std::vector<float> q(D, 1.0f), out(D);
    Tensor ot = T32(out, {1, 1, D});
    be->attention(T32(q, {1, 1, D}), {Tensor(kc.data(), t, {1, 1, 1, D}), Tensor(vc.data(), t, {1, 1, 1, D})},
                  b.meta(false), 0.1f, ot);
    for (int c = 0; c < D; ++c) {
      const float want = t == DType::f8e4m3 ? fp8_e4m3_to_f32(uint8_t(c)) : fp8_e5m2_to_f32(uint8_t(c));
      if (std::isnan(want)) EXPECT_TRUE(std::isnan(out[c])) << "code " << c;
      else EXPECT_EQ(out[c], want) << "code " << c;
    }
  }
}

// The RoPE store into an FP8 cache writes f32_to_fp8(x / scale) of what the f32 cache gets, byte
// for byte (K with k_scale, V with v_scale), saturating where x / scale is beyond the format;
// the query stays f32, and a slot of -1 writes nothing.
TEST_F(CpuOps, QkNormRopeStoreWritesScaledFp8) {
  const int T = 5, Hq = 4, Hkv = 2, D = 40, nb = 3, bs = 4, max_pos = 64;
  const int row = (Hq + 2 * Hkv) * D;
  auto qkv = randn(T * row, 70), qw = randn(D, 71), kw = randn(D, 72), bias = randn(row, 73);
  auto cs = rope_table(max_pos, D, 10000.0);
  std::vector<int32_t> pos = {0, 5, 63, 17, 2}, slots = {0, 7, -1, 11, 3};
  auto in = [&](std::vector<float>& src) {
    return RopeStore{.qkv = T32(src, {T, row}), .qkv_bias = T32(bias, {row}), .q_norm_w = T32(qw, {D}),
                     .k_norm_w = T32(kw, {D}), .positions = TI(pos, {T}), .cos_sin = T32(cs, {max_pos, D}),
                     .eps = 1e-6f, .num_q_heads = Hq, .num_kv_heads = Hkv, .slot_mapping = slots.data()};
  };
  const size_t n = size_t(nb) * bs * Hkv * D;
  std::vector<float> kf(n), vf(n), qf(size_t(T) * Hq * D);
  Tensor qft = T32(qf, {T, Hq, D});
  be->qk_norm_rope_store(in(qkv), {T32(kf, {nb, bs, Hkv, D}), T32(vf, {nb, bs, Hkv, D})}, qft);
  for (DType t : {DType::f8e4m3, DType::f8e5m2})
    for (const auto& [k_scale, v_scale] :
         std::vector<std::pair<float, float>>{{0.013f, 0.007f}, {1.0f, 1.0f}, {1e-5f, 3e-6f}}) {
      SCOPED_TRACE(std::string(dtype_name(t)) + " k_scale " + std::to_string(k_scale));
      std::vector<uint8_t> kc(n, 0x33), vc(n, 0x33);
      std::vector<float> qh(qf.size());
      Tensor qht = T32(qh, {T, Hq, D});
      be->qk_norm_rope_store(in(qkv), {Tensor(kc.data(), t, {nb, bs, Hkv, D}), Tensor(vc.data(), t, {nb, bs, Hkv, D}),
                                       k_scale, v_scale},
                             qht);
      EXPECT_EQ(qh, qf);
      auto enc = [t](float x) { return t == DType::f8e4m3 ? f32_to_fp8_e4m3(x) : f32_to_fp8_e5m2(x); };
      const uint8_t top = t == DType::f8e4m3 ? 0x7e : 0x7b;
      int written = 0, saturated = 0;
      for (int s = 0; s < nb * bs; ++s) {
        const bool stored = std::find(slots.begin(), slots.end(), s) != slots.end();
        for (size_t i = size_t(s) * Hkv * D; i < size_t(s + 1) * Hkv * D; ++i) {
          if (!stored) {
            ASSERT_EQ(kc[i], 0x33);
            ASSERT_EQ(vc[i], 0x33);
            continue;
          }
          ++written;
          ASSERT_EQ(kc[i], enc(kf[i] / k_scale)) << "k " << i;
          ASSERT_EQ(vc[i], enc(vf[i] / v_scale)) << "v " << i;
          saturated += (kc[i] & 0x7f) == top;
        }
      }
      EXPECT_EQ(written, 4 * Hkv * D);  // four tokens have slots
      if (k_scale == 1e-5f && t == DType::f8e4m3) EXPECT_GT(saturated, 0);  // |k| > 448 * 1e-5 saturates
    }
  // A scale that is not positive and finite is a contract error.
  std::vector<uint8_t> kc(n), vc(n);
  std::vector<float> qh(qf.size());
  Tensor qht = T32(qh, {T, Hq, D});
  for (float bad : {0.0f, -1.0f, INFINITY, NAN})
    EXPECT_THROW(be->qk_norm_rope_store(in(qkv), {Tensor(kc.data(), DType::f8e4m3, {nb, bs, Hkv, D}),
                                                  Tensor(vc.data(), DType::f8e4m3, {nb, bs, Hkv, D}), bad, 1.0f},
                                        qht),
                 std::invalid_argument)
        << bad;
}

TEST_F(CpuOps, AttentionRejectsBadBlockTables) {
  const int Hq = 2, Hkv = 1, D = 8, bs = 4, nb = 2;
  Batch b = make_batch({{3, 6}}, bs, nb, 1);
  b.tables[1] = 5;  // outside the cache
  auto q = randn(3 * Hq * D, 1), kc = randn(nb * bs * Hkv * D, 2), vc = kc;
  std::vector<float> out(q.size());
  Tensor ot = T32(out, {3, Hq, D});
  EXPECT_THROW(be->attention(T32(q, {3, Hq, D}), {T32(kc, {nb, bs, Hkv, D}), T32(vc, {nb, bs, Hkv, D})}, b.meta(true),
                             1.0f, ot),
               std::invalid_argument);
  EXPECT_THROW(be->check_attention_shape(0, 64), std::invalid_argument);
  EXPECT_NO_THROW(be->check_attention_shape(1, 6));
}

// ---- sampling ----
// The sample op with plain rows (temperature, key, counter; no filters or penalties).
void sample_plain(Backend& be, const Tensor& logits, const std::vector<float>& temps, const std::vector<int64_t>& keys,
                  const std::vector<int64_t>& counters, Tensor& out) {
  std::vector<SamplingRow> rows(temps.size());
  for (size_t b = 0; b < rows.size(); ++b) {
    rows[b].temperature = temps[b];
    rows[b].key = keys[b];
    rows[b].counter = counters[b];
  }
  SampleBatch batch;
  batch.rows = rows.data();
  be.sample(logits, batch, out);
}

TEST_F(CpuOps, GreedySamplingTakesLowestIndexOnTies) {
  const int B = 3, V = 10000;
  auto logits = randn(size_t(B) * V, 300);
  logits[0 * V + 7000] = 50;
  logits[0 * V + 9000] = 50;  // tie: 7000 wins
  logits[1 * V + 4096] = 50;  // at a chunk boundary
  logits[2 * V + 9999] = 50;
  std::vector<float> temps(B, 0.0f);
  std::vector<int64_t> keys(B, 1), counters(B, 0);
  std::vector<int32_t> out(B, -1);
  Tensor ot(out.data(), DType::i32, {B});
  sample_plain(*be, T32(logits, {B, V}), temps, keys, counters, ot);
  EXPECT_EQ(out, (std::vector<int32_t>{7000, 4096, 9999}));
}

TEST_F(CpuOps, GumbelSamplingFollowsTheDocumentedFormula) {
  const int B = 4, V = 20011;  // odd: two chunks of 10006 and 10005 entries, each ending in a partial vector
  auto logits = randn(size_t(B) * V, 301, 2.0f);
  std::vector<float> temps = {0.7f, 1.0f, 1.3f, 0.0f};
  std::vector<int64_t> keys = {11, 12, 13, 14}, counters = {0, 5, 9, 2};
  std::vector<int32_t> out(B);
  Tensor ot(out.data(), DType::i32, {B});
  sample_plain(*be, T32(logits, {B, V}), temps, keys, counters, ot);
  for (int b = 0; b < B; ++b) {
    int best = 0;
    double bv = -1e300;
    for (int v = 0; v < V; ++v) {
      double s = temps[b] == 0 ? logits[b * V + v]
                               : logits[b * V + v] / double(temps[b]) - std::log(-std::log(double(uniform01(keys[b], counters[b], v))));
      if (s > bv) bv = s, best = v;
    }
    EXPECT_EQ(out[b], best) << "row " << b;
  }
}

// Every one of the 2^23 values uniform01 can return is (i + 0.5) / 2^23, strictly inside (0, 1),
// ascending, with a finite Gumbel noise. (24 bits plus a half once rounded the top value to 1: an
// infinite noise that won the draw for 1 vocabulary entry in 2^24, 0.9% of draws over a 152K
// vocabulary.)
TEST(Rng, UniformStaysInsideZeroOneWithFiniteNoise) {
  EXPECT_EQ(uniform01_from_bits(0), std::ldexp(1.0f, -24));
  EXPECT_EQ(uniform01_from_bits(~0ULL), 1.0f - std::ldexp(1.0f, -24));
  float prev = 0.0f;
  int bad = 0;
  for (uint64_t i = 0; i < (1u << 23); ++i) {
    const float u = uniform01_from_bits(i << 41 | (i & 0xffff));  // the low bits do not matter
    const float noise = -std::log(-std::log(u));
    const float want = (static_cast<float>(i) + 0.5f) * std::ldexp(1.0f, -23);  // (i + 0.5) / 2^23
    bad += !(u == want && u > prev && u < 1.0f && std::isfinite(noise));
    prev = u;
  }
  EXPECT_EQ(bad, 0);
}

TEST_F(CpuOps, SamplingFrequenciesMatchSoftmax) {
  // 4000 draws (by counter) from softmax([0, 1, 2, ln 0.5]/T): each frequency within 0.03.
  const int V = 4, N = 4000;
  const float T = 0.9f;
  std::vector<float> row = {0.0f, 1.0f, 2.0f, std::log(0.5f)};
  std::vector<float> logits;
  for (int i = 0; i < N; ++i) logits.insert(logits.end(), row.begin(), row.end());
  std::vector<float> temps(N, T);
  std::vector<int64_t> keys(N, 42), counters(N);
  std::iota(counters.begin(), counters.end(), 0);
  std::vector<int32_t> out(N);
  Tensor ot(out.data(), DType::i32, {N});
  sample_plain(*be, T32(logits, {N, V}), temps, keys, counters, ot);
  double z = 0;
  for (float l : row) z += std::exp(l / T);
  std::vector<int> count(V, 0);
  for (int t : out) count.at(t)++;
  for (int v = 0; v < V; ++v) EXPECT_NEAR(count[v] / double(N), std::exp(row[v] / T) / z, 0.03) << v;
}

TEST_F(CpuOps, MemoryAccounting) {
  size_t free_b = 0, total_b = 0;
  be->memory_info(&free_b, &total_b);
  EXPECT_GT(total_b, 0u);
  EXPECT_LE(free_b, total_b);
  const size_t before = be->peak_allocated_bytes();
  {
    DeviceBuffer b = be->alloc(1 << 20);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.get()) % 64, 0u);
  }
  EXPECT_GE(be->peak_allocated_bytes(), before + (1 << 20));
  EXPECT_EQ(be->compute_dtype(), DType::f32);
}

// ---- the worker pool under every op ----
TEST(CpuThreadPool, EveryIndexOnceAndErrorsPropagate) {
  for (int threads : {1, 2, 3}) {
    cpu::ThreadPool pool(threads);
    for (int64_t n : {0, 1, 5, 1000}) {
      for (int rep = 0; rep < 50; ++rep) {  // many fork-joins in a row: no lost or doubled runs
        std::vector<std::atomic<int>> hits(n);
        pool.parallel_for(n, 1, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) hits[i]++;
        });
        pool.parallel_for_dynamic(n, [&](int64_t i) { hits[i]++; });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 2) << threads << " threads, n=" << n;
      }
    }
    EXPECT_THROW(pool.parallel_for_dynamic(10, [](int64_t i) { if (i == 7) throw std::runtime_error("x"); }),
                 std::runtime_error);
    int after = 0;
    pool.run(1, [&](int) { after = 1; });  // still usable after an error
    EXPECT_EQ(after, 1);
  }
}

}  // namespace
}  // namespace nanovllm
