// Sequence: one request's tokens, sampling parameters, status and KV-cache bookkeeping
// (nano-vLLM's sequence.py, plus the counts chunked prefill needs).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/text_stream.h"
#include "nanovllm/output.h"
#include "nanovllm/sampling_params.h"

namespace nanovllm {

enum class SequenceStatus { waiting, running, finished };

class Sequence {
 public:
  Sequence(int64_t seq_id, std::vector<int32_t> prompt_token_ids, const SamplingParams& params, int block_size,
           uint64_t sample_key, double arrival_time);

  int64_t seq_id;                   // unique in the engine
  int64_t request_id = -1;          // the request it samples for (-1: seq_id)
  int index = 0;                    // which of the request's n samples
  SequenceStatus status = SequenceStatus::waiting;
  std::vector<int32_t> token_ids;   // prompt, then generated tokens
  int num_prompt_tokens;            // the original prompt (recomputed completions do not count)
  SamplingParams params;
  int block_size;
  uint64_t sample_key;              // the key of this request's random draws (see backend/rng.h)

  // KV-cache bookkeeping. block_table[i] holds tokens [i * block_size, (i+1) * block_size).
  std::vector<int> block_table;
  int num_cached_tokens = 0;        // tokens served from the prefix cache at the last allocation
  int num_computed_tokens = 0;      // tokens whose K/V is in the cache (cached + computed so far)
  int num_scheduled_tokens = 0;     // tokens this step computes, from num_computed_tokens on
  int num_hashed_blocks = 0;        // leading full blocks already registered in the prefix cache

  // Timestamps (seconds, steady clock) and the outcome.
  double arrival_time = 0, first_token_time = 0, finish_time = 0;
  double first_scheduled_time = 0;  // when a prefill step first took it (vLLM's scheduled_ts: queue time ends)
  FinishReason finish_reason = FinishReason::none;
  StopReason stop_reason;           // the stop string or stop token id, when one ended it
  int num_prompt_cached_tokens = 0; // prefix-cache hit of the first allocation, for the output

  // Sampling state the runner keeps for this sequence.
  int counts_row = -1;                      // its row of the device's TokenCounts (penalties), -1: none
  std::vector<int32_t> min_tokens_mask;     // EOS and stop token ids, masked until min_tokens are out
  std::vector<PositionLogprobs> logprobs;   // per generated token, when params.logprobs
  std::vector<PositionLogprobs> prompt_logprobs;  // prompt positions 1.., when params.prompt_logprobs (first sample)

  // The output text: detokenized as tokens arrive (stop strings need it, streaming reads it).
  // Null when the engine has no tokenizer.
  std::unique_ptr<TextStream> text_stream;
  std::string output_text;          // released so far
  size_t text_reported = 0;         // how much of output_text step outputs have carried

  int num_tokens() const { return static_cast<int>(token_ids.size()); }
  int num_completion_tokens() const { return num_tokens() - num_prompt_tokens; }
  int32_t last_token() const { return token_ids.back(); }
  bool is_finished() const { return status == SequenceStatus::finished; }
  int num_blocks() const { return (num_tokens() + block_size - 1) / block_size; }
  // Token ids of block i (the last block may be partly filled).
  std::span<const int32_t> block(int i) const;
  // The generated tokens only.
  std::vector<int32_t> completion_token_ids() const;
  // True when this step's tokens reach the end of the sequence: its last row's logits are sampled
  // (a prefill chunk that stops short of the end samples nothing).
  bool samples_this_step() const { return num_computed_tokens + num_scheduled_tokens == num_tokens(); }

  void append_token(int32_t token_id) { token_ids.push_back(token_id); }
  // Whether this sample still owes its request prompt logprobs: only the first sample computes
  // them, over its whole prompt (so it takes no prefix-cache hits until they are done).
  bool wants_prompt_logprobs() const {
    return params.prompt_logprobs && index == 0 &&
           static_cast<int>(prompt_logprobs.size()) < num_prompt_tokens - 1;
  }
};

}  // namespace nanovllm
