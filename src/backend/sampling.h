// What the backend's sample and logprobs ops take: one SamplingRow per logits row, the batch's
// sparse logit adds, and the token counts the penalties read, kept in the backend's memory from
// step to step.
//
// The sample op processes row b in vLLM's order (vllm/v1/sample/sampler.py):
//   1. x = logits[b]                                     (f32, as the model produced them)
//   2. x[id] += value for the row's sparse adds          (logit_bias; min_tokens puts -inf on EOS
//                                                         and the stop token ids)
//   3. penalties, with the row's TokenCounts:           (each only when set)
//        repetition r:  x = x > 0 ? x / r : x * r        for ids in the prompt or the output (HF's rule)
//        frequency f:   x -= f * count(id)               over the output (OpenAI's rule)
//        presence p:    x -= p * (count(id) > 0)
//   4. temperature 0 (greedy): the token is argmax x (lowest id on ties); steps 5-9 do not apply.
//   5. x *= 1 / temperature
//   6. min_p:  drop ids with x < max(x) + log(min_p)
//   7. top_k:  drop ids with x below the k-th largest x (ids tied with it stay)
//   8. top_p:  over the softmax of what is left, drop every id whose strictly larger survivors
//              already hold top_p of the mass (tied ids stay or go together; the largest stays)
//   9. the token is argmax over the survivors of x - log(-log u_id), u_id = uniform01(key,
//      counter, id) (backend/rng.h): a draw from the survivors' renormalised softmax, the same
//      numbers on every backend and whatever the batch.
// Then, when the row has a counts row, counts[counts_row][token] += 1.
// Steps 6-8 all keep an upper set of x, so the survivors are {x >= threshold}: the CUDA sampler
// finds that threshold from each 4096-id chunk's top_k (top_k <= 64) or by histogram passes over
// the row, never sorting it (sampling.cu).
#pragma once
#include <cstdint>

#include "backend/tensor.h"

#ifdef __CUDACC__
#define NANOVLLM_SAMPLING_HD __host__ __device__
#else
#define NANOVLLM_SAMPLING_HD
#endif

namespace nanovllm {

// One row's settings, as the runner stages them in the backend's memory (64 bytes, no padding
// the compiler chooses: the CUDA kernels read the same layout).
struct SamplingRow {
  int64_t key = 0, counter = 0;     // the row's draws: uniform01(key, counter, id)
  float temperature = 0;            // 0: greedy
  float top_p = 1;                  // 1: off
  float min_p = 0;                  // 0: off
  int32_t top_k = 0;                // 0: off
  float repetition_penalty = 1;     // 1: off
  float presence_penalty = 0;       // 0: off
  float frequency_penalty = 0;      // 0: off
  int32_t counts_row = -1;          // the row of TokenCounts the penalties read and the token is counted in; -1: none
  int32_t adds_begin = 0, adds_end = 0;  // [begin, end) of the batch's sparse adds
  int32_t pad_[2] = {0, 0};

  NANOVLLM_SAMPLING_HD bool has_filters() const { return temperature > 0 && (top_k > 0 || top_p < 1 || min_p > 0); }
  NANOVLLM_SAMPLING_HD bool has_penalties() const { return repetition_penalty != 1 || presence_penalty != 0 || frequency_penalty != 0; }
};
static_assert(sizeof(SamplingRow) == 64, "SamplingRow is shared with the CUDA kernels as 64 bytes");

// Per-sequence token statistics the penalties read, one row per sequence that has penalties.
struct TokenCounts {
  Tensor counts;       // i32 [R, V]: how often each id was generated
  Tensor prompt_mask;  // i32 [R, ceil(V / 32)]: bit (id % 32) of word id / 32 is set when id is in the prompt
  bool defined() const { return counts.defined(); }
  int rows() const { return static_cast<int>(counts.size(0)); }
};

// A batch for the sample op: B rows of settings (B = the logits' rows) and the sparse adds they
// point into, all in the backend's memory.
struct SampleBatch {
  const SamplingRow* rows = nullptr;  // [B]
  const int32_t* add_ids = nullptr;   // [num_adds]
  const float* add_values = nullptr;  // [num_adds]
  int num_adds = 0;
  TokenCounts counts;                 // needed when a row has counts_row >= 0
  // The rows whose SamplingRow::has_filters(), ascending: the passes that place min_p/top_k/top_p
  // thresholds run over these alone. (A graph captured for any batch would pass every row: the
  // kernels look at each row's own settings too.)
  const int32_t* filtered_rows = nullptr;  // [num_filtered]
  int num_filtered = 0;
  // max_filtered_top_k(rows): a hint, read on the host, that every filtered row has a small
  // top_k (the CUDA sampler then skips its histogram passes). Any value gives the same tokens;
  // a wrong one is only slower.
  int max_filtered_top_k = 0;
};

// The largest top_k among the rows with filters; 0 when one of them has top_k off (or none has filters).
inline int max_filtered_top_k(const SamplingRow* rows, int64_t n) {
  int k = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!rows[i].has_filters()) continue;
    if (rows[i].top_k <= 0) return 0;
    k = rows[i].top_k > k ? rows[i].top_k : k;
  }
  return k;
}

// The logprobs op's outputs for R rows: row r describes logits row rows[r] and token ids[rows[r]].
struct LogprobsOut {
  Tensor token_logprobs;  // f32 [R]: log_softmax(logits[row])[id]
  Tensor ranks;           // i32 [R]: how many ids have a logprob >= the id's (vLLM's rank, >= 1)
  Tensor top_ids;         // i32 [R, N]: the N largest, largest first, lower id first among equals
  Tensor top_logprobs;    // f32 [R, N]
};

}  // namespace nanovllm
