// Stopping and n in the engine, through the C++ API: stop strings (split across tokens, several
// at once, kept with include_stop_str_in_output), stop token ids, and n samples sharing the
// prompt's KV blocks. References: the same model's plain greedy run (its tokens and decoded text)
// and the tokenizer's decode, cut where vLLM cuts.
#include <gtest/gtest.h>
#include <filesystem>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "hf_fixture.h"
#include "nanovllm/llm.h"

namespace nanovllm {
namespace {

namespace fs = std::filesystem;

class EngineStop : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fixtures::write_tiny_model_with_tokenizer("engine_stop");
    if (dir_.empty()) return;
    llm_ = new LLM(dir_.string(), fixtures::cpu_engine_config(8, 256, 128));
  }
  static void TearDownTestSuite() {
    delete llm_;
    llm_ = nullptr;
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  void SetUp() override {
    if (!llm_) GTEST_SKIP() << "no models/qwen3-tokenizer (run scripts/setup.sh)";
    prompt_ = llm_->encode("Once upon a time, in a small village by the sea,");
    reference_ = llm_->generate({prompt_}, fixtures::greedy(24), false)[0];
  }
  // The text of the first k generated tokens, as the engine's output would hold it.
  std::string text_of(size_t k) const {
    std::vector<int32_t> ids(reference_.token_ids().begin(), reference_.token_ids().begin() + k);
    std::vector<int32_t> known;
    for (int32_t id : ids)
      if (id < 151643) known.push_back(id);  // special tokens and padded rows decode to nothing
    return llm_->decode(known);
  }
  RequestOutput run(SamplingParams p) const { return llm_->generate({prompt_}, p, false)[0]; }

  static inline fs::path dir_;
  static inline LLM* llm_ = nullptr;
  std::vector<int32_t> prompt_;
  RequestOutput reference_;
};

// The first k at which the first k tokens' text contains `s`.
size_t tokens_until(const std::function<std::string(size_t)>& text_of, const std::string& s, size_t max) {
  for (size_t k = 1; k <= max; ++k)
    if (text_of(k).find(s) != std::string::npos) return k;
  return 0;
}

TEST_F(EngineStop, StopStringSplitAcrossTokensCutsTheOutput) {
  const std::string full = reference_.text();
  ASSERT_EQ(full, text_of(24));
  // A stop string made of the end of one token's text and the start of the next one's.
  std::string stop;
  for (size_t k = 2; k + 1 < 24 && stop.empty(); ++k) {
    const std::string a = text_of(k - 1), b = text_of(k), c = text_of(k + 1);
    if (b.size() > a.size() && c.size() > b.size() && b.compare(0, a.size(), a) == 0 &&
        c.compare(0, b.size(), b) == 0)
      stop = b.substr(b.size() - 1) + c.substr(b.size(), 1);
  }
  ASSERT_FALSE(stop.empty()) << "no two adjacent tokens with text in: " << full;
  const size_t at = full.find(stop);
  const size_t k = tokens_until([&](size_t n) { return text_of(n); }, stop, 24);
  SamplingParams p = fixtures::greedy(24);
  p.stop = {stop};
  RequestOutput out = run(p);
  EXPECT_EQ(out.text(), full.substr(0, at));
  EXPECT_EQ(out.finish_reason(), FinishReason::stop);
  EXPECT_EQ(out.outputs[0].stop_reason, StopReason(stop));
  // The tokens run up to the one that completed the stop string (vLLM keeps them all).
  EXPECT_EQ(out.token_ids(), std::vector<int32_t>(reference_.token_ids().begin(), reference_.token_ids().begin() + k));
  p.include_stop_str_in_output = true;
  EXPECT_EQ(run(p).text(), full.substr(0, at + stop.size()));
}

TEST_F(EngineStop, EarliestOfSeveralStopsWins) {
  const std::string full = reference_.text();
  ASSERT_GE(full.size(), 8u);
  // Two stop strings taken from the text: the one that appears first ends it, whatever the order.
  const std::string late = full.substr(full.size() - 3), early = full.substr(full.size() / 2, 2);
  SamplingParams p = fixtures::greedy(24);
  p.stop = {late, early};
  RequestOutput out = run(p);
  const size_t cut = std::min(full.find(late), full.find(early));
  EXPECT_EQ(out.text(), full.substr(0, cut));
  EXPECT_EQ(out.finish_reason(), FinishReason::stop);
}

TEST_F(EngineStop, StopTokenIdEndsWithoutItsTextUnlessAsked) {
  const std::vector<int32_t>& ref = reference_.token_ids();
  const int32_t stop_id = ref[5];
  const size_t k = std::find(ref.begin(), ref.end(), stop_id) - ref.begin() + 1;  // first occurrence
  SamplingParams p = fixtures::greedy(24);
  p.stop_token_ids = {stop_id, 151000};
  RequestOutput out = run(p);
  EXPECT_EQ(out.token_ids(), std::vector<int32_t>(ref.begin(), ref.begin() + k));
  EXPECT_EQ(out.finish_reason(), FinishReason::stop);
  EXPECT_EQ(out.outputs[0].stop_reason, StopReason(stop_id));
  EXPECT_EQ(out.text(), text_of(k - 1));
  p.include_stop_str_in_output = true;
  EXPECT_EQ(run(p).text(), text_of(k));
}

TEST_F(EngineStop, StoppedSampleFreesItsBlocksInTheSameStep) {
  SamplingParams p = fixtures::greedy(24);
  p.stop_token_ids = {reference_.token_ids()[3]};
  const int64_t id = llm_->add_request(prompt_, p);
  bool finished = false;
  for (int i = 0; i < 30 && !finished; ++i)
    for (const StepOutput& o : llm_->step())
      if (o.request_id == id && o.finished) {
        finished = true;
        EXPECT_EQ(o.finish_reason, FinishReason::stop);
      }
  ASSERT_TRUE(finished);
  const EngineStats s = llm_->stats();
  EXPECT_EQ(s.num_free_blocks, s.num_kvcache_blocks);
  EXPECT_EQ(s.num_running + s.num_waiting, 0);
  llm_->take_output(id);
}

TEST_F(EngineStop, StepOutputsCarryTheTextAsItBecomesFinal) {
  SamplingParams p = fixtures::greedy(24);
  const int64_t id = llm_->add_request(prompt_, p);
  std::string streamed;
  std::vector<int32_t> tokens;
  while (!llm_->is_finished())
    for (const StepOutput& o : llm_->step()) {
      streamed += o.text;
      tokens.insert(tokens.end(), o.new_token_ids.begin(), o.new_token_ids.end());
    }
  EXPECT_EQ(tokens, reference_.token_ids());
  EXPECT_EQ(streamed, reference_.text());
  EXPECT_EQ(llm_->take_output(id).text(), reference_.text());
}

TEST_F(EngineStop, NSamplesShareThePromptBlocksAndAreReproducible) {
  // 8-token blocks: a prompt of 8m + r tokens shares its m full blocks with every other sample.
  std::vector<int32_t> prompt = prompt_;
  while (prompt.size() < 37) prompt.insert(prompt.end(), prompt_.begin(), prompt_.end());
  prompt.resize(37);
  SamplingParams p;
  p.temperature = 0.9f;
  p.max_tokens = 12;
  p.ignore_eos = true;
  p.seed = 1234;
  p.n = 3;
  const EngineStats before = llm_->stats();
  RequestOutput out = llm_->generate({prompt}, p, false)[0];
  const EngineStats after = llm_->stats();
  ASSERT_EQ(out.outputs.size(), 3u);
  std::set<std::vector<int32_t>> distinct;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(out.outputs[i].index, i);
    EXPECT_EQ(out.outputs[i].token_ids.size(), 12u);
    EXPECT_EQ(out.outputs[i].finish_reason, FinishReason::length);
    distinct.insert(out.outputs[i].token_ids);
  }
  EXPECT_EQ(distinct.size(), 3u);  // seeded differently per sample
  // Samples 1 and 2 found the first's 4 full blocks (32 tokens) in the prefix cache: the prompt
  // was prefilled once (less what earlier requests left cached), plus two 5-token tails.
  EXPECT_GE(after.prefix_cache_hits - before.prefix_cache_hits, 2 * 32);
  EXPECT_EQ(after.prefill_tokens - before.prefill_tokens, 37 - out.num_cached_prompt_tokens + 2 * 5);
  // Sample 0 is the request's seed itself: the same as an n = 1 request with that seed.
  SamplingParams one = p;
  one.n = 1;
  EXPECT_EQ(llm_->generate({prompt}, one, false)[0].token_ids(), out.outputs[0].token_ids);
  // And the whole answer is reproducible.
  RequestOutput again = llm_->generate({prompt}, p, false)[0];
  for (int i = 0; i < 3; ++i) EXPECT_EQ(again.outputs[i].token_ids, out.outputs[i].token_ids);
}

TEST_F(EngineStop, BadStoppingParametersAreRefusedByName) {
  auto refused = [&](SamplingParams p, const std::string& what) {
    try {
      llm_->add_request(prompt_, p);
      ADD_FAILURE() << "accepted: " << what;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  SamplingParams p = fixtures::greedy(4);
  p.stop = {""};
  refused(p, "stop");
  p = fixtures::greedy(4);
  p.stop_token_ids = {-1};
  refused(p, "stop_token_ids");
  p = fixtures::greedy(4);
  p.n = 0;
  refused(p, "n must be >= 1");
}

}  // namespace
}  // namespace nanovllm
