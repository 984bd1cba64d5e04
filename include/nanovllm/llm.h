// LLM: the public entry point, shaped like nano-vLLM's.
//   nanovllm::LLM llm("/models/Qwen3-0.6B", config);
//   auto outs = llm.generate({"Hello"}, nanovllm::SamplingParams{.temperature = 0.6f, .max_tokens = 256});
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nanovllm/chat_message.h"
#include "nanovllm/config.h"
#include "nanovllm/output.h"
#include "nanovllm/sampling_params.h"

namespace nanovllm {

class LLMEngine;
class Tokenizer;  // src/tokenizer/tokenizer.h, for front ends that render and tokenize themselves

class LLM {
 public:
  // Loads the model in `model_dir` (config.model is ignored when a directory is given here).
  LLM(const std::string& model_dir, EngineConfig config = {});
  explicit LLM(EngineConfig config);
  ~LLM();
  LLM(const LLM&) = delete;
  LLM& operator=(const LLM&) = delete;

  // Runs every prompt to completion; outputs come back in prompt order, each with
  // SamplingParams::n samples.
  // `params` holds one SamplingParams for all prompts, or one per prompt.
  std::vector<RequestOutput> generate(const std::vector<std::string>& prompts,
                                      const std::vector<SamplingParams>& params, bool use_tqdm = true);
  std::vector<RequestOutput> generate(const std::vector<std::vector<int32_t>>& prompts,
                                      const std::vector<SamplingParams>& params, bool use_tqdm = true);
  std::vector<RequestOutput> generate(const std::vector<std::string>& prompts, const SamplingParams& params,
                                      bool use_tqdm = true) {
    return generate(prompts, std::vector<SamplingParams>{params}, use_tqdm);
  }
  std::vector<RequestOutput> generate(const std::vector<std::vector<int32_t>>& prompts,
                                      const SamplingParams& params, bool use_tqdm = true) {
    return generate(prompts, std::vector<SamplingParams>{params}, use_tqdm);
  }
  // With default_sampling_params() (vLLM's generate(prompts) without sampling_params).
  std::vector<RequestOutput> generate(const std::vector<std::string>& prompts) {
    return generate(prompts, default_sampling_params());
  }

  // SamplingParams' defaults with the model's generation_config.json applied (EngineConfig::
  // generation_config): what vLLM gives a request that sets nothing. Front ends start from it.
  SamplingParams default_sampling_params() const;

  // For callers that drive the loop (the server): queue, step, collect. A request's samples
  // report their tokens and text deltas in step(); abort_request aborts all of them.
  int64_t add_request(std::vector<int32_t> prompt_token_ids, const SamplingParams& params);
  int64_t add_request(const std::string& prompt, const SamplingParams& params);
  std::vector<StepOutput> step();
  bool is_finished() const;                 // nothing waiting or running
  void abort_request(int64_t request_id);   // frees its blocks (or drops a finished one's output); no-op for unknown ids
  // The finished request's full output; call once after step() reported it finished.
  RequestOutput take_output(int64_t request_id);
  // Throws std::invalid_argument as add_request would for this prompt and params, adding nothing.
  // Thread-safe (reads only the configuration): the server checks a request before queueing it.
  void validate_request(const std::vector<int32_t>& prompt_token_ids, const SamplingParams& params) const;

  // Tokenizer access (throws when the model directory has no tokenizer). The engine's one
  // tokenizer; these may be called from any thread, also while another thread steps.
  bool has_tokenizer() const;
  const Tokenizer& tokenizer() const;
  // HF's tokenizer.encode: add_special_tokens applies the tokenizer's post-processor (Llama and
  // Gemma put BOS first; Qwen adds nothing). Text prompts go through it as vLLM tokenizes them;
  // a rendered chat template already holds its special tokens (use false).
  std::vector<int32_t> encode(const std::string& text, bool add_special_tokens = true) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt = true,
                                  bool enable_thinking = true) const;

  const EngineConfig& config() const;       // as resolved (device, max_model_len, blocks)
  int vocab_size() const;                   // the model's (config.json); token ids must be below it
  EngineStats stats() const;
  // vLLM's names: what runs between them is what a profiler started with collection off records
  // (CUDA: `ncu --profile-from-start off`, `nsys profile --capture-range=cudaProfilerApi`; with
  // tensor parallelism, rank 0's GPU). No effect on the CPU.
  void start_profile();
  void stop_profile();

 private:
  std::unique_ptr<LLMEngine> engine_;
};

}  // namespace nanovllm
