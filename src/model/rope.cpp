// rope_table: transformers' modeling_rope_utils, in the same float32 operations.
#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace nanovllm {
namespace {

std::vector<float> default_inv_freq(double theta, int dim) {
  std::vector<float> inv(dim / 2);
  for (int i = 0; i < dim / 2; ++i)
    inv[i] = 1.0f / std::pow(static_cast<float>(theta), static_cast<float>(2 * i) / static_cast<float>(dim));
  return inv;
}

// Llama 3.1: low frequencies divided by factor, high kept, a smooth ramp between.
void llama3(const RopeConfig& r, int max_pos, std::vector<float>& inv) {
  const float old_len = static_cast<float>(r.original_max_position_embeddings > 0 ? r.original_max_position_embeddings
                                                                                  : max_pos);
  const float factor = static_cast<float>(r.factor), lo = static_cast<float>(r.low_freq_factor),
              hi = static_cast<float>(r.high_freq_factor);
  const float low_wavelen = old_len / lo, high_wavelen = old_len / hi;
  for (float& f : inv) {
    const float wavelen = static_cast<float>(2 * M_PI) / f;
    float scaled = wavelen > low_wavelen ? f / factor : f;
    if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
      const float smooth = (old_len / wavelen - lo) / (hi - lo);
      scaled = (1 - smooth) * scaled / factor + smooth * scaled;
    }
    f = scaled;
  }
}

// YaRN: interpolated (divided by factor) and extrapolated frequencies blended over a ramp of
// dimensions, and cos/sin scaled by an attention factor.
float yarn(const RopeConfig& r, int dim, int max_pos, std::vector<float>& inv) {
  const double factor = r.factor;
  const double orig = r.original_max_position_embeddings > 0 ? r.original_max_position_embeddings : max_pos;
  auto mscale = [](double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; };
  double attention = r.attention_factor ? *r.attention_factor
                     : (r.mscale > 0 && r.mscale_all_dim > 0) ? mscale(factor, r.mscale) / mscale(factor, r.mscale_all_dim)
                                                              : mscale(factor, 1.0);
  auto correction_dim = [&](double rotations) {
    return (dim * std::log(orig / (rotations * 2 * M_PI))) / (2 * std::log(r.theta));
  };
  double low = correction_dim(r.beta_fast), high = correction_dim(r.beta_slow);
  if (r.truncate) low = std::floor(low), high = std::ceil(high);
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;
  for (int i = 0; i < dim / 2; ++i) {
    const float pos_freq = std::pow(static_cast<float>(r.theta), static_cast<float>(2 * i) / static_cast<float>(dim));
    const float extrapolation = 1.0f / pos_freq, interpolation = 1.0f / (static_cast<float>(factor) * pos_freq);
    const float ramp = std::clamp(static_cast<float>((i - low) / (high - low)), 0.0f, 1.0f);
    const float extra = 1.0f - ramp;
    inv[i] = interpolation * (1.0f - extra) + extrapolation * extra;
  }
  return static_cast<float>(attention);
}

}  // namespace

std::vector<float> rope_inv_freq(const RopeConfig& r, int dim, int max_pos, float* attention_factor) {
  *attention_factor = 1.0f;
  if (r.type == "dynamic") {  // vLLM's static NTK table for max_pos * factor positions
    const double base = r.theta * std::pow(r.factor * r.factor - (r.factor - 1), static_cast<double>(dim) / (dim - 2));
    return default_inv_freq(base, dim);
  }
  std::vector<float> inv = default_inv_freq(r.theta, dim);
  if (r.type == "linear") {
    for (float& f : inv) f /= static_cast<float>(r.factor);
  } else if (r.type == "llama3") {
    llama3(r, max_pos, inv);
  } else if (r.type == "yarn") {
    *attention_factor = yarn(r, dim, max_pos, inv);
  } else if (r.type != "default") {
    throw std::invalid_argument("rope_type " + r.type + " is not supported");
  }
  return inv;
}

std::vector<float> rope_table(const RopeConfig& r, int max_pos, int D, int max_position_embeddings) {
  float attention = 1.0f;
  const std::vector<float> inv = rope_inv_freq(r, D, max_position_embeddings, &attention);
  const int half = D / 2;
  std::vector<float> table(static_cast<size_t>(max_pos) * D);
  for (int p = 0; p < max_pos; ++p) {
    for (int i = 0; i < half; ++i) {
      const float angle = static_cast<float>(p) * inv[i];
      table[static_cast<size_t>(p) * D + i] = static_cast<float>(std::cos(static_cast<double>(angle))) * attention;
      table[static_cast<size_t>(p) * D + half + i] = static_cast<float>(std::sin(static_cast<double>(angle))) * attention;
    }
  }
  return table;
}

}  // namespace nanovllm
