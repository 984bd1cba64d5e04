// What generate() and step() hand back.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace nanovllm {

// Why a sample ended. Strings (vLLM's "stop", "length", "abort") only at the API edge.
enum class FinishReason : uint8_t {
  none,    // still running
  stop,    // EOS, a stop token id or a stop string
  length,  // max_tokens or max_model_len
  abort,   // aborted by the caller (or the engine failed)
};
std::string_view to_string(FinishReason r);  // "" for none

// What stopped a sample that ended in FinishReason::stop because of a request's own stop
// condition: the stop string, or the stop token id (vLLM's stop_reason); monostate for EOS and
// every other reason.
using StopReason = std::variant<std::monostate, int32_t, std::string>;

// The log-probabilities at one position (vLLM's per-position Logprob dict): the chosen token's,
// with its rank, and the largest ones. Raw: from the model's logits before any sampling setting
// (temperature, penalties, top_k/top_p) touched them, as vLLM's default logprobs mode.
struct TokenLogprob {
  int32_t token_id = -1;
  float logprob = 0;
};
struct PositionLogprobs {
  int32_t token_id = -1;             // the sampled (or, for prompt logprobs, the prompt's) token
  float logprob = 0;
  int rank = 0;                      // how many tokens have a logprob >= its (1 = the most likely)
  std::vector<TokenLogprob> top;     // SamplingParams::logprobs (or prompt_logprobs) of them, largest first
};

// One sample of a request (vLLM's CompletionOutput).
struct CompletionOutput {
  int index = 0;                        // 0 .. n-1
  std::string text;                     // detokenized completion ("" when the model has no tokenizer)
  std::vector<int32_t> token_ids;       // generated tokens only (a stop token included, as vLLM)
  std::vector<PositionLogprobs> logprobs;  // one per token_ids entry when SamplingParams::logprobs is set
  FinishReason finish_reason = FinishReason::none;
  StopReason stop_reason;
  double first_token_time = 0, finish_time = 0;  // seconds on std::chrono::steady_clock
  double first_scheduled_time = 0;               // when the scheduler first took it (queue time ends)
};

// One finished request, as generate() returns it (in prompt order).
struct RequestOutput {
  int64_t request_id = -1;
  std::vector<int32_t> prompt_token_ids;
  std::vector<CompletionOutput> outputs;  // SamplingParams::n of them, by index
  // With SamplingParams::prompt_logprobs: positions 1 .. prompt length - 1 (vLLM's list without
  // its leading None: the first prompt token has no log-probability).
  std::vector<PositionLogprobs> prompt_logprobs;
  double arrival_time = 0;                // seconds on std::chrono::steady_clock
  int num_cached_prompt_tokens = 0;       // prompt tokens served from the prefix cache (first sample)

  // nano-vLLM's {"text", "token_ids"} for the first (with n = 1, the only) sample.
  const std::string& text() const { return outputs.at(0).text; }
  const std::vector<int32_t>& token_ids() const { return outputs.at(0).token_ids; }
  FinishReason finish_reason() const { return outputs.at(0).finish_reason; }
};

// What one engine step produced for one sample of a request.
struct StepOutput {
  int64_t request_id = -1;
  int index = 0;                        // which sample (0 .. n-1)
  std::vector<int32_t> new_token_ids;   // sampled this step (empty for a stop that only flushed)
  std::vector<PositionLogprobs> logprobs;  // for new_token_ids, when SamplingParams::logprobs is set
  std::string text;                     // output text that became final this step
  bool finished = false;
  FinishReason finish_reason = FinishReason::none;  // set when finished
  StopReason stop_reason;
};

// A snapshot of the engine, for metrics and benchmarks.
struct EngineStats {
  int num_running = 0, num_waiting = 0;
  int num_kvcache_blocks = 0, num_free_blocks = 0, block_size = 0;
  int64_t kvcache_bytes = 0;
  int64_t prompt_tokens = 0, generation_tokens = 0;      // counters since start
  int64_t prefix_cache_queries = 0, prefix_cache_hits = 0; // in tokens
  int64_t num_preemptions = 0;
  double prefill_seconds = 0, decode_seconds = 0;          // time in prefill and decode steps
  int64_t prefill_tokens = 0, decode_tokens = 0;           // tokens computed in those steps
  double host_gap_seconds = 0;   // device idle while the host works between consecutive steps of a generate()
  int64_t num_steps = 0;
  int64_t peak_device_bytes = 0;                           // CUDA: peak allocated; CPU: peak RSS
  std::string device;                                      // "cpu" or the GPU's name
};

}  // namespace nanovllm
