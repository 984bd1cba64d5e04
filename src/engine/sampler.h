// Sampler: a step's logits to tokens, on the backend (nano-vLLM's layers/sampler.py). It stages
// each sampled sequence's settings (backend/sampling.h's SamplingRow, its logit_bias and min_tokens
// masks as sparse adds), keeps the penalties' token counts in the backend's memory from step to
// step (a row per sequence that has penalties, filled from its prompt once), and reads back the
// tokens and, where asked, their logprobs, in one transfer.
#pragma once
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "backend/rng.h"
#include "engine/sequence.h"
#include "nanovllm/sampling_params.h"

namespace nanovllm {

// Sample `index` of a request: the request's own seed when it has one, otherwise mixed from the
// engine seed and request id; the first sample keeps that key, the others mix in their index so
// that n seeded samples differ (and are reproducible). The draws for a request depend only on
// (key, number of tokens generated so far), so they do not change with batch composition,
// backend, or preemption and recompute.
inline uint64_t sampling_key(const SamplingParams& params, uint64_t engine_seed, int64_t request_id, int index = 0) {
  const uint64_t key = params.seed ? *params.seed : mix64(engine_seed ^ mix64(static_cast<uint64_t>(request_id)));
  return index == 0 ? key : mix64(key ^ mix64(0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(index)));
}

// The SamplingRow of a sequence's next token (key and counter, the settings as the sample op
// takes them: greedy below vLLM's 1e-5, top_k 0 when it is off or at least the vocabulary).
SamplingRow sampling_row(const Sequence& seq, int vocab_size);

class Sampler {
 public:
  // At most `max_rows` rows a step, logprobs of at most `max_logprobs` tokens a row.
  Sampler(Backend& backend, int max_rows, int vocab_size, int max_logprobs);
  ~Sampler();
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // One token per sequence of `seqs` (in order) from logits rows [0, seqs.size()); for the
  // sequences that ask, logprobs[i] holds the token's (token_id -1 for the others).
  void sample(const std::vector<Sequence*>& seqs, const Tensor& logits, std::vector<int32_t>& tokens,
              std::vector<PositionLogprobs>& logprobs);
  // The log-probabilities of logits rows [0, ids.size()) at ids, with `num_top` of the largest.
  std::vector<PositionLogprobs> logprobs(const Tensor& logits, const std::vector<int32_t>& ids, int num_top);
  // `seq` is done (finished or aborted): its token-counts row goes back.
  void release(Sequence& seq);

  int num_counts_rows_in_use() const { return static_cast<int>(counts_rows_.size() - free_rows_.size()); }

 private:
  // Gives `seq` a counts row, filled from its tokens so far.
  void assign_counts_row(Sequence& seq);
  // Grows the staging buffers to `bytes`.
  void reserve_stage(size_t bytes);
  // Reads R rows of logprobs results out of the host copy.
  static void read_logprobs(const char* host, int B, int R, int num_top, const std::vector<int>& which,
                            std::vector<PositionLogprobs>& out);

  Backend& backend_;
  int max_rows_, vocab_, max_logprobs_;
  // Staging: the rows' settings and adds, copied to the device in one transfer each step.
  struct HostFree {
    Backend* backend;
    void operator()(char* p) const { backend->host_free(p); }
  };
  std::unique_ptr<char, HostFree> stage_host_{nullptr, HostFree{nullptr}};
  DeviceBuffer stage_device_;
  size_t stage_bytes_ = 0;
  // Results: tokens, then logprobs, token ranks, top ids and top logprobs, read back in one transfer.
  DeviceBuffer results_device_;
  std::unique_ptr<char, HostFree> results_host_{nullptr, HostFree{nullptr}};
  size_t results_bytes_ = 0;
  // The penalties' token counts (allocated when a sequence first needs them) and the rows free.
  DeviceBuffer counts_buffer_;
  TokenCounts counts_;
  std::vector<int> counts_rows_, free_rows_;
  DeviceBuffer ids_buffer_;  // a sequence's ids while its counts row is filled
  size_t ids_bytes_ = 0;
};

}  // namespace nanovllm
