// Sampling through the whole engine on the CPU: the tokens a request gets with penalties,
// logit_bias, min_tokens, min_p/top_k/top_p are the double-precision reference's picks over the
// model's own logits along the same path (teacher-forced through the engine's step path), token
// counts follow preemption, logprobs and prompt logprobs are consistent, and generation_config.json
// sets the defaults.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/numerics.h"
#include "engine/sampler.h"
#include "hf_fixture.h"
#include "nanovllm/llm.h"
#include "sampling_reference.h"

namespace nanovllm {
namespace {

using ::testing::HasSubstr;

constexpr int kVocab = 1000, kEos = 2;

std::string tiny() { return fixtures::hf_fixture_dir("tiny-tied"); }
EngineConfig config() { return fixtures::cpu_engine_config(8, 256, 160); }

std::vector<int32_t> prompt_of(int i, int len) {
  std::vector<int32_t> p;
  for (int j = 0; j < len; ++j) p.push_back((37 * i + 11 * j + 3) % kVocab);
  return p;
}

// Every token of `out` is the reference's pick over the engine's logits at that position (the
// same path, teacher-forced), with counts, prompt mask, adds and draws as the sampler had them;
// positions where a threshold or the top two scores sit within 1e-4 are skipped (float vs
// double). Returns how many positions were checked.
int expect_reference_path(const std::vector<int32_t>& prompt, const SamplingParams& p, const RequestOutput& out,
                          uint64_t engine_seed) {
  const std::vector<int32_t>& path = out.token_ids();
  EngineConfig c = config();
  c.model = tiny();
  const auto logits = teacher_forced_logits(c, {{prompt, path}})[0];
  std::vector<int32_t> counts(kVocab, 0);
  std::vector<char> in_prompt(kVocab, 0);
  for (int32_t t : prompt) in_prompt[t] = 1;
  SamplingRow r = sampling_row(Sequence(0, prompt, p, 8, sampling_key(p, engine_seed, out.request_id), 0.0), kVocab);
  if (r.has_penalties()) r.counts_row = 0;
  int checked = 0;
  for (size_t k = 0; k < path.size(); ++k) {
    r.counter = static_cast<int64_t>(k);
    std::vector<std::pair<int, float>> adds(p.logit_bias.begin(), p.logit_bias.end());
    if (static_cast<int>(k) < p.min_tokens) {
      adds.push_back({kEos, -INFINITY});
      for (int32_t id : p.stop_token_ids) adds.push_back({id, -INFINITY});
    }
    const std::vector<float> row(logits.begin() + k * kVocab, logits.begin() + (k + 1) * kVocab);
    const auto ref = testing_ref::reference_row(row, r, adds, counts, in_prompt);
    const auto loose = testing_ref::reference_row(row, r, adds, counts, in_prompt, 1e-4, -1e-4);
    const auto tight = testing_ref::reference_row(row, r, adds, counts, in_prompt, -1e-4, 1e-4);
    double s_ref = 0, s_tight = 0;
    const int want = testing_ref::reference_pick(ref, r, &s_ref);
    testing_ref::reference_pick(tight, r, &s_tight);
    // Skip near-ties of the two best scores and near-boundary rows.
    double second = -1e300;
    for (int v = 0; v < kVocab; ++v) {
      if (!ref.keep[v] || v == want) continue;
      double s = ref.x[v];
      if (r.temperature > 0) s -= std::log(-std::log(double(uniform01(r.key, r.counter, v))));
      second = std::max(second, s);
    }
    const bool clear = s_ref - second > 1e-4 && loose.keep == tight.keep;
    if (clear) {
      EXPECT_EQ(path[k], want) << "position " << k;
      ++checked;
    }
    counts[path[k]] += 1;
  }
  return checked;
}

TEST(EngineSampling, TokensAreTheReferencePicksAlongThePath) {
  std::vector<SamplingParams> settings;
  auto add = [&](auto&& f) {
    SamplingParams p;
    p.max_tokens = 24;
    p.ignore_eos = true;
    p.seed = 1234 + settings.size();
    f(p);
    settings.push_back(p);
  };
  add([](SamplingParams& p) { p.temperature = 0, p.repetition_penalty = 1.8f; });
  add([](SamplingParams& p) { p.temperature = 0, p.presence_penalty = 1.5f, p.frequency_penalty = 0.7f; });
  add([](SamplingParams& p) { p.temperature = 0, p.logit_bias = {{7, 3.0f}, {11, -100.0f}, {500, 0.5f}}; });
  add([](SamplingParams& p) { p.temperature = 0.8f, p.top_k = 5; });
  add([](SamplingParams& p) { p.temperature = 1.2f, p.top_p = 0.7f, p.repetition_penalty = 1.3f; });
  add([](SamplingParams& p) { p.temperature = 1.0f, p.min_p = 0.2f, p.frequency_penalty = -0.5f; });
  add([](SamplingParams& p) { p.temperature = 0.6f, p.top_k = 20, p.top_p = 0.95f, p.presence_penalty = 0.5f; });
  add([](SamplingParams& p) { p.temperature = 0, p.min_tokens = 6, p.stop_token_ids = {3, 4}, p.ignore_eos = false; });
  std::vector<std::vector<int32_t>> prompts;
  for (size_t i = 0; i < settings.size(); ++i) prompts.push_back(prompt_of(static_cast<int>(i), 9 + 7 * static_cast<int>(i)));
  LLM llm(tiny(), config());
  const auto outs = llm.generate(prompts, settings, false);  // one batch, every row its own settings
  int checked = 0, total = 0;
  for (size_t i = 0; i < settings.size(); ++i) {
    SCOPED_TRACE("setting " + std::to_string(i));
    checked += expect_reference_path(prompts[i], settings[i], outs[i], llm.config().seed);
    total += static_cast<int>(outs[i].token_ids().size());
  }
  EXPECT_GE(checked, total * 9 / 10) << "too many positions were too close to call";
}

// Greedy with penalties over 10 prompts, the tokens a roomy engine gives them, and a config
// where they are preempted and recomputed over and over, with more requests than counts rows.
struct PenaltyPreemption {
  SamplingParams p;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<RequestOutput> want;
  EngineConfig tight = config();
  PenaltyPreemption() {
    p.temperature = 0;
    p.max_tokens = 20;
    p.ignore_eos = true;
    p.repetition_penalty = 1.6f;
    p.frequency_penalty = 0.4f;
    for (int i = 0; i < 10; ++i) prompts.push_back(prompt_of(i, 10 + 3 * i));
    LLM roomy(tiny(), config());
    want = roomy.generate(prompts, p, false);
    tight.max_model_len = 64;
    tight.num_kvcache_blocks = 12;
    tight.max_num_seqs = 4;
    tight.max_num_batched_tokens = 24;
  }
};

TEST(EngineSampling, PenaltyCountsSurvivePreemptionAndRowsComeBack) {
  const PenaltyPreemption t;
  const auto& [p, prompts, want, tight] = t;
  LLM small(tiny(), tight);
  for (int round = 0; round < 2; ++round) {
    const auto got = small.generate(prompts, p, false);
    for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(got[i].token_ids(), want[i].token_ids()) << "prompt " << i;
  }
  EXPECT_GT(small.stats().num_preemptions, 0);
}

// Under the priority policy, higher-priority requests that arrive after a preemption run before
// the preempted one: it must not keep its counts row meanwhile (max_num_seqs rows in all).
TEST(EngineSampling, PenaltyCountsSurvivePreemptionUnderPriority) {
  PenaltyPreemption t;
  t.tight.scheduling_policy = "priority";
  const auto& [p, prompts, want, tight] = t;
  LLM small(tiny(), tight);
  std::vector<int64_t> ids;
  SamplingParams low = p;
  low.priority = 5;
  for (int i = 0; i < 4; ++i) ids.push_back(small.add_request(prompts[i], low));
  for (int i = 0; i < 200 && small.stats().num_preemptions == 0; ++i) small.step();
  ASSERT_GT(small.stats().num_preemptions, 0);
  for (int i = 4; i < 10; ++i) ids.push_back(small.add_request(prompts[i], p));  // priority 0: ahead of the low ones
  for (int i = 0; i < 5000 && !small.is_finished(); ++i) small.step();
  ASSERT_TRUE(small.is_finished());
  for (size_t i = 0; i < ids.size(); ++i)
    EXPECT_EQ(small.take_output(ids[i]).token_ids(), want[i].token_ids()) << "prompt " << i;
}

TEST(EngineSampling, MinTokensHoldsEosAndStopsBack) {
  SamplingParams p;
  p.temperature = 0;
  p.max_tokens = 30;
  p.logit_bias = {{kEos, 60.0f}};  // EOS would win at once
  LLM llm(tiny(), config());
  EXPECT_EQ(llm.generate({prompt_of(1, 12)}, p, false)[0].token_ids(), std::vector<int32_t>{kEos});
  p.min_tokens = 5;
  const auto out = llm.generate({prompt_of(1, 12)}, p, false)[0];
  ASSERT_EQ(out.token_ids().size(), 6u);
  for (int i = 0; i < 5; ++i) EXPECT_NE(out.token_ids()[i], kEos);
  EXPECT_EQ(out.token_ids()[5], kEos);
  EXPECT_EQ(out.finish_reason(), FinishReason::stop);
  // A stop token id is held back the same way.
  p.logit_bias = {{9, 60.0f}};
  p.stop_token_ids = {9};
  const auto stopped = llm.generate({prompt_of(2, 12)}, p, false)[0];
  ASSERT_EQ(stopped.token_ids().size(), 6u);
  EXPECT_EQ(stopped.token_ids()[5], 9);
  EXPECT_EQ(stopped.outputs[0].stop_reason, StopReason(int32_t{9}));
}

TEST(EngineSampling, TinyTemperaturesAreGreedy) {
  LLM llm(tiny(), config());
  const auto prompt = prompt_of(3, 20);
  const auto greedy = llm.generate({prompt}, fixtures::greedy(16), false)[0].token_ids();
  for (float t : {1e-39f, 1e-20f, 9e-6f}) {
    SamplingParams p = fixtures::greedy(16);
    p.temperature = t;
    p.top_k = 3;  // ignored when greedy, as vLLM
    EXPECT_EQ(llm.generate({prompt}, p, false)[0].token_ids(), greedy) << "temperature " << t;
  }
}

TEST(EngineSampling, LogprobsOfAGreedyRun) {
  LLM llm(tiny(), config());
  SamplingParams p = fixtures::greedy(12);
  p.logprobs = 5;
  const auto out = llm.generate({prompt_of(4, 30)}, p, false)[0];
  const auto& lps = out.outputs[0].logprobs;
  ASSERT_EQ(lps.size(), out.token_ids().size());
  for (size_t k = 0; k < lps.size(); ++k) {
    EXPECT_EQ(lps[k].token_id, out.token_ids()[k]);
    ASSERT_EQ(lps[k].top.size(), 5u);
    EXPECT_EQ(lps[k].top[0].token_id, lps[k].token_id);  // greedy takes the most likely
    EXPECT_FLOAT_EQ(lps[k].top[0].logprob, lps[k].logprob);
    EXPECT_EQ(lps[k].rank, 1);
    double mass = 0;
    for (size_t j = 0; j < 5; ++j) {
      mass += std::exp(lps[k].top[j].logprob);
      if (j) EXPECT_LE(lps[k].top[j].logprob, lps[k].top[j - 1].logprob);
    }
    EXPECT_LE(mass, 1.0 + 1e-5);
  }
  // logprobs = 0: the token's own logprob and rank, no top list.
  p.logprobs = 0;
  const auto bare = llm.generate({prompt_of(4, 30)}, p, false)[0].outputs[0].logprobs;
  ASSERT_EQ(bare.size(), lps.size());
  EXPECT_TRUE(bare[0].top.empty());
  EXPECT_FLOAT_EQ(bare[0].logprob, lps[0].logprob);
}

TEST(EngineSampling, PromptLogprobsComputeTheWholePrompt) {
  const auto prompt = prompt_of(5, 40);
  SamplingParams p = fixtures::greedy(2);
  p.prompt_logprobs = 3;
  LLM fresh(tiny(), config());
  const auto ref = fresh.generate({prompt}, p, false)[0];
  ASSERT_EQ(ref.prompt_logprobs.size(), prompt.size() - 1);
  for (size_t j = 0; j < ref.prompt_logprobs.size(); ++j) {
    EXPECT_EQ(ref.prompt_logprobs[j].token_id, prompt[j + 1]);
    EXPECT_EQ(ref.prompt_logprobs[j].top.size(), 3u);
    EXPECT_LE(ref.prompt_logprobs[j].logprob, ref.prompt_logprobs[j].top[0].logprob);
    EXPECT_GE(ref.prompt_logprobs[j].rank, 1);
  }
  // After the same prompt went through without prompt logprobs (its blocks are cached), and in
  // 7-token chunks: the same values, and no prefix-cache hit for the request that wants them.
  EngineConfig chunked = config();
  chunked.max_num_batched_tokens = 7;
  LLM llm(tiny(), chunked);
  llm.generate({prompt}, fixtures::greedy(2), false);
  const auto again = llm.generate({prompt}, p, false)[0];
  EXPECT_EQ(again.num_cached_prompt_tokens, 0);
  ASSERT_EQ(again.prompt_logprobs.size(), ref.prompt_logprobs.size());
  for (size_t j = 0; j < again.prompt_logprobs.size(); ++j) {
    EXPECT_NEAR(again.prompt_logprobs[j].logprob, ref.prompt_logprobs[j].logprob, 1e-4) << j;
    EXPECT_EQ(again.prompt_logprobs[j].top[0].token_id, ref.prompt_logprobs[j].top[0].token_id) << j;
  }
  // n > 1: the request's prompt logprobs come once; the other samples may hit the cache.
  p.n = 3;
  p.temperature = 1.0f;
  const auto many = llm.generate({prompt}, p, false)[0];
  EXPECT_EQ(many.prompt_logprobs.size(), prompt.size() - 1);
}

std::filesystem::path model_with_generation_config(const std::string& json, const std::string& tag) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("nanovllm_gencfg_" + tag + "_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(tiny())) fs::copy_file(e.path(), dir / e.path().filename(), fs::copy_options::overwrite_existing);
  std::ofstream(dir / "generation_config.json") << json;
  return dir;
}

TEST(EngineSampling, GenerationConfigSetsTheDefaults) {
  const auto dir = model_with_generation_config(
      R"({"temperature": 0.3, "top_k": 7, "top_p": 0.8, "min_p": 0.05, "repetition_penalty": 1.1, "max_new_tokens": 9, "eos_token_id": 2})",
      "ok");
  LLM llm(dir.string(), config());
  const SamplingParams d = llm.default_sampling_params();
  EXPECT_FLOAT_EQ(d.temperature, 0.3f);
  EXPECT_EQ(d.top_k, 7);
  EXPECT_FLOAT_EQ(d.top_p, 0.8f);
  EXPECT_FLOAT_EQ(d.min_p, 0.05f);
  EXPECT_FLOAT_EQ(d.repetition_penalty, 1.1f);
  EXPECT_EQ(d.max_tokens, 9);
  SamplingParams ignore = d;
  ignore.ignore_eos = true;
  EXPECT_EQ(llm.generate({prompt_of(1, 5)}, ignore, false)[0].token_ids().size(), 9u);
  EngineConfig off = config();
  off.generation_config = "vllm";
  const SamplingParams plain = LLM(dir.string(), off).default_sampling_params();
  EXPECT_FLOAT_EQ(plain.temperature, 1.0f);
  EXPECT_EQ(plain.top_k, 0);
  EXPECT_EQ(plain.max_tokens, SamplingParams{}.max_tokens);
  // A directory given instead, and errors that name the file and the field.
  EngineConfig from_dir = config();
  from_dir.generation_config = dir.string();
  EXPECT_EQ(LLM(tiny(), from_dir).default_sampling_params().top_k, 7);
  const auto bad = model_with_generation_config(R"({"top_p": 1.5})", "bad");
  try {
    LLM broken(bad.string(), config());
    ADD_FAILURE() << "a top_p of 1.5 was accepted";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("generation_config.json"));
    EXPECT_THAT(e.what(), HasSubstr("top_p"));
  }
  EngineConfig missing = config();
  missing.generation_config = "/nonexistent-dir";
  EXPECT_THROW(LLM(tiny(), missing), std::runtime_error);
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(bad);
}

TEST(EngineSampling, BadParametersNameTheField) {
  LLM llm(tiny(), config());
  auto error_of = [&](auto&& set) {
    SamplingParams p;
    set(p);
    try {
      llm.generate({prompt_of(0, 4)}, p, false);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(error_of([](SamplingParams& p) { p.top_p = 0; }), HasSubstr("top_p"));
  EXPECT_THAT(error_of([](SamplingParams& p) { p.top_p = 1.01f; }), HasSubstr("top_p"));
  EXPECT_THAT(error_of([](SamplingParams& p) { p.top_k = -2; }), HasSubstr("top_k"));
  EXPECT_THAT(error_of([](SamplingParams& p) { p.min_p = -0.1f; }), HasSubstr("min_p"));
  EXPECT_THAT(error_of([](SamplingParams& p) { p.repetition_penalty = 0; }), HasSubstr("repetition_penalty"));
  EXPECT_THAT(error_of([](SamplingParams& p) { p.presence_penalty = NAN; }), HasSubstr("presence_penalty"));
  EXPECT_THAT(error_of([](SamplingParams& p) { p.frequency_penalty = 2.5f; }), HasSubstr("frequency_penalty"));
  EXPECT_THAT(error_of([](SamplingParams& p) { p.logit_bias = {{kVocab, 1.0f}}; }), HasSubstr("logit_bias"));
  EXPECT_THAT(error_of([](SamplingParams& p) { p.logit_bias = {{5, NAN}}; }), HasSubstr("logit_bias"));
  EXPECT_THAT(error_of([](SamplingParams& p) { p.min_tokens = 100; }), HasSubstr("min_tokens"));
  EXPECT_THAT(error_of([](SamplingParams& p) { p.logprobs = 21; }), HasSubstr("logprobs"));
  EXPECT_THAT(error_of([](SamplingParams& p) { p.prompt_logprobs = -1; }), HasSubstr("prompt_logprobs"));
  EXPECT_THAT(error_of([](SamplingParams& p) { p.temperature = INFINITY; }), HasSubstr("temperature"));
  EXPECT_THAT(error_of([](SamplingParams& p) { p.priority = 1; }), HasSubstr("priority 1: the scheduling policy is fcfs"));
  EngineConfig c = config();
  c.scheduling_policy = "lifo";
  EXPECT_THROW(
      {
        try {
          LLM bad(tiny(), c);
        } catch (const std::invalid_argument& e) {
          EXPECT_THAT(e.what(), HasSubstr("scheduling_policy 'lifo'"));
          throw;
        }
      },
      std::invalid_argument);
}

}  // namespace
}  // namespace nanovllm
