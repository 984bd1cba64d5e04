// LLMEngine: owns the tokenizer, scheduler, block manager and model runner, and runs the
// schedule -> run -> postprocess loop (nano-vLLM's llm_engine.py). LLM (llm.h) is its public face.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/block_manager.h"
#include "engine/model_runner.h"
#include "engine/scheduler.h"
#include "engine/sequence.h"
#include "engine/step_stats.h"
#include "model/generation_config.h"
#include "model/hf_config.h"
#include "nanovllm/config.h"
#include "nanovllm/output.h"
#include "nanovllm/sampling_params.h"
#include "tokenizer/tokenizer.h"
#include "util/env_options.h"

namespace nanovllm {

class LLMEngine {
 public:
  explicit LLMEngine(EngineConfig config);
  ~LLMEngine();

  // Queues a request of params.n samples (one Sequence each; they share the prompt's full KV
  // blocks through the prefix cache); throws std::invalid_argument on an empty or too long
  // prompt, a token id out of the vocabulary, or bad sampling parameters.
  int64_t add_request(std::vector<int32_t> prompt_token_ids, const SamplingParams& params);
  int64_t add_request(const std::string& prompt, const SamplingParams& params);
  // One engine step: one StepOutput per sample that got a token (or finished) in it.
  std::vector<StepOutput> step();
  bool is_finished() const { return scheduler_->is_finished(); }
  void abort_request(int64_t request_id);
  RequestOutput take_output(int64_t request_id);

  std::vector<RequestOutput> generate(const std::vector<std::vector<int32_t>>& prompts,
                                      const std::vector<SamplingParams>& params, bool use_tqdm);
  std::vector<RequestOutput> generate(const std::vector<std::string>& prompts,
                                      const std::vector<SamplingParams>& params, bool use_tqdm);

  // SamplingParams' defaults with the model's generation_config.json applied (per
  // EngineConfig::generation_config): what a request that sets nothing gets.
  SamplingParams default_sampling_params() const;
  const GenerationDefaults& generation_defaults() const { return generation_defaults_; }

  bool has_tokenizer() const { return tokenizer_ != nullptr; }
  const Tokenizer& tokenizer() const;  // throws naming the model directory when it has none

  const EngineConfig& config() const { return config_; }
  // Tensor parallelism: the processes of ranks 1..N-1 (empty on one rank).
  std::vector<int> worker_pids() const { return runner_->worker_pids(); }
  const ModelConfig& model_config() const { return model_config_; }
  EngineStats stats() const;
  // LLM::start_profile / stop_profile: the profiler range on rank 0's backend.
  void profile(bool on) { runner_->backend().profile(on); }
  // Throws std::invalid_argument for what add_request would refuse; reads only the configuration.
  void validate(const std::vector<int32_t>& prompt, const SamplingParams& params) const;

 private:
  // A request's samples, index i at samples[i].
  struct Request {
    std::vector<std::unique_ptr<Sequence>> samples;
    int num_finished = 0;
    bool finished() const { return num_finished == static_cast<int>(samples.size()); }
  };

  void start_runner();
  std::vector<StepOutput> outputs_of(const ScheduledBatch& batch);

  EnvOptions env_;  // read once, before everything that uses it
  EngineConfig config_;
  ModelConfig model_config_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<int32_t> eos_token_ids_;      // the model's and the tokenizer's, for min_tokens masks
  GenerationDefaults generation_defaults_;
  std::unique_ptr<ModelRunner> runner_;
  std::unique_ptr<BlockManager> block_manager_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unordered_map<int64_t, Request> requests_;  // queued, running, or finished and not taken
  int64_t next_request_id_ = 0, next_seq_id_ = 0;
  StepStats stats_;
};

}  // namespace nanovllm
