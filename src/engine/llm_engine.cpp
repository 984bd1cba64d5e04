// LLMEngine: request validation, the step loop, outputs and statistics.
#include "engine/llm_engine.h"

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <unordered_set>

#include "backend/backend.h"
#include "engine/progress_bar.h"
#include "engine/sampler.h"
#include "util/clock.h"

namespace nanovllm {
namespace {

void check_config(const EngineConfig& c) {
  auto positive = [](const char* name, long v) {
    if (v <= 0) throw std::invalid_argument(std::string("EngineConfig.") + name + " must be > 0, got " + std::to_string(v));
  };
  if (c.model.empty()) throw std::invalid_argument("EngineConfig.model: no model directory given");
  if (!std::filesystem::is_directory(c.model))
    throw std::invalid_argument("model directory '" + c.model + "' does not exist or is not a directory");
  positive("max_num_batched_tokens", c.max_num_batched_tokens);
  positive("max_num_seqs", c.max_num_seqs);
  positive("max_model_len", c.max_model_len);
  positive("kvcache_block_size", c.kvcache_block_size);
  positive("tensor_parallel_size", c.tensor_parallel_size);
  if (!(c.gpu_memory_utilization > 0 && c.gpu_memory_utilization <= 1))
    throw std::invalid_argument("EngineConfig.gpu_memory_utilization must be in (0, 1], got " +
                                std::to_string(c.gpu_memory_utilization));
  if (c.device != "cpu" && c.device != "cuda" && c.device != "auto")
    throw std::invalid_argument("EngineConfig.device '" + c.device + "': expected cpu, cuda or auto");
  if (c.tensor_parallel_size != 1)
    throw std::invalid_argument("tensor_parallel_size " + std::to_string(c.tensor_parallel_size) +
                                ": tensor parallelism is not supported yet (use 1)");
}

}  // namespace

LLMEngine::LLMEngine(EngineConfig config) : config_(std::move(config)) {
  const double t_start = steady_seconds();
  check_config(config_);
  model_config_ = load_model_config(config_.model);
  if (model_config_.max_position_embeddings > 0)
    config_.max_model_len = std::min(config_.max_model_len, model_config_.max_position_embeddings);
  if (config_.device == "auto") config_.device = cuda_available() ? "cuda" : "cpu";
  if (Tokenizer::present(config_.model)) tokenizer_ = Tokenizer::from_dir(config_.model);

  SchedulerConfig sc;
  sc.max_num_seqs = config_.max_num_seqs;
  sc.max_num_batched_tokens = config_.max_num_batched_tokens;
  sc.max_model_len = config_.max_model_len;
  for (int id : model_config_.eos_token_ids) sc.eos_token_ids.insert(id);
  if (tokenizer_) {
    if (auto eos = tokenizer_->eos_token_id()) sc.eos_token_ids.insert(*eos);
  }

  const double t_runner = steady_seconds();
  runner_ = std::make_unique<ModelRunner>(config_, model_config_);
  config_.num_kvcache_blocks = runner_->num_kvcache_blocks();
  std::fprintf(stderr, "nanovllm: %s, KV cache %d blocks x %d tokens (%.1f MiB), max_model_len %d\n",
               runner_->backend().name().c_str(), runner_->num_kvcache_blocks(), config_.kvcache_block_size,
               runner_->kvcache_bytes() / (1024.0 * 1024.0), config_.max_model_len);
  const ModelRunner::StartupTimes& st = runner_->startup_times();
  const double runner_s = steady_seconds() - t_runner;
  std::fprintf(stderr,
               "nanovllm: start-up %.2f s: config+tokenizer %.2f s, backend %.2f s, weights %.2f GB in %.2f s, "
               "memory profile %.2f s, KV cache %.2f s, graphs %.2f s (GEMM tuning %.2f s)\n",
               steady_seconds() - t_start, t_runner - t_start,
               runner_s - st.weights_s - st.profile_s - st.kv_cache_s - st.graphs_s,
               runner_->weight_bytes() / 1e9, st.weights_s, st.profile_s, st.kv_cache_s, st.graphs_s,
               runner_->backend().tuning_seconds());
  block_manager_ = std::make_unique<BlockManager>(runner_->num_kvcache_blocks(), config_.kvcache_block_size,
                                                  config_.enable_prefix_caching);
  scheduler_ = std::make_unique<Scheduler>(std::move(sc), *block_manager_);
}

LLMEngine::~LLMEngine() = default;

const Tokenizer& LLMEngine::tokenizer() const {
  if (!tokenizer_)
    throw std::runtime_error("model directory '" + config_.model +
                             "' has no tokenizer.json: text needs a tokenizer (pass token ids instead)");
  return *tokenizer_;
}

void LLMEngine::validate(const std::vector<int32_t>& prompt, const SamplingParams& p) const {
  if (prompt.empty()) throw std::invalid_argument("empty prompt: at least one token is needed");
  const int n = static_cast<int>(prompt.size());
  if (n > config_.max_model_len)
    throw std::invalid_argument("prompt of " + std::to_string(n) + " tokens is longer than max_model_len " +
                                std::to_string(config_.max_model_len));
  for (int i = 0; i < n; ++i)
    if (prompt[i] < 0 || prompt[i] >= model_config_.vocab_size)
      throw std::invalid_argument("prompt token id " + std::to_string(prompt[i]) + " at position " + std::to_string(i) +
                                  " is outside the vocabulary [0, " + std::to_string(model_config_.vocab_size) + ")");
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature))
    throw std::invalid_argument("temperature must be a finite number >= 0 (0 = greedy), got " +
                                std::to_string(p.temperature));
  if (p.max_tokens < 1) throw std::invalid_argument("max_tokens must be >= 1, got " + std::to_string(p.max_tokens));
}

int64_t LLMEngine::add_request(std::vector<int32_t> prompt, const SamplingParams& params) {
  validate(prompt, params);
  const int64_t id = next_request_id_++;
  auto seq = std::make_unique<Sequence>(id, std::move(prompt), params, config_.kvcache_block_size,
                                        sampling_key(params, config_.seed, id), steady_seconds());
  prompt_tokens_ += seq->num_tokens();
  scheduler_->add(seq.get());
  seqs_.emplace(id, std::move(seq));
  return id;
}

int64_t LLMEngine::add_request(const std::string& prompt, const SamplingParams& params) {
  return add_request(tokenizer().encode(prompt), params);
}

std::vector<StepOutput> LLMEngine::step() {
  auto [batch, is_prefill] = scheduler_->schedule();
  if (batch.empty()) return {};
  std::vector<Sequence*> sampling;
  int num_tokens = 0;
  for (Sequence* s : batch) {
    num_tokens += s->num_scheduled_tokens;
    if (s->samples_this_step()) sampling.push_back(s);
  }
  const double t0 = steady_seconds();
  std::vector<int32_t> tokens;
  try {
    tokens = runner_->run(batch, is_prefill);
  } catch (...) {
    scheduler_->forget_step(batch);  // the caller decides the requests' fate (generate aborts them)
    throw;
  }
  const double t1 = steady_seconds();
  ++num_steps_;
  const double dt = std::max(t1 - t0, 1e-9);
  if (is_prefill) {
    prefill_seconds_ += dt;
    prefill_tokens_ += num_tokens;
    last_prefill_tps_ = num_tokens / dt;
  } else {
    decode_seconds_ += dt;
    decode_tokens_ += num_tokens;
    last_decode_tps_ = num_tokens / dt;
  }
  generation_tokens_ += static_cast<int64_t>(tokens.size());
  scheduler_->postprocess(batch, tokens, t1);

  std::vector<StepOutput> outs;
  outs.reserve(sampling.size());
  for (size_t i = 0; i < sampling.size(); ++i) {
    StepOutput o;
    o.request_id = sampling[i]->seq_id;
    o.new_token_ids = {tokens[i]};
    o.finished = sampling[i]->is_finished();
    if (o.finished) o.finish_reason = sampling[i]->finish_reason;
    outs.push_back(std::move(o));
  }
  return outs;
}

void LLMEngine::abort_request(int64_t request_id) {
  auto it = seqs_.find(request_id);
  if (it == seqs_.end()) return;
  if (!it->second->is_finished()) scheduler_->abort(it->second.get());
  seqs_.erase(it);  // an aborted request is forgotten, output included
}

std::string LLMEngine::decode_completion(const std::vector<int32_t>& ids) const {
  if (!tokenizer_) return "";
  // Models pad their vocabulary past the tokenizer's (Qwen3: 151936 rows, 151669 tokens); HF's
  // decode drops ids it has no token for, and so do we.
  std::vector<int32_t> known;
  known.reserve(ids.size());
  for (int32_t id : ids)
    if (id >= 0 && id < tokenizer_->vocab_size()) known.push_back(id);
  return tokenizer_->decode(known, /*skip_special_tokens=*/true);
}

RequestOutput LLMEngine::take_output(int64_t request_id) {
  auto it = seqs_.find(request_id);
  if (it == seqs_.end())
    throw std::invalid_argument("take_output: unknown request id " + std::to_string(request_id) +
                                " (never added, aborted, or already taken)");
  Sequence& s = *it->second;
  if (!s.is_finished())
    throw std::logic_error("take_output: request " + std::to_string(request_id) + " has not finished");
  RequestOutput o;
  o.request_id = s.seq_id;
  o.prompt_token_ids.assign(s.token_ids.begin(), s.token_ids.begin() + s.num_prompt_tokens);
  o.token_ids = s.completion_token_ids();
  o.text = decode_completion(o.token_ids);
  o.finish_reason = s.finish_reason;
  o.arrival_time = s.arrival_time;
  o.first_token_time = s.first_token_time;
  o.finish_time = s.finish_time;
  o.num_cached_prompt_tokens = s.num_prompt_cached_tokens;
  seqs_.erase(it);
  return o;
}

std::vector<RequestOutput> LLMEngine::generate(const std::vector<std::vector<int32_t>>& prompts,
                                               const std::vector<SamplingParams>& params, bool use_tqdm) {
  if (params.size() != 1 && params.size() != prompts.size())
    throw std::invalid_argument("generate: " + std::to_string(params.size()) + " SamplingParams for " +
                                std::to_string(prompts.size()) + " prompts (give one for all, or one per prompt)");
  for (size_t i = 0; i < prompts.size(); ++i) {
    try {
      validate(prompts[i], params.size() == 1 ? params[0] : params[i]);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument("prompt " + std::to_string(i) + ": " + e.what());
    }
  }
  std::vector<int64_t> ids;
  ids.reserve(prompts.size());
  std::unordered_set<int64_t> pending;
  try {
    for (size_t i = 0; i < prompts.size(); ++i) {
      ids.push_back(add_request(prompts[i], params.size() == 1 ? params[0] : params[i]));
      pending.insert(ids.back());
    }
    ProgressBar bar(static_cast<int>(prompts.size()), use_tqdm);
    runner_->pause_gap_clock();
    while (!pending.empty()) {
      if (is_finished()) throw std::logic_error("generate: the engine went idle with requests pending");
      for (const StepOutput& o : step())
        if (o.finished) pending.erase(o.request_id);
      bar.update(static_cast<int>(prompts.size() - pending.size()), last_prefill_tps_, last_decode_tps_);
    }
    bar.close();
    runner_->pause_gap_clock();
  } catch (...) {
    for (int64_t id : ids) abort_request(id);
    throw;
  }
  std::vector<RequestOutput> outs;
  outs.reserve(ids.size());
  for (int64_t id : ids) outs.push_back(take_output(id));
  return outs;
}

std::vector<RequestOutput> LLMEngine::generate(const std::vector<std::string>& prompts,
                                               const std::vector<SamplingParams>& params, bool use_tqdm) {
  std::vector<std::vector<int32_t>> ids;
  ids.reserve(prompts.size());
  for (const std::string& p : prompts) ids.push_back(tokenizer().encode(p));
  return generate(ids, params, use_tqdm);
}

EngineStats LLMEngine::stats() const {
  EngineStats s;
  s.num_running = scheduler_->num_running();
  s.num_waiting = scheduler_->num_waiting();
  s.num_kvcache_blocks = block_manager_->num_blocks();
  s.num_free_blocks = block_manager_->num_free_blocks();
  s.block_size = block_manager_->block_size();
  s.kvcache_bytes = runner_->kvcache_bytes();
  s.prompt_tokens = prompt_tokens_;
  s.generation_tokens = generation_tokens_;
  s.prefix_cache_queries = block_manager_->num_queried_tokens();
  s.prefix_cache_hits = block_manager_->num_hit_tokens();
  s.num_preemptions = scheduler_->num_preemptions();
  s.prefill_seconds = prefill_seconds_;
  s.decode_seconds = decode_seconds_;
  s.prefill_tokens = prefill_tokens_;
  s.decode_tokens = decode_tokens_;
  s.host_gap_seconds = runner_->host_gap_seconds();
  s.num_steps = num_steps_;
  const Backend& b = runner_->backend();
  if (b.device() == DeviceKind::cpu) {
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    s.peak_device_bytes = static_cast<int64_t>(ru.ru_maxrss) * 1024;  // Linux reports KiB
    s.device = "cpu";
  } else {
    s.peak_device_bytes = static_cast<int64_t>(b.peak_allocated_bytes());
    s.device = b.name();
  }
  return s;
}

}  // namespace nanovllm
