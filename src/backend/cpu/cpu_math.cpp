#include "backend/cpu/cpu_math.h"

#include "backend/cpu/cpu_ops.h"

namespace nanovllm::cpu {

void exp_rows(const float* x, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, exp8(_mm256_loadu_ps(x + i)));
  if (i < n) store_partial(out + i, exp8(load_partial(x + i, static_cast<int>(n - i), 0.0f)), static_cast<int>(n - i));
}

void log_rows(const float* x, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, log8(_mm256_loadu_ps(x + i)));
  if (i < n) store_partial(out + i, log8(load_partial(x + i, static_cast<int>(n - i), 1.0f)), static_cast<int>(n - i));
}

}  // namespace nanovllm::cpu
