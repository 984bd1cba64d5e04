// LLM: the public API (include/nanovllm/llm.h), a thin face over LLMEngine.
#include "nanovllm/llm.h"

#include <stdexcept>
#include <string>

#include "engine/llm_engine.h"

namespace nanovllm {

std::string_view to_string(FinishReason r) {
  switch (r) {
    case FinishReason::none: return "";
    case FinishReason::stop: return "stop";
    case FinishReason::length: return "length";
    case FinishReason::abort: return "abort";
  }
  return "";
}

std::string_view to_string(DeviceKind d) { return d == DeviceKind::cuda ? "cuda" : "cpu"; }

std::optional<DeviceKind> parse_device(std::string_view name) {
  if (name == "cpu") return DeviceKind::cpu;
  if (name == "cuda") return DeviceKind::cuda;
  if (name == "auto") return std::nullopt;
  throw std::invalid_argument("device '" + std::string(name) + "': expected cpu, cuda or auto");
}

LLM::LLM(const std::string& model_dir, EngineConfig config) {
  config.model = model_dir;
  engine_ = std::make_unique<LLMEngine>(std::move(config));
}
LLM::LLM(EngineConfig config) : engine_(std::make_unique<LLMEngine>(std::move(config))) {}
LLM::~LLM() = default;

std::vector<RequestOutput> LLM::generate(const std::vector<std::string>& prompts,
                                         const std::vector<SamplingParams>& params, bool use_tqdm) {
  return engine_->generate(prompts, params, use_tqdm);
}
std::vector<RequestOutput> LLM::generate(const std::vector<std::vector<int32_t>>& prompts,
                                         const std::vector<SamplingParams>& params, bool use_tqdm) {
  return engine_->generate(prompts, params, use_tqdm);
}

int64_t LLM::add_request(std::vector<int32_t> prompt_token_ids, const SamplingParams& params) {
  return engine_->add_request(std::move(prompt_token_ids), params);
}
int64_t LLM::add_request(const std::string& prompt, const SamplingParams& params) {
  return engine_->add_request(prompt, params);
}
std::vector<StepOutput> LLM::step() { return engine_->step(); }
bool LLM::is_finished() const { return engine_->is_finished(); }
void LLM::abort_request(int64_t request_id) { engine_->abort_request(request_id); }
RequestOutput LLM::take_output(int64_t request_id) { return engine_->take_output(request_id); }

void LLM::validate_request(const std::vector<int32_t>& prompt_token_ids, const SamplingParams& params) const {
  engine_->validate(prompt_token_ids, params);
}

bool LLM::has_tokenizer() const { return engine_->has_tokenizer(); }
const Tokenizer& LLM::tokenizer() const { return engine_->tokenizer(); }
std::vector<int32_t> LLM::encode(const std::string& text, bool add_special_tokens) const {
  return engine_->tokenizer().encode(text, add_special_tokens);
}
std::string LLM::decode(const std::vector<int32_t>& ids) const { return engine_->tokenizer().decode(ids); }
std::string LLM::apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                     bool enable_thinking) const {
  return engine_->tokenizer().apply_chat_template(messages, add_generation_prompt, enable_thinking);
}

SamplingParams LLM::default_sampling_params() const { return engine_->default_sampling_params(); }
const EngineConfig& LLM::config() const { return engine_->config(); }
EngineStats LLM::stats() const { return engine_->stats(); }
void LLM::start_profile() { engine_->profile(true); }
void LLM::stop_profile() { engine_->profile(false); }
int LLM::vocab_size() const { return engine_->model_config().vocab_size; }

}  // namespace nanovllm
