// FP8 weight matrices (f8e4m3 with block scales, Tensor::scale) in CUDA's linear, linear_add and
// norm_linear, against a float64 host reference over the dequantized weights (q * scale): the
// skinny kernel at M <= 8, cuBLASLt's scaled FP8 GEMM (or the bf16 fallback) beyond, and a
// captured graph replayed on new inputs. Weights and activations vary in magnitude from scale
// block to scale block and from row to row, so a scale read from the wrong place shows as an error
// many times the tolerance. Skips visibly, naming the reason, where there is no usable GPU.
//
// Tolerances, per element, with S = sum_k |x[m, k]| |w[n, k]| (normalised rows for norm_linear):
// - skinny kernel (weights dequantized in registers, x exact): the output's rounding, 2^-8 |ref|
//   for bf16 (one rounding is at most 2^-9), plus fp32 summation, 1e-5 S (chains of at most ~40
//   additions: 40 x 2^-24 = 2.4e-6);
// - cuBLASLt FP8 path: x quantized to e4m3 moves each x by at most 2^-4 |x| (3 mantissa bits,
//   round to nearest) or 2^-10 s in e4m3's subnormals (s = amax / 448 of its group), so the
//   product moves by at most 2^-4 S + 2^-10 / 448 amax(x[m]) sum_k |w[n, k]|; norm_linear's
//   bf16 normed rows add 2^-9 S (bound: (2^-4 + 2^-8) S), and the output's rounding 2^-8 |ref|.
//   The bf16 fallback (the weight rounded to bf16: 2^-9 S) is inside the same bound.
// Beside the per-element bounds, the relative L2 error: skinny 4e-3 (bf16 out, ~1.6e-3 expected)
// and 1e-5 (f32 out); FP8 path 0.05 (e4m3's relative rounding error has an RMS of ~0.026).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/half.h"

namespace nanovllm {
namespace {

constexpr int64_t kSkinnyMaxM = 8;

// Whether m rows of x against an [n, k] weight with br x bc scale blocks take an exact path (the
// activations not quantized): the one-warp-a-column kernel up to 8 rows, its tensor-core form
// (gemv_fp8_mma.cu; on unless NANOVLLM_FP8_MMA=0) up to 16 where it takes the shape (n: output
// columns a multiple of 8, k of 64, scales per row or in blocks of a multiple of 64 columns; the
// tests' operands are aligned).
bool exact_path(int64_t m, int64_t n, int64_t k, int bc) {
  const int mma = env_options().fp8_mma;
  return m <= kSkinnyMaxM ||
         (mma > 0 && m <= 16 && n % 8 == 0 && k % 64 == 0 && (bc >= k || bc % 64 == 0));
}

float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

// A quantized weight on the host: e4m3 codes, block scales (Tensor::scale's layout), and the
// dequantized values the reference multiplies with.
struct HostFp8 {
  int64_t n = 0, k = 0;
  int br = 0, bc = 0;
  int64_t scale_rows = 0, scale_cols = 0;
  std::vector<uint8_t> q;
  std::vector<float> scale;
  std::vector<double> deq;  // q * scale
  std::vector<double> abs_row_sum;  // sum_k |deq[n, k]|
};

// Blocks of br x bc: scale = amax / 448 (1 for zeros), q = e4m3(w / scale), as the loader makes them.
HostFp8 quantize(const std::vector<float>& w, int64_t n, int64_t k, int br, int bc) {
  HostFp8 h;
  h.n = n, h.k = k, h.br = br, h.bc = bc;
  h.scale_rows = (n + br - 1) / br;
  h.scale_cols = (k + bc - 1) / bc;
  h.q.resize(n * k);
  h.scale.resize(h.scale_rows * h.scale_cols);
  h.deq.resize(n * k);
  h.abs_row_sum.assign(n, 0.0);
  for (int64_t sr = 0; sr < h.scale_rows; ++sr)
    for (int64_t sc = 0; sc < h.scale_cols; ++sc) {
      const int64_t r0 = sr * br, r1 = std::min(n, r0 + br), c0 = sc * bc, c1 = std::min(k, c0 + bc);
      float amax = 0.f;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(w[r * k + c]));
      const float s = amax > 0.f ? amax / 448.f : 1.f;
      h.scale[sr * h.scale_cols + sc] = s;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) {
          const uint8_t q = f32_to_fp8_e4m3(w[r * k + c] / s);
          h.q[r * k + c] = q;
          h.deq[r * k + c] = static_cast<double>(fp8_e4m3_to_f32(q)) * s;
          h.abs_row_sum[r] += std::fabs(h.deq[r * k + c]);
        }
    }
  return h;
}

// The reference for one (x, w): y = x w^T and S = |x| |w|^T in float64.
struct Reference {
  std::vector<double> y, s;
  std::vector<double> amax_row;  // max_k |x[m, k]|
};

Reference reference(const std::vector<double>& x, int64_t m, const HostFp8& w) {
  Reference r;
  r.y.assign(m * w.n, 0.0);
  r.s.assign(m * w.n, 0.0);
  r.amax_row.assign(m, 0.0);
  for (int64_t i = 0; i < m; ++i) {
    const double* xr = &x[i * w.k];
    for (int64_t c = 0; c < w.k; ++c) r.amax_row[i] = std::max(r.amax_row[i], std::fabs(xr[c]));
    for (int64_t j = 0; j < w.n; ++j) {
      const double* wr = &w.deq[j * w.k];
      double y = 0, s = 0;
      for (int64_t c = 0; c < w.k; ++c) {
        y += xr[c] * wr[c];
        s += std::fabs(xr[c] * wr[c]);
      }
      r.y[i * w.n + j] = y;
      r.s[i * w.n + j] = s;
    }
  }
  return r;
}

class Fp8GemmOps : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda_available(&why)) GTEST_SKIP() << "CUDA FP8 GEMM tests skipped: " << why;
    gpu_ = make_backend(DeviceKind::cuda, BackendOptions{}.with_env(env_options()));
    const uint64_t seed = std::random_device{}();
    rng_.seed(seed);
    RecordProperty("seed", std::to_string(seed));
    std::printf("[ seed     ] %llu\n", static_cast<unsigned long long>(seed));
  }
  void TearDown() override { bufs_.clear(); }

  // w[n, k] ~ N(0, 0.05), each scale block's magnitude a different multiple (0.5 .. 2.5).
  std::vector<float> weights(int64_t n, int64_t k, int br, int bc) {
    std::normal_distribution<float> d(0.f, 0.05f);
    std::vector<float> w(n * k);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) w[r * k + c] = d(rng_) * 0.5f * (1 + ((r / br) * 7 + (c / bc) * 3) % 5);
    return w;
  }
  // x[m, k] ~ N(0, 1) times 1 .. 4 by row and 128-column group (bf16-representable).
  std::vector<float> activations(int64_t m, int64_t k, float scale = 1.f) {
    std::normal_distribution<float> d(0.f, scale);
    std::vector<float> x(m * k);
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < k; ++c) x[r * k + c] = round_bf16(d(rng_) * (1 + (r * 3 + c / 128) % 4));
    return x;
  }

  // The weight on the GPU: codes, then (256-byte aligned) its f32 scales in the same buffer.
  Tensor upload(const HostFp8& h) {
    const size_t data_bytes = (static_cast<size_t>(h.n * h.k) + 255) / 256 * 256;
    const size_t bytes = data_bytes + h.scale.size() * sizeof(float);
    bufs_.push_back(gpu_->alloc(bytes));
    char* p = static_cast<char*>(bufs_.back().get());
    gpu_->copy_to_device(p, h.q.data(), h.q.size());
    gpu_->copy_to_device(p + data_bytes, h.scale.data(), h.scale.size() * sizeof(float));
    Tensor t(p, DType::f8e4m3, {h.n, h.k}, DeviceKind::cuda);
    t.scale = reinterpret_cast<float*>(p + data_bytes);
    t.scale_block[0] = h.br;
    t.scale_block[1] = h.bc;
    return t;
  }
  Tensor device(DType t, std::initializer_list<int64_t> shape, const std::vector<float>& vals) {
    Tensor d = gpu_->alloc_tensor(t, shape, bufs_);
    Tensor host(const_cast<float*>(vals.data()), DType::f32, shape);
    gpu_->upload_convert(host, d);
    return d;
  }
  std::vector<double> download(const Tensor& g) {
    std::vector<double> v(static_cast<size_t>(g.numel()));
    if (g.dtype == DType::f32) {
      std::vector<float> h(v.size());
      gpu_->copy_to_host(h.data(), g.data, g.nbytes());
      for (size_t i = 0; i < v.size(); ++i) v[i] = h[i];
    } else {
      std::vector<uint16_t> h(v.size());
      gpu_->copy_to_host(h.data(), g.data, g.nbytes());
      for (size_t i = 0; i < v.size(); ++i) v[i] = bf16_to_f32(h[i]);
    }
    return v;
  }

  // got against ref element by element within the path's bound (file comment), and the relative
  // L2 error within l2_tol. fp8_path: m > 8 (activations quantized, or the bf16 fallback).
  static void expect_close(const std::vector<double>& ref, const Reference& r, const HostFp8& w,
                           const std::vector<double>& got, bool fp8_path, DType out_t, const std::string& what) {
    ASSERT_EQ(ref.size(), got.size()) << what;
    const double out_rel = out_t == DType::bf16 ? 1.0 / 256 : 0.0;
    const int64_t n = w.n;
    double num = 0, den = 0, worst = 0;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      const int64_t row = static_cast<int64_t>(i) / n, col = static_cast<int64_t>(i) % n;
      const double bound = fp8_path ? (1.0 / 16 + 1.0 / 256) * r.s[i] + out_rel * std::fabs(ref[i]) +
                                          1e-5 * r.amax_row[row] * w.abs_row_sum[col] + 1e-6
                                    : 1e-5 * r.s[i] + (out_rel + 1e-5) * std::fabs(ref[i]) + 1e-6;
      const double d = std::fabs(got[i] - ref[i]);
      if (!(d <= bound)) {  // NaN fails too
        if (!bad++) first_bad = i;
      }
      worst = std::max(worst, d / bound);
      num += (got[i] - ref[i]) * (got[i] - ref[i]);
      den += ref[i] * ref[i];
    }
    EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << ref.size() << " outputs outside the bound, first [" <<
        first_bad / n << ", " << first_bad % n << "]: got " << got[first_bad] << ", expected " << ref[first_bad];
    const double rel = std::sqrt(num / std::max(den, 1e-30));
    const double l2_tol = fp8_path ? 0.05 : out_t == DType::bf16 ? 4e-3 : 1e-5;
    EXPECT_LE(rel, l2_tol) << what << ": relative L2 error " << rel;
    std::printf("[achieved] %-52s rel L2 %.3g (tol %.3g), worst |err| / bound %.3g\n", what.c_str(), rel, l2_tol,
                worst);
  }

  // linear and linear_add at each m, bf16 and f32 out, against the float64 reference.
  void check_linear(int64_t n, int64_t k, int br, int bc, std::initializer_list<int64_t> ms) {
    const HostFp8 h = quantize(weights(n, k, br, bc), n, k, br, bc);
    const Tensor w = upload(h);
    for (int64_t m : ms) {
      const std::vector<float> xv = activations(m, k);
      const Tensor x = device(DType::bf16, {m, k}, xv);
      const Reference r = reference(std::vector<double>(xv.begin(), xv.end()), m, h);
      for (DType out_t : {DType::bf16, DType::f32}) {
        const std::string tag = "[" + std::to_string(n) + ", " + std::to_string(k) + "] blocks " +
                                std::to_string(br) + "x" + std::to_string(bc) + " m " + std::to_string(m) + " " +
                                dtype_name(out_t);
        SCOPED_TRACE(tag);
        std::vector<float> nan(m * n, std::nanf(""));
        Tensor o = device(out_t, {m, n}, nan);  // poisoned: an unwritten element fails
        gpu_->linear(x, w, o);
        expect_close(r.y, r, h, download(o), !exact_path(m, n, k, bc), out_t, "linear " + tag);
        // out += x w^T onto earlier contents (the residual stream).
        std::vector<float> old = activations(m, n, 2.f);
        Tensor acc = device(out_t, {m, n}, old);
        std::vector<double> want(r.y);
        for (size_t i = 0; i < want.size(); ++i) want[i] += old[i];
        gpu_->linear_add(x, w, acc);
        expect_close(want, r, h, download(acc), !exact_path(m, n, k, bc), out_t, "linear_add " + tag);
      }
    }
  }

  // A norm weight around 1, in bf16.
  std::vector<float> norm_weight(int64_t k) {
    std::normal_distribution<float> d(0.f, 0.3f);
    std::vector<float> gv(k);
    for (auto& g : gv) g = round_bf16(1.f + d(rng_));
    return gv;
  }
  // x's m rows RMS-normalised and times g, in float64.
  static std::vector<double> rms_normed(const std::vector<float>& xv, int64_t m, int64_t k,
                                        const std::vector<float>& gv, float eps) {
    std::vector<double> xn(m * k);
    for (int64_t r = 0; r < m; ++r) {
      double ss = 0;
      for (int64_t c = 0; c < k; ++c) ss += static_cast<double>(xv[r * k + c]) * xv[r * k + c];
      const double inv = 1.0 / std::sqrt(ss / k + eps);
      for (int64_t c = 0; c < k; ++c) xn[r * k + c] = xv[r * k + c] * inv * gv[c];
    }
    return xn;
  }

  // norm_linear: out = rms_norm(x, g) w^T (bf16 out), the reference normalising in float64.
  void check_norm_linear(int64_t n, int64_t k, int br, int bc, std::initializer_list<int64_t> ms) {
    const HostFp8 h = quantize(weights(n, k, br, bc), n, k, br, bc);
    const Tensor w = upload(h);
    const std::vector<float> gv = norm_weight(k);
    const Tensor g = device(DType::bf16, {k}, gv);
    const float eps = 1e-6f;
    for (int64_t m : ms) {
      const std::string tag = "[" + std::to_string(n) + ", " + std::to_string(k) + "] blocks " + std::to_string(br) +
                              "x" + std::to_string(bc) + " m " + std::to_string(m);
      SCOPED_TRACE(tag);
      const std::vector<float> xv = activations(m, k, 3.f);
      const Reference r = reference(rms_normed(xv, m, k, gv, eps), m, h);
      const Tensor x = device(DType::bf16, {m, k}, xv);
      std::vector<float> nan(m * n, std::nanf(""));
      Tensor o = device(DType::bf16, {m, n}, nan);
      Tensor normed = gpu_->alloc_tensor(DType::bf16, {m, k}, bufs_);
      gpu_->norm_linear(x, g, eps, w, o, normed);
      expect_close(r.y, r, h, download(o), !exact_path(m, n, k, bc), DType::bf16, "norm_linear " + tag);
    }
  }

  // norm_linear_act: out = act(y[:, :I]) * y[:, I:], y = rms_norm(x, g) w^T over a fused gate/up
  // weight [2I, k]. Skinny path (M <= 8, one kernel, y kept in float32), per element: the sums'
  // 1e-5 S each carried through act (|act'| <= 1.13 for SiLU and tanh-GELU) and the product, plus
  // the output's rounding 2^-8 |z|; relative L2 4e-3. Beyond M = 8: norm_linear (the FP8 path)
  // rounded to bf16, then act_mul: relative L2 0.08 (two factors of the FP8 path's ~0.026 each).
  void check_norm_linear_act(int64_t inter, int64_t k, int br, int bc, Activation act,
                             std::initializer_list<int64_t> ms) {
    const int64_t n = 2 * inter;
    const HostFp8 h = quantize(weights(n, k, br, bc), n, k, br, bc);
    const Tensor w = upload(h);
    const std::vector<float> gv = norm_weight(k);
    const Tensor g = device(DType::bf16, {k}, gv);
    const float eps = 1e-6f;
    auto f = [act](double v) {
      return act == Activation::silu ? v / (1.0 + std::exp(-v))
                                     : 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
    };
    for (int64_t m : ms) {
      const std::string tag = std::string(act == Activation::silu ? "silu" : "gelu_tanh") + " I " +
                              std::to_string(inter) + " k " + std::to_string(k) + " blocks " + std::to_string(br) +
                              "x" + std::to_string(bc) + " m " + std::to_string(m);
      SCOPED_TRACE(tag);
      const std::vector<float> xv = activations(m, k, 3.f);
      const Reference r = reference(rms_normed(xv, m, k, gv, eps), m, h);
      const Tensor x = device(DType::bf16, {m, k}, xv);
      std::vector<float> nan(m * inter, std::nanf(""));
      Tensor o = device(DType::bf16, {m, inter}, nan);
      Tensor gate_up = gpu_->alloc_tensor(DType::bf16, {m, n}, bufs_);
      Tensor normed = gpu_->alloc_tensor(DType::bf16, {m, k}, bufs_);
      gpu_->norm_linear_act(x, g, eps, w, act, o, gate_up, normed);
      const std::vector<double> got = download(o);
      double num = 0, den = 0, worst = 0;
      size_t bad = 0;
      for (int64_t row = 0; row < m; ++row)
        for (int64_t j = 0; j < inter; ++j) {
          const size_t gi = row * n + j, ui = gi + inter;
          const double z = f(r.y[gi]) * r.y[ui], e = got[row * inter + j] - z;
          const double bound = 1.13 * 1e-5 * r.s[gi] * std::fabs(r.y[ui]) + std::fabs(f(r.y[gi])) * 1e-5 * r.s[ui] +
                               std::fabs(z) / 256 + 1e-6;
          if (exact_path(m, inter, k, bc) && !(std::fabs(e) <= bound)) ++bad;
          worst = std::max(worst, std::fabs(e) / bound);
          num += e * e;
          den += z * z;
        }
      const double rel = std::sqrt(num / std::max(den, 1e-30)), tol = exact_path(m, inter, k, bc) ? 4e-3 : 0.08;
      EXPECT_EQ(bad, 0u) << tag << ": outputs outside the per-element bound";
      EXPECT_LE(rel, tol) << tag << ": relative L2 error " << rel;
      std::printf("[achieved] norm_linear_act %-36s rel L2 %.3g (tol %.3g), worst |err| / bound %.3g\n",
                  tag.c_str(), rel, tol, worst);
    }
  }

  std::unique_ptr<Backend> gpu_;
  std::vector<DeviceBuffer> bufs_;
  std::mt19937_64 rng_;
};

// Every M the paths split at: the skinny kernel at 1, its tensor-core form at 2..16 (the sizes
// below 8 and 16 leave rows of the mma's A zero), the skinny kernel's 1, 2, 4, 8 instantiations
// where the tensor-core form does not take the shape, then cuBLASLt's (odd ones leave 1-3 rows to
// the skinny kernel with 128 x 128 blocks).
#define FP8_MS {1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 17, 33, 128, 512}

TEST_F(Fp8GemmOps, TakesE4m3Weights) {
  EXPECT_TRUE(gpu_->takes_scaled_weight(DType::f8e4m3));
  EXPECT_FALSE(gpu_->takes_scaled_weight(DType::f8e5m2));
  EXPECT_FALSE(gpu_->takes_scaled_weight(DType::bf16));
}

// Per output channel {1, K}: --quantization fp8, per-channel and per-tensor checkpoints. K = 1024:
// the skinny kernel's registers-only path; cuBLASLt with outer-vector scales.
TEST_F(Fp8GemmOps, LinearPerChannel) { check_linear(768, 1024, 1, 1024, FP8_MS); }

// 128 x 128 blocks (Qwen3-FP8, DeepSeek): cuBLASLt with BLK128x128 / VEC128 scales.
TEST_F(Fp8GemmOps, LinearBlock128) { check_linear(1024, 2048, 128, 128, FP8_MS); }

// N not a multiple of 128 (a partial last block row: the fallback beyond M = 8), K = 1536: the
// skinny kernel's loop path.
TEST_F(Fp8GemmOps, LinearBlock128PartialRows) { check_linear(1000, 1536, 128, 128, FP8_MS); }

// N and K not multiples of 128 (partial last blocks both ways; 9 block columns: the fallback).
TEST_F(Fp8GemmOps, LinearBlock128PartialBoth) { check_linear(600, 1040, 128, 128, FP8_MS); }

// K not a multiple of 16: the skinny kernel's per-element path; the fallback beyond.
TEST_F(Fp8GemmOps, LinearOddK) { check_linear(130, 200, 128, 128, {1, 3, 8, 33}); }

// K a multiple of 64 but not of 512: the tensor-core form's loop kernel, a partial last scale block.
TEST_F(Fp8GemmOps, LinearMmaLoop) { check_linear(200, 576, 128, 128, {2, 8, 9, 16}); }

// {1, 128}: block scales replicated per row (the tensor-core form up to M = 16, the fallback beyond).
TEST_F(Fp8GemmOps, LinearRowGroups) { check_linear(256, 512, 1, 128, {1, 5, 8, 16, 33}); }

TEST_F(Fp8GemmOps, NormLinear) {
  check_norm_linear(1024, 1024, 1, 1024, {1, 3, 8, 16, 33, 128});
  check_norm_linear(1024, 2048, 128, 128, {1, 2, 8, 11, 16, 33, 128});
  check_norm_linear(600, 1040, 128, 128, {1, 7, 33});
}

// The gated skinny kernels over FP8 weights: the M = 1 kernel (K = 1024), the tensor-core form at
// M 2-16 (K = 1024, 1536, and 576 in its loop), the one-warp-a-column kernel's loop (M = 1, K =
// 1536) and per-element (K = 200, I = 131: the tensor-core form does not take it) paths, a
// partial last block of gate columns (I = 1000: 250 blocks of 4, I = 131: the last block clamped),
// both activations, and the FP8 path at M = 17.
TEST_F(Fp8GemmOps, NormLinearAct) {
  for (Activation act : {Activation::silu, Activation::gelu_tanh}) {
    check_norm_linear_act(1024, 1024, 1, 1024, act, {1, 2, 3, 8, 13, 16, 17});
    check_norm_linear_act(1000, 1536, 128, 128, act, {1, 5});
    check_norm_linear_act(131, 200, 128, 128, act, {1, 4});
    check_norm_linear_act(200, 576, 128, 128, act, {2, 16});
  }
}

// A captured graph of FP8 linears (the skinny kernel; quantization and cuBLASLt; per channel and
// 128 x 128 blocks; linear_add) replays on new inputs. Each shape runs once eagerly first, as the
// engine's warm-up does, so the buffers have grown before the capture.
TEST_F(Fp8GemmOps, GraphReplay) {
  ASSERT_TRUE(gpu_->supports_graphs());
  const int64_t n = 512, k = 1024;
  const HostFp8 hc = quantize(weights(n, k, 1, k), n, k, 1, static_cast<int>(k));
  const HostFp8 hb = quantize(weights(n, k, 128, 128), n, k, 128, 128);
  const Tensor wc = upload(hc), wb = upload(hb);
  struct Call {
    int64_t m;
    const HostFp8* h;
    Tensor w, x, o;
    std::vector<float> xv;
  };
  std::vector<Call> calls;
  for (int64_t m : {4, 64, 37})
    for (const HostFp8* h : {&hc, &hb}) {
      Call c{m, h, h == &hc ? wc : wb, {}, {}, {}};
      c.xv = activations(m, k);
      c.x = device(DType::bf16, {m, k}, c.xv);
      c.o = gpu_->alloc_tensor(DType::bf16, {m, n}, bufs_);
      calls.push_back(c);
    }
  // o = x w^T, then o += x w^T: the replay must give 2 x w^T.
  auto ops = [&] {
    for (Call& c : calls) {
      gpu_->linear(c.x, c.w, c.o);
      gpu_->linear_add(c.x, c.w, c.o);
    }
  };
  ops();
  gpu_->synchronize();
  const int handle = gpu_->capture_graph(ops);
  ASSERT_GE(handle, 0);
  for (int round = 0; round < 2; ++round) {
    for (Call& c : calls) {
      c.xv = activations(c.m, k);
      Tensor host(c.xv.data(), DType::f32, {c.m, k});
      gpu_->upload_convert(host, c.x);
    }
    gpu_->replay_graph(handle);
    for (Call& c : calls) {
      const Reference r = reference(std::vector<double>(c.xv.begin(), c.xv.end()), c.m, *c.h);
      Reference r2 = r;
      for (double& v : r2.y) v *= 2;
      for (double& v : r2.s) v *= 2;
      const std::string tag = "graph round " + std::to_string(round) + " m " + std::to_string(c.m) +
                              (c.h == &hc ? " per channel" : " 128x128");
      expect_close(r2.y, r2, *c.h, download(c.o), !exact_path(c.m, n, k, c.h->bc), DType::bf16, tag);
    }
  }
}

// A shape larger than any run before, first met inside a capture, cannot grow the buffers there:
// the capture fails naming the reason, and the backend works afterwards.
TEST_F(Fp8GemmOps, GrowingInsideCaptureFailsClearly) {
  const int64_t n = 256, k = 1024;
  const HostFp8 h = quantize(weights(n, k, 1, k), n, k, 1, static_cast<int>(k));
  const Tensor w = upload(h);
  const std::vector<float> small = activations(16, k), big = activations(300, k);
  const Tensor xs = device(DType::bf16, {16, k}, small), xb = device(DType::bf16, {300, k}, big);
  Tensor os = gpu_->alloc_tensor(DType::bf16, {16, n}, bufs_), ob = gpu_->alloc_tensor(DType::bf16, {300, n}, bufs_);
  gpu_->linear(xs, w, os);  // the buffers now fit 16 rows
  try {
    gpu_->capture_graph([&] { gpu_->linear(xb, w, ob); });
    ADD_FAILURE() << "growing the FP8 activation buffer inside a capture did not throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("capture"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("FP8"), std::string::npos) << e.what();
  }
  gpu_->linear(xb, w, ob);  // eagerly it grows and runs
  const Reference r = reference(std::vector<double>(big.begin(), big.end()), 300, h);
  expect_close(r.y, r, h, download(ob), true, DType::bf16, "after the failed capture");
}

// An FP8 matrix without its scales is refused before any launch, naming the weight.
TEST_F(Fp8GemmOps, MissingScalesAreRefused) {
  const HostFp8 h = quantize(weights(64, 128, 1, 128), 64, 128, 1, 128);
  Tensor w = upload(h);
  w.scale = nullptr;
  const Tensor x = device(DType::bf16, {2, 128}, activations(2, 128));
  Tensor o = gpu_->alloc_tensor(DType::bf16, {2, 64}, bufs_);
  try {
    gpu_->linear(x, w, o);
    ADD_FAILURE() << "an FP8 weight without scales was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("scales"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace nanovllm
