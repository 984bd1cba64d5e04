// LLMEngine: owns the tokenizer, scheduler, block manager and model runner, and runs the
// schedule -> run -> postprocess loop (nano-vLLM's llm_engine.py). LLM (llm.h) is its public face.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/block_manager.h"
#include "engine/model_runner.h"
#include "engine/scheduler.h"
#include "engine/sequence.h"
#include "model/hf_config.h"
#include "nanovllm/config.h"
#include "nanovllm/llm.h"
#include "nanovllm/output.h"
#include "nanovllm/sampling_params.h"
#include "tokenizer/tokenizer.h"

namespace nanovllm {

class LLMEngine {
 public:
  explicit LLMEngine(EngineConfig config);
  ~LLMEngine();

  // Queues a request; throws std::invalid_argument on an empty or too long prompt, a token id out
  // of the vocabulary, or bad sampling parameters.
  int64_t add_request(std::vector<int32_t> prompt_token_ids, const SamplingParams& params);
  int64_t add_request(const std::string& prompt, const SamplingParams& params);
  std::vector<StepOutput> step();
  bool is_finished() const { return scheduler_->is_finished(); }
  void abort_request(int64_t request_id);
  RequestOutput take_output(int64_t request_id);

  std::vector<RequestOutput> generate(const std::vector<std::vector<int32_t>>& prompts,
                                      const std::vector<SamplingParams>& params, bool use_tqdm);
  std::vector<RequestOutput> generate(const std::vector<std::string>& prompts,
                                      const std::vector<SamplingParams>& params, bool use_tqdm);

  bool has_tokenizer() const { return tokenizer_ != nullptr; }
  const Tokenizer& tokenizer() const;  // throws naming the model directory when it has none
  // The completion's text as vLLM returns it (special tokens skipped).
  std::string decode_completion(const std::vector<int32_t>& ids) const;

  const EngineConfig& config() const { return config_; }
  const ModelConfig& model_config() const { return model_config_; }
  EngineStats stats() const;

 private:
  void validate(const std::vector<int32_t>& prompt, const SamplingParams& params) const;

  EngineConfig config_;
  ModelConfig model_config_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<ModelRunner> runner_;
  std::unique_ptr<BlockManager> block_manager_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unordered_map<int64_t, std::unique_ptr<Sequence>> seqs_;  // queued, running, or finished and not taken
  int64_t next_request_id_ = 0;

  // Counters for stats() and the progress bar.
  int64_t prompt_tokens_ = 0, generation_tokens_ = 0;
  double prefill_seconds_ = 0, decode_seconds_ = 0;
  int64_t num_steps_ = 0;
  int64_t prefill_tokens_ = 0, decode_tokens_ = 0;
  double last_prefill_tps_ = 0, last_decode_tps_ = 0;
};

}  // namespace nanovllm
