// Numerics measurement: the engine's logits along a fixed token path (teacher forcing) and their
// distance from a reference's. The path is a reference's greedy continuation of each prompt, so
// the engine is measured at the same positions however its own greedy choices would differ; the
// logits come from the engine's real step path (chunked prefill, prefix-cache hits, decode steps
// under CUDA graphs), read back after each step. bench_numerics and the GPU numerics test use it.
#pragma once
#include <cstdint>
#include <vector>

#include "nanovllm/config.h"

namespace nanovllm {

struct NumericsCase {
  std::vector<int32_t> prompt;
  std::vector<int32_t> path;  // the continuation fed back token by token
};

// Logits of every case at every position of its path: rows[i] holds path.size() rows of the
// vocabulary, row k being the distribution that predicts path[k]. All cases run together, as
// the scheduler batches them under `config`. Throws naming a case whose prompt the config cannot take.
std::vector<std::vector<float>> teacher_forced_logits(const EngineConfig& config,
                                                      const std::vector<NumericsCase>& cases);

// The distance of one logits row `x` from the reference row `ref`.
struct RowError {
  double max_abs = 0;  // max |x - ref|
  double rel = 0;      // max_abs / (max(ref) - min(ref))
  double kl = 0;       // KL(softmax(ref) || softmax(x)), nats
  bool same_argmax = true;
};
RowError row_error(const float* ref, const float* x, int vocab);

}  // namespace nanovllm
