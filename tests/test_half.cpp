// half.h's FP8 conversions (the FP8 KV cache's; CUDA's __nv_cvt_float_to_fp8 with __NV_SATFINITE
// is the rule) against references written here from the formats' definitions: every one of the
// 256 codes decoded, and encoding as the nearest finite code by brute force (ties to the even
// code, saturating beyond the largest finite value), at every midpoint between codes and around it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "backend/half.h"

namespace nanovllm {
namespace {

struct Format {
  const char* name;
  int man_bits, bias;
  bool ieee;  // e5m2: exponent all ones is inf/NaN; e4m3 ("fn"): only 0x7f/0xff are NaN
  float (*decode)(uint8_t);
  uint8_t (*encode)(float);
};
const Format kE4m3{"e4m3", 3, 7, false, fp8_e4m3_to_f32, f32_to_fp8_e4m3};
const Format kE5m2{"e5m2", 2, 15, true, fp8_e5m2_to_f32, f32_to_fp8_e5m2};

// The code's value from the format's definition, in double (NaN for NaN codes).
double reference_value(const Format& f, int code) {
  const int e_bits = 7 - f.man_bits;
  const int sign = code >> 7, exp = (code >> f.man_bits) & ((1 << e_bits) - 1), man = code & ((1 << f.man_bits) - 1);
  const int exp_max = (1 << e_bits) - 1;
  double mag;
  if (f.ieee && exp == exp_max) mag = man ? std::numeric_limits<double>::quiet_NaN() : INFINITY;
  else if (!f.ieee && exp == exp_max && man == (1 << f.man_bits) - 1) mag = std::numeric_limits<double>::quiet_NaN();
  else if (exp == 0) mag = std::ldexp(man, 1 - f.bias - f.man_bits);
  else mag = std::ldexp(1.0 + man / double(1 << f.man_bits), exp - f.bias);
  return sign ? -mag : mag;
}

// The positive finite codes in increasing order (0 first).
std::vector<int> finite_codes(const Format& f) {
  std::vector<int> c;
  for (int code = 0; code < 128; ++code)
    if (std::isfinite(reference_value(f, code))) c.push_back(code);
  return c;
}

// The nearest finite code to x (ties to the even code), saturating; NaN -> 0x7f.
uint8_t reference_encode(const Format& f, float x) {
  if (std::isnan(x)) return 0x7f;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  const double a = std::fabs(static_cast<double>(x));
  const std::vector<int> codes = finite_codes(f);
  if (a >= reference_value(f, codes.back())) return sign | static_cast<uint8_t>(codes.back());  // saturate
  int best = 0;
  double best_d = INFINITY;
  for (int code : codes) {
    const double d = std::fabs(reference_value(f, code) - a);
    if (d < best_d || (d == best_d && (code & 1) == 0)) {
      best = code;
      best_d = d;
    }
  }
  return sign | static_cast<uint8_t>(best);
}

TEST(Fp8Conversions, EveryCodeDecodesToItsValue) {
  for (const Format& f : {kE4m3, kE5m2})
    for (int code = 0; code < 256; ++code) {
      const double want = reference_value(f, code);
      const float got = f.decode(static_cast<uint8_t>(code));
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(got)) << f.name << " code " << code;
      } else {
        EXPECT_EQ(static_cast<double>(got), want) << f.name << " code " << code;
        EXPECT_EQ(std::signbit(got), code >= 128) << f.name << " code " << code;  // -0 too
      }
    }
  // The formats' landmarks.
  EXPECT_EQ(fp8_e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(fp8_e4m3_to_f32(0x01), std::ldexp(1.0f, -9));
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_f32(0x7f)) && std::isnan(fp8_e4m3_to_f32(0xff)));
  EXPECT_EQ(fp8_e5m2_to_f32(0x7b), 57344.0f);
  EXPECT_EQ(fp8_e5m2_to_f32(0x01), std::ldexp(1.0f, -16));
  EXPECT_EQ(fp8_e5m2_to_f32(0x7c), INFINITY);
}

TEST(Fp8Conversions, EveryFiniteCodeEncodesBackToItself) {
  for (const Format& f : {kE4m3, kE5m2})
    for (int code = 0; code < 256; ++code) {
      const float v = f.decode(static_cast<uint8_t>(code));
      if (!std::isfinite(v)) continue;
      EXPECT_EQ(f.encode(v), code) << f.name << " code " << code << " value " << v;
    }
}

TEST(Fp8Conversions, RoundsToNearestEvenAndSaturates) {
  for (const Format& f : {kE4m3, kE5m2}) {
    SCOPED_TRACE(f.name);
    const std::vector<int> codes = finite_codes(f);
    std::vector<float> xs;
    // Every midpoint between neighbouring codes (an exact tie: ties go to the even code), and
    // one float ulp either side of it (the nearer code, whichever parity).
    for (size_t i = 0; i + 1 < codes.size(); ++i) {
      const float mid = static_cast<float>((reference_value(f, codes[i]) + reference_value(f, codes[i + 1])) / 2);
      xs.insert(xs.end(), {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)});
    }
    // Beyond the largest finite value: half an ulp above it, far above, the largest float, inf.
    const double max = reference_value(f, codes.back());
    const double ulp = max - reference_value(f, codes[codes.size() - 2]);
    xs.insert(xs.end(), {static_cast<float>(max + ulp / 2), static_cast<float>(max + ulp), static_cast<float>(4 * max),
                         std::numeric_limits<float>::max(), INFINITY});
    // Below the smallest subnormal, and random values over the whole range.
    xs.insert(xs.end(), {0.0f, 1e-30f, static_cast<float>(reference_value(f, 1) / 2),
                         static_cast<float>(reference_value(f, 1) / 2 * 1.0001)});
    std::mt19937 gen(7);
    std::uniform_real_distribution<double> log_mag(std::log2(reference_value(f, 1)) - 2, std::log2(max) + 1);
    for (int i = 0; i < 20000; ++i) xs.push_back(static_cast<float>(std::exp2(log_mag(gen))));
    for (float x : xs)
      for (float s : {x, -x}) ASSERT_EQ(f.encode(s), reference_encode(f, s)) << "x = " << s;
    // NaN gives 0x7f; saturation is to the largest finite code, with the sign.
    EXPECT_EQ(f.encode(std::numeric_limits<float>::quiet_NaN()), 0x7f);
    EXPECT_EQ(f.encode(INFINITY), codes.back());
    EXPECT_EQ(f.encode(-INFINITY), 0x80 | codes.back());
  }
  // Spot values worked by hand: 464 is e4m3's tie between 448 and (nonexistent) 480, 17 between
  // 16 and 18 (16 is even), 2^-10 a tie between 0 and the smallest subnormal.
  EXPECT_EQ(f32_to_fp8_e4m3(464.0f), 0x7e);
  EXPECT_EQ(f32_to_fp8_e4m3(17.0f), 0x58);
  EXPECT_EQ(f32_to_fp8_e4m3(std::ldexp(1.0f, -10)), 0x00);
  EXPECT_EQ(f32_to_fp8_e4m3(std::ldexp(1.5f, -10)), 0x01);
  EXPECT_EQ(f32_to_fp8_e5m2(61440.0f), 0x7b);  // 57344 + half an ulp: saturates, no inf
  EXPECT_EQ(f32_to_fp8_e5m2(-1e9f), 0xfb);
}

}  // namespace
}  // namespace nanovllm
