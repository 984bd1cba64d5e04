// What generate() and step() hand back.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace nanovllm {

// One finished request, as generate() returns it (in prompt order).
struct RequestOutput {
  int64_t request_id = -1;
  std::string text;                     // decoded completion ("" when the model has no tokenizer)
  std::vector<int32_t> prompt_token_ids;
  std::vector<int32_t> token_ids;       // generated tokens only
  std::string finish_reason;            // "stop" (eos), "length" (max_tokens or max_model_len), "abort"
  // Seconds on std::chrono::steady_clock, for latency metrics.
  double arrival_time = 0, first_token_time = 0, finish_time = 0;
  int num_cached_prompt_tokens = 0;     // prompt tokens served from the prefix cache
};

// What one engine step produced for one request: the tokens sampled this step.
struct StepOutput {
  int64_t request_id = -1;
  std::vector<int32_t> new_token_ids;
  bool finished = false;
  std::string finish_reason;            // set when finished
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
