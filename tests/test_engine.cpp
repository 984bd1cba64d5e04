// The CPU engine end to end against Hugging Face: greedy continuations of random checkpoints of
// every family (tests/fixtures/models/*, made by tests/reference/make_model_fixtures.py and
// make_family_fixtures.py in float64), token for
// token, batched and one at a time, with prefix caching on and off and hitting, and under chunked
// prefill and preemption.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "hf_fixture.h"
#include "nanovllm/llm.h"

namespace nanovllm {
namespace {

using Case = fixtures::HfPrompt;
const auto& model_dir = fixtures::hf_fixture_dir;
const auto& load_cases = fixtures::load_hf_fixture;

EngineConfig cpu_config() {
  EngineConfig c = fixtures::cpu_engine_config(16, 256, 256);
  c.max_num_batched_tokens = 1024;
  c.max_num_seqs = 16;
  return c;
}

// Greedy through as many tokens as the fixture's continuations hold (16 or 24).
SamplingParams greedy_for(const std::vector<fixtures::HfPrompt>& cases) {
  return fixtures::greedy(static_cast<int>(cases.at(0).greedy.size()));
}

std::vector<std::vector<int32_t>> prompts_of(const std::vector<Case>& cases) {
  std::vector<std::vector<int32_t>> v;
  for (const Case& c : cases) v.push_back(c.ids);
  return v;
}

void expect_matches(const std::vector<Case>& cases, const std::vector<RequestOutput>& outs, const std::string& what) {
  ASSERT_EQ(outs.size(), cases.size()) << what;
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(outs[i].prompt_token_ids, cases[i].ids) << what << ", prompt " << i;
    EXPECT_EQ(outs[i].token_ids(), cases[i].greedy) << what << ", prompt " << i << " (" << cases[i].ids.size()
                                                   << " tokens)";
    EXPECT_EQ(outs[i].finish_reason(), FinishReason::length) << what;
  }
}

class EngineVsHF : public ::testing::TestWithParam<std::string> {};

TEST_P(EngineVsHF, AllPromptsBatched) {
  auto cases = load_cases(GetParam());
  LLM llm(model_dir(GetParam()), cpu_config());
  expect_matches(cases, llm.generate(prompts_of(cases), greedy_for(cases), false), "batched");
  EngineStats s = llm.stats();
  EXPECT_EQ(s.num_free_blocks, s.num_kvcache_blocks);
  EXPECT_EQ(s.generation_tokens, static_cast<int64_t>(cases[0].greedy.size() * cases.size()));
  EXPECT_EQ(s.device, "cpu");
}

TEST_P(EngineVsHF, OneAtATimeWithoutPrefixCaching) {
  auto cases = load_cases(GetParam());
  EngineConfig c = cpu_config();
  c.enable_prefix_caching = false;
  LLM llm(model_dir(GetParam()), c);
  for (const Case& cs : cases) expect_matches({cs}, llm.generate({cs.ids}, greedy_for(cases), false), "alone");
  EXPECT_EQ(llm.stats().prefix_cache_hits, 0);
}

TEST_P(EngineVsHF, PrefixCacheHits) {
  auto cases = load_cases(GetParam());
  LLM llm(model_dir(GetParam()), cpu_config());
  expect_matches(cases, llm.generate(prompts_of(cases), greedy_for(cases), false), "first run");
  int64_t hits_before = llm.stats().prefix_cache_hits;
  // The same prompts again hit the blocks the first run left cached (freed, hashes kept).
  auto again = llm.generate(prompts_of(cases), greedy_for(cases), false);
  expect_matches(cases, again, "second run");
  EXPECT_GT(llm.stats().prefix_cache_hits, hits_before);
  EXPECT_GT(again.back().num_cached_prompt_tokens, 0);
  // Each prompt twice in one batch: the copy hits blocks its twin computes in the same step.
  std::vector<Case> twice;
  for (const Case& cs : cases) twice.push_back(cs), twice.push_back(cs);
  expect_matches(twice, llm.generate(prompts_of(twice), greedy_for(cases), false), "twins");
  // A prompt extended by its own first 8 greedy tokens continues with the other 8, reusing blocks
  // that were filled while decoding.
  std::vector<Case> extended;
  for (const Case& cs : cases) {
    Case e;
    e.ids = cs.ids;
    e.ids.insert(e.ids.end(), cs.greedy.begin(), cs.greedy.begin() + 8);
    e.greedy.assign(cs.greedy.begin() + 8, cs.greedy.end());
    extended.push_back(e);
  }
  expect_matches(extended, llm.generate(prompts_of(extended), greedy_for(extended), false), "extended");
}

TEST_P(EngineVsHF, ChunkedPrefillAndPreemption) {
  auto cases = load_cases(GetParam());
  EngineConfig c = cpu_config();
  c.max_num_batched_tokens = 40;  // long prompts take several prefill steps
  c.kvcache_block_size = 4;
  c.num_kvcache_blocks = 66;      // 64 blocks hold one max_model_len sequence: running ones get preempted
  c.max_num_seqs = 12;
  LLM llm(model_dir(GetParam()), c);
  expect_matches(cases, llm.generate(prompts_of(cases), greedy_for(cases), false), "chunked + preempted");
  EngineStats s = llm.stats();
  if (cases.size() >= 12) EXPECT_GT(s.num_preemptions, 0);  // the Qwen3 fixtures' 12 prompts overflow the cache
  EXPECT_EQ(s.num_free_blocks, 66);
}

TEST_P(EngineVsHF, ChunkedPrefillWithoutPrefixCachingAndBlockSize1) {
  auto cases = load_cases(GetParam());
  EngineConfig c = cpu_config();
  c.kvcache_block_size = 1;
  c.num_kvcache_blocks = 600;
  c.max_num_batched_tokens = 77;
  c.enable_prefix_caching = false;
  LLM llm(model_dir(GetParam()), c);
  expect_matches(cases, llm.generate(prompts_of(cases), greedy_for(cases), false), "block size 1");
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EngineVsHF, ::testing::ValuesIn(fixtures::all_fixture_models()),
                         [](const auto& info) { return fixtures::param_name(info.param); });

}  // namespace
}  // namespace nanovllm
