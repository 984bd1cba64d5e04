// LLMEngine: request validation, the step loop, outputs and statistics.
#include "engine/llm_engine.h"

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <stdexcept>

#include "backend/backend.h"
#include "engine/progress_bar.h"
#include "engine/sampler.h"
#include "engine/tp_group.h"
#include "util/checks.h"
#include "util/clock.h"

namespace nanovllm {
namespace {

void check_config(const EngineConfig& c) {
  auto positive = [](const char* name, long v) { require_positive(std::string("EngineConfig.") + name, v); };
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
  if (c.max_logprobs < 0 || c.max_logprobs > 64)
    throw std::invalid_argument("EngineConfig.max_logprobs must be in [0, 64], got " + std::to_string(c.max_logprobs));
  if (c.tensor_parallel_size > 64)
    throw std::invalid_argument("EngineConfig.tensor_parallel_size " + std::to_string(c.tensor_parallel_size) +
                                ": at most 64");
  positive("nnodes", c.nnodes);
  if (c.scheduling_policy != "fcfs" && c.scheduling_policy != "priority")
    throw std::invalid_argument("EngineConfig.scheduling_policy '" + c.scheduling_policy + "': expected fcfs or priority");
  if (c.node_rank < 0 || c.node_rank >= c.nnodes)
    throw std::invalid_argument("EngineConfig.node_rank " + std::to_string(c.node_rank) + " is outside [0, nnodes " +
                                std::to_string(c.nnodes) + ")");
  if (c.nnodes > 1)
    throw std::invalid_argument("nnodes " + std::to_string(c.nnodes) +
                                ": a tensor-parallel group across hosts is not built yet (its TCP rendezvous is; "
                                "docs/tensor-parallel.md says what else it needs); run every rank on one host");
}

}  // namespace

LLMEngine::LLMEngine(EngineConfig config)
    : env_(read_env_options()), config_(std::move(config)), stats_(env_.step_trace) {
  StartupTimer timer;
  check_config(config_);
  model_config_ = load_model_config(config_.model);
  config_ = resolve_config(std::move(config_), model_config_);
  if (Tokenizer::present(config_.model)) tokenizer_ = Tokenizer::from_dir(config_.model, config_.chat_template);

  SchedulerConfig sc;
  sc.max_num_seqs = config_.max_num_seqs;
  sc.max_num_batched_tokens = config_.max_num_batched_tokens;
  sc.max_model_len = config_.max_model_len;
  sc.priority = config_.priority_scheduling();
  for (int id : model_config_.eos_token_ids) sc.eos_token_ids.insert(id);
  if (tokenizer_) {
    if (auto eos = tokenizer_->eos_token_id()) sc.eos_token_ids.insert(*eos);
  }
  eos_token_ids_.assign(sc.eos_token_ids.begin(), sc.eos_token_ids.end());
  std::sort(eos_token_ids_.begin(), eos_token_ids_.end());
  generation_defaults_ = load_generation_defaults(config_.model, config_.generation_config);
  if (!generation_defaults_.empty())
    std::fprintf(stderr,
                 "nanovllm: default sampling parameters from %s: %s (requests that set them win; "
                 "--generation-config vllm ignores the file)\n",
                 generation_defaults_.file.c_str(), generation_defaults_.describe().c_str());
  const double config_s = timer.lap();

  // nano-vLLM's ModelRunner.__init__ phases, each timed for the start-up line.
  runner_ = std::make_unique<ModelRunner>(config_, model_config_, make_backend_for(config_, env_), 0, env_.worker);
  const double weights_s = timer.lap();
  runner_->allocate_kv_cache();
  const double kv_s = timer.lap();
  runner_->capture_cudagraph();
  const double graphs_s = timer.lap();
  config_.num_kvcache_blocks = runner_->num_kvcache_blocks();
  std::fprintf(stderr, "nanovllm: %s, KV cache %d blocks x %d tokens (%.1f MiB), max_model_len %d\n",
               runner_->backend().name().c_str(), runner_->num_kvcache_blocks(), config_.kvcache_block_size,
               runner_->kvcache_bytes() / (1024.0 * 1024.0), config_.max_model_len);
  if (config_.tensor_parallel_size > 1) {
    const std::vector<RankInfo> ranks = runner_->rank_infos();
    for (size_t r = 0; r < ranks.size(); ++r)
      std::fprintf(stderr, "nanovllm: tensor-parallel rank %zu of %zu: %s, weights %.1f MiB, KV cache %lld blocks\n", r,
                   ranks.size(), ranks[r].device.c_str(), ranks[r].weight_bytes / 1048576.0,
                   static_cast<long long>(ranks[r].kv_blocks));
  }
  std::fprintf(stderr,
               "nanovllm: start-up %.2f s: config+tokenizer %.2f s, backend+weights %.2f GB in %.2f s, "
               "KV cache (memory profile + allocation) %.2f s, graphs %.2f s (GEMM tuning %.2f s)\n",
               timer.total(), config_s, runner_->weight_bytes() / 1e9, weights_s, kv_s, graphs_s,
               runner_->backend().tuning_seconds());
  block_manager_ = std::make_unique<BlockManager>(runner_->num_kvcache_blocks(), config_.kvcache_block_size,
                                                  config_.enable_prefix_caching);
  scheduler_ = std::make_unique<Scheduler>(std::move(sc), *block_manager_);
}

LLMEngine::~LLMEngine() = default;

SamplingParams LLMEngine::default_sampling_params() const { return generation_defaults_.apply(SamplingParams{}); }

const Tokenizer& LLMEngine::tokenizer() const {
  if (!tokenizer_)
    throw std::runtime_error("model directory '" + config_.model +
                             "' has no tokenizer.json: text needs a tokenizer (pass token ids instead)");
  return *tokenizer_;
}

void LLMEngine::validate(const std::vector<int32_t>& prompt, const SamplingParams& p) const {
  if (prompt.empty()) throw std::invalid_argument("empty prompt: at least one token is needed");
  const int n = static_cast<int>(prompt.size());
  const int vocab = model_config_.vocab_size;
  if (n > config_.max_model_len)
    throw std::invalid_argument("prompt of " + std::to_string(n) + " tokens is longer than max_model_len " +
                                std::to_string(config_.max_model_len));
  for (int i = 0; i < n; ++i)
    if (prompt[i] < 0 || prompt[i] >= vocab)
      throw std::invalid_argument("prompt token id " + std::to_string(prompt[i]) + " at position " + std::to_string(i) +
                                  " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature))
    throw std::invalid_argument("temperature must be a finite number >= 0 (0 = greedy), got " +
                                std::to_string(p.temperature));
  if (!(p.top_p > 0 && p.top_p <= 1)) throw std::invalid_argument("top_p must be in (0, 1], got " + std::to_string(p.top_p));
  if (p.top_k < -1) throw std::invalid_argument("top_k must be -1 or 0 (off) or >= 1, got " + std::to_string(p.top_k));
  if (!(p.min_p >= 0 && p.min_p <= 1)) throw std::invalid_argument("min_p must be in [0, 1], got " + std::to_string(p.min_p));
  if (!(p.repetition_penalty > 0) || !std::isfinite(p.repetition_penalty))
    throw std::invalid_argument("repetition_penalty must be a finite number > 0, got " +
                                std::to_string(p.repetition_penalty));
  if (!(p.presence_penalty >= -2 && p.presence_penalty <= 2))
    throw std::invalid_argument("presence_penalty must be in [-2, 2], got " + std::to_string(p.presence_penalty));
  if (!(p.frequency_penalty >= -2 && p.frequency_penalty <= 2))
    throw std::invalid_argument("frequency_penalty must be in [-2, 2], got " + std::to_string(p.frequency_penalty));
  for (const auto& [id, bias] : p.logit_bias) {
    if (id < 0 || id >= vocab)
      throw std::invalid_argument("logit_bias: token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                  std::to_string(vocab) + ")");
    if (std::isnan(bias) || bias == std::numeric_limits<float>::infinity())
      throw std::invalid_argument("logit_bias: the bias of token " + std::to_string(id) + " must be a number or -inf, got " +
                                  std::to_string(bias));
  }
  if (p.min_tokens < 0 || p.min_tokens > p.max_tokens)
    throw std::invalid_argument("min_tokens must be in [0, max_tokens = " + std::to_string(p.max_tokens) + "], got " +
                                std::to_string(p.min_tokens));
  for (const auto& [name, v] : {std::pair{"logprobs", p.logprobs}, std::pair{"prompt_logprobs", p.prompt_logprobs}})
    if (v && (*v < 0 || *v > config_.max_logprobs))
      throw std::invalid_argument(std::string(name) + " must be in [0, max_logprobs = " +
                                  std::to_string(config_.max_logprobs) + "], got " + std::to_string(*v));
  if (p.max_tokens < 1) throw std::invalid_argument("max_tokens must be >= 1, got " + std::to_string(p.max_tokens));
  if (p.priority != 0 && !config_.priority_scheduling())
    throw std::invalid_argument("priority " + std::to_string(p.priority) + ": the scheduling policy is " +
                                config_.scheduling_policy + ", which serves in arrival order; priorities need "
                                "scheduling_policy priority (serve --scheduling-policy priority)");
  if (p.n < 1) throw std::invalid_argument("n must be >= 1, got " + std::to_string(p.n));
  if (p.n > config_.max_num_seqs)
    throw std::invalid_argument("n " + std::to_string(p.n) + " is larger than max_num_seqs " +
                                std::to_string(config_.max_num_seqs));
  for (const std::string& s : p.stop)
    if (s.empty()) throw std::invalid_argument("stop: an empty stop string would match everywhere");
  if (!p.stop.empty() && !tokenizer_)
    throw std::invalid_argument("stop strings need a tokenizer, and model directory '" + config_.model +
                                "' has no tokenizer.json (use stop_token_ids)");
  for (int32_t id : p.stop_token_ids)
    if (id < 0 || id >= vocab)
      throw std::invalid_argument("stop_token_ids: " + std::to_string(id) + " is outside the vocabulary [0, " +
                                  std::to_string(vocab) + ")");
}

int64_t LLMEngine::add_request(std::vector<int32_t> prompt, const SamplingParams& params) {
  validate(prompt, params);
  const int64_t id = next_request_id_++;
  const double now = steady_seconds();
  Request& r = requests_[id];
  stats_.on_request(static_cast<int>(prompt.size()));
  // The samples queue one after another, so they are prefilled in the same step when the budget
  // allows: the first registers the prompt's full blocks, the others hit them and compute only
  // the last partial block.
  for (int i = 0; i < params.n; ++i) {
    auto seq = std::make_unique<Sequence>(next_seq_id_++, prompt, params, config_.kvcache_block_size,
                                          sampling_key(params, config_.seed, id, i), now);
    seq->request_id = id;
    seq->index = i;
    if (params.min_tokens > 0) {  // vLLM masks EOS (unless ignored) and the stop token ids until then
      if (!params.ignore_eos) seq->min_tokens_mask.assign(eos_token_ids_.begin(), eos_token_ids_.end());
      seq->min_tokens_mask.insert(seq->min_tokens_mask.end(), params.stop_token_ids.begin(), params.stop_token_ids.end());
    }
    if (tokenizer_)
      seq->text_stream = std::make_unique<TextStream>(*tokenizer_, params.stop, params.include_stop_str_in_output,
                                                      params.skip_special_tokens);
    scheduler_->add(seq.get());
    r.samples.push_back(std::move(seq));
  }
  return id;
}

int64_t LLMEngine::add_request(const std::string& prompt, const SamplingParams& params) {
  return add_request(tokenizer().encode(prompt, /*add_special_tokens=*/true), params);  // vLLM's rule for text prompts
}

std::vector<StepOutput> LLMEngine::step() {
  ScheduledBatch batch = scheduler_->schedule();
  for (Sequence* s : batch.preempted) runner_->release(*s);  // its counts are rebuilt when it runs again
  if (batch.empty()) return {};
  StepTiming timing;
  StepResult result;
  try {
    result = runner_->run(batch, &timing);
  } catch (...) {
    scheduler_->forget_step(batch.seqs);  // the caller decides the requests' fate (generate aborts them)
    throw;
  }
  stats_.on_step(batch, timing);
  for (auto& [seq, lps] : result.prompt_logprobs)
    seq->prompt_logprobs.insert(seq->prompt_logprobs.end(), lps.begin(), lps.end());
  for (size_t i = 0; i < batch.sampled.size(); ++i)
    if (batch.sampled[i]->params.logprobs) batch.sampled[i]->logprobs.push_back(std::move(result.logprobs[i]));
  for (Sequence* s : scheduler_->postprocess(batch, result.tokens, timing.done)) runner_->release(*s);
  return outputs_of(batch);
}

std::vector<StepOutput> LLMEngine::outputs_of(const ScheduledBatch& batch) {
  std::vector<StepOutput> outs;
  outs.reserve(batch.sampled.size());
  for (Sequence* s : batch.sampled) {
    StepOutput o;
    o.request_id = s->request_id;
    o.index = s->index;
    o.new_token_ids = {s->last_token()};
    if (s->params.logprobs) o.logprobs = {s->logprobs.back()};
    o.text = s->output_text.substr(s->text_reported);
    s->text_reported = s->output_text.size();
    o.finished = s->is_finished();
    if (o.finished) {
      o.finish_reason = s->finish_reason;
      o.stop_reason = s->stop_reason;
      ++requests_.at(s->request_id).num_finished;
    }
    outs.push_back(std::move(o));
  }
  return outs;
}

void LLMEngine::abort_request(int64_t request_id) {
  auto it = requests_.find(request_id);
  if (it == requests_.end()) return;
  for (auto& s : it->second.samples) {
    if (!s->is_finished()) scheduler_->abort(s.get());
    runner_->release(*s);
  }
  requests_.erase(it);  // an aborted request is forgotten, output included
}

RequestOutput LLMEngine::take_output(int64_t request_id) {
  auto it = requests_.find(request_id);
  if (it == requests_.end())
    throw std::invalid_argument("take_output: unknown request id " + std::to_string(request_id) +
                                " (never added, aborted, or already taken)");
  if (!it->second.finished())
    throw std::logic_error("take_output: request " + std::to_string(request_id) + " has not finished");
  const Sequence& first = *it->second.samples.front();
  RequestOutput o;
  o.request_id = request_id;
  o.prompt_token_ids.assign(first.token_ids.begin(), first.token_ids.begin() + first.num_prompt_tokens);
  o.arrival_time = first.arrival_time;
  o.num_cached_prompt_tokens = first.num_prompt_cached_tokens;
  o.prompt_logprobs = std::move(it->second.samples.front()->prompt_logprobs);
  for (auto& s : it->second.samples) {
    CompletionOutput c;
    c.index = s->index;
    c.text = std::move(s->output_text);
    c.token_ids = s->completion_token_ids();
    c.logprobs = std::move(s->logprobs);
    c.finish_reason = s->finish_reason;
    c.stop_reason = s->stop_reason;
    c.first_token_time = s->first_token_time;
    c.first_scheduled_time = s->first_scheduled_time;
    c.finish_time = s->finish_time;
    o.outputs.push_back(std::move(c));
  }
  requests_.erase(it);
  return o;
}

std::vector<RequestOutput> LLMEngine::generate(const std::vector<std::vector<int32_t>>& prompts,
                                               const std::vector<SamplingParams>& params, bool use_tqdm) {
  if (params.size() != 1 && params.size() != prompts.size())
    throw std::invalid_argument("generate: " + std::to_string(params.size()) + " SamplingParams for " +
                                std::to_string(prompts.size()) + " prompts (give one for all, or one per prompt)");
  auto params_of = [&](size_t i) -> const SamplingParams& { return params.size() == 1 ? params[0] : params[i]; };
  for (size_t i = 0; i < prompts.size(); ++i) {
    try {
      validate(prompts[i], params_of(i));
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument("prompt " + std::to_string(i) + ": " + e.what());
    }
  }
  std::vector<int64_t> ids;
  ids.reserve(prompts.size());
  try {
    for (size_t i = 0; i < prompts.size(); ++i) ids.push_back(add_request(prompts[i], params_of(i)));
    ProgressBar bar(static_cast<int>(prompts.size()), use_tqdm);
    stats_.pause_gap_clock();
    int done = 0;
    while (done < static_cast<int>(ids.size())) {
      if (is_finished()) throw std::logic_error("generate: the engine went idle with requests pending");
      for (const StepOutput& o : step())
        if (o.finished && requests_.at(o.request_id).finished()) ++done;
      bar.update(done, stats_.last_prefill_tps(), stats_.last_decode_tps());
    }
    bar.close();
    stats_.pause_gap_clock();
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
  for (const std::string& p : prompts) ids.push_back(tokenizer().encode(p, /*add_special_tokens=*/true));
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
  s.prefix_cache_queries = block_manager_->num_queried_tokens();
  s.prefix_cache_hits = block_manager_->num_hit_tokens();
  s.num_preemptions = scheduler_->num_preemptions();
  stats_.fill(s);
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
