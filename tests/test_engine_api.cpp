// The LLM API around the engine: errors that name the bad input, the add_request/step/take_output
// loop, abort, eos and length stops, max_model_len, stats, and text prompts through the tokenizer.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <unistd.h>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "model/random_model.h"
#include "engine/llm_engine.h"
#include "hf_fixture.h"
#include "nanovllm/llm.h"

namespace nanovllm {
namespace {

namespace fs = std::filesystem;

std::string tiny() { return fixtures::hf_fixture_dir("tiny-tied"); }

EngineConfig cfg() { return fixtures::cpu_engine_config(8, 256, 128); }

using fixtures::greedy;
using Fixture = fixtures::HfColumns;
Fixture fixture() { return fixtures::load_hf_columns("tiny-tied"); }

// Expects `fn` to throw E with a message containing every one of `parts`.
template <class E, class F>
void expect_error(F fn, std::vector<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "no exception";
  } catch (const E& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

TEST(EngineApi, RejectsBadRequests) {
  LLM llm(tiny(), cfg());
  expect_error<std::invalid_argument>([&] { llm.add_request(std::vector<int32_t>(300, 5), greedy(4)); },
                                      {"300", "256"});
  expect_error<std::invalid_argument>([&] { llm.add_request(std::vector<int32_t>{1, 1000}, greedy(4)); },
                                      {"1000", "position 1"});
  expect_error<std::invalid_argument>([&] { llm.add_request(std::vector<int32_t>{-3}, greedy(4)); }, {"-3"});
  expect_error<std::invalid_argument>([&] { llm.add_request(std::vector<int32_t>{}, greedy(4)); }, {"empty"});
  SamplingParams neg = greedy(4);
  neg.temperature = -0.5f;
  expect_error<std::invalid_argument>([&] { llm.add_request(std::vector<int32_t>{1}, neg); }, {"temperature"});
  expect_error<std::invalid_argument>([&] { llm.add_request(std::vector<int32_t>{1}, greedy(0)); }, {"max_tokens"});
  expect_error<std::invalid_argument>(
      [&] { llm.generate(std::vector<std::vector<int32_t>>{{1}, {2}, {3}}, {greedy(2), greedy(2)}, false); },
      {"2 SamplingParams", "3 prompts"});
  // No tokenizer.json in the fixture: text needs one, token ids do not.
  expect_error<std::runtime_error>([&] { llm.add_request(std::string("hello"), greedy(4)); },
                                   {"tokenizer.json", "tiny-tied"});
  EXPECT_FALSE(llm.has_tokenizer());
  EXPECT_TRUE(llm.is_finished());  // nothing was queued by the failures
  EXPECT_EQ(llm.generate(std::vector<std::vector<int32_t>>{{5, 6}}, greedy(3), false)[0].token_ids().size(), 3u);
}

TEST(EngineApi, RejectsBadConfigs) {
  EngineConfig c = cfg();
  c.tensor_parallel_size = 3;  // the tiny model's 4 attention heads do not split 3 ways
  expect_error<std::invalid_argument>([&] { LLM llm(tiny(), c); }, {"tensor_parallel_size 3", "num_attention_heads"});
  expect_error<std::invalid_argument>([&] { LLM llm("/nonexistent/model", cfg()); }, {"/nonexistent/model"});
  c = cfg();
  c.num_kvcache_blocks = 3;  // one sequence of 256 tokens needs 32 blocks of 8
  expect_error<std::runtime_error>([&] { LLM llm(tiny(), c); }, {"KV cache too small", "max_model_len 256"});
  expect_error<std::invalid_argument>([&] { parse_device("tpu"); }, {"tpu", "cpu, cuda or auto"});
}

TEST(EngineApi, ResolvesConfig) {
  EngineConfig c = cfg();
  c.max_model_len = 100000;  // capped by max_position_embeddings (512)
  c.num_kvcache_blocks = -1;
  c.cpu_kvcache_space_gb = 0.01;
  c.device = parse_device("auto");
  EXPECT_FALSE(c.device.has_value());
  LLM llm(tiny(), c);
  EXPECT_EQ(llm.config().max_model_len, 512);
  ASSERT_TRUE(llm.config().device.has_value());  // resolved
  if (llm.config().device == DeviceKind::cpu) {
    // 0.01 GiB / (2 * 2 layers * 8 tokens * 2 kv heads * 64 dims * 4 bytes) = 655 blocks.
    EXPECT_EQ(llm.config().num_kvcache_blocks, 655);
    EXPECT_EQ(llm.stats().kvcache_bytes, 655LL * 16384);
  }
}

TEST(EngineApi, StepLoopMatchesGenerate) {
  Fixture fx = fixture();
  LLM llm(tiny(), cfg());
  std::map<int64_t, size_t> which;
  for (size_t i = 0; i < fx.ids.size(); ++i) which[llm.add_request(fx.ids[i], greedy(16))] = i;
  std::map<int64_t, std::vector<int32_t>> streamed;
  std::set<int64_t> finished;
  while (!llm.is_finished()) {
    for (const StepOutput& o : llm.step()) {
      EXPECT_FALSE(finished.count(o.request_id)) << "output after finish";
      streamed[o.request_id].insert(streamed[o.request_id].end(), o.new_token_ids.begin(), o.new_token_ids.end());
      if (o.finished) {
        finished.insert(o.request_id);
        EXPECT_EQ(o.finish_reason, FinishReason::length);
      }
    }
  }
  EXPECT_EQ(finished.size(), fx.ids.size());
  for (auto [id, i] : which) {
    RequestOutput out = llm.take_output(id);
    EXPECT_EQ(out.request_id, id);
    EXPECT_EQ(out.token_ids(), fx.greedy[i]);
    EXPECT_EQ(streamed[id], fx.greedy[i]);
    EXPECT_LE(out.arrival_time, out.outputs[0].first_token_time);
    EXPECT_LE(out.outputs[0].first_token_time, out.outputs[0].finish_time);
    EXPECT_EQ(out.text(), "");  // no tokenizer
  }
  expect_error<std::invalid_argument>([&] { llm.take_output(which.begin()->first); }, {"unknown request id"});
  EngineStats s = llm.stats();
  int64_t prompt_tokens = 0;
  for (const auto& p : fx.ids) prompt_tokens += p.size();
  EXPECT_EQ(s.prompt_tokens, prompt_tokens);
  EXPECT_EQ(s.generation_tokens, 16 * static_cast<int64_t>(fx.ids.size()));
  EXPECT_EQ(s.prefill_tokens, prompt_tokens);
  EXPECT_EQ(s.decode_tokens, 15 * static_cast<int64_t>(fx.ids.size()));
  EXPECT_GT(s.prefill_seconds, 0);
  EXPECT_GT(s.decode_seconds, 0);
  EXPECT_GT(s.peak_device_bytes, 0);
  EXPECT_EQ(s.num_running + s.num_waiting, 0);
  EXPECT_EQ(s.block_size, 8);
}

// NANOVLLM_STEP_TRACE: one CSV line per step with the batch's shape, for measurements.
TEST(EngineApi, StepTraceWritesOneLinePerStep) {
  Fixture fx = fixture();
  const fs::path path = fs::temp_directory_path() / ("nanovllm_steps_" + std::to_string(getpid()) + ".csv");
  ASSERT_EQ(setenv("NANOVLLM_STEP_TRACE", path.c_str(), 1), 0);
  {
    LLM llm(tiny(), cfg());
    unsetenv("NANOVLLM_STEP_TRACE");
    std::vector<std::vector<int32_t>> prompts(fx.ids.begin(), fx.ids.begin() + 3);
    llm.generate(prompts, greedy(4), /*use_tqdm=*/false);
  }
  std::ifstream f(path);
  std::string line;
  ASSERT_TRUE(std::getline(f, line));
  EXPECT_EQ(line, "prefill,seqs,padded,tokens,context_tokens,us");
  int prefill = 0, decode = 0, decode_tokens = 0;
  while (std::getline(f, line)) {
    int is_prefill = 0, seqs = 0, padded = 0, tokens = 0;
    long long ctx = 0;
    double us = 0;
    ASSERT_EQ(std::sscanf(line.c_str(), "%d,%d,%d,%d,%lld,%lf", &is_prefill, &seqs, &padded, &tokens, &ctx, &us), 6)
        << line;
    EXPECT_GT(us, 0);
    EXPECT_GE(ctx, tokens);
    (is_prefill ? prefill : decode) += 1;
    if (!is_prefill) {
      EXPECT_EQ(tokens, seqs);  // one token a sequence
      decode_tokens += tokens;
    }
  }
  EXPECT_GE(prefill, 1);
  EXPECT_EQ(decode_tokens, 3 * 3);  // 4 tokens each: the first from prefill, 3 from decode steps
  EXPECT_GE(decode, 3);
  fs::remove(path);
}

TEST(EngineApi, AbortFreesAndForgets) {
  Fixture fx = fixture();
  LLM llm(tiny(), cfg());
  int64_t a = llm.add_request(fx.ids[11], greedy(16));
  int64_t b = llm.add_request(fx.ids[10], greedy(16));
  llm.step();
  llm.abort_request(a);
  llm.abort_request(12345);  // unknown: no-op
  while (!llm.is_finished()) llm.step();
  EXPECT_EQ(llm.take_output(b).token_ids(), fx.greedy[10]);
  expect_error<std::invalid_argument>([&] { llm.take_output(a); }, {"unknown request id"});
  EngineStats s = llm.stats();
  EXPECT_EQ(s.num_free_blocks, s.num_kvcache_blocks);
}

TEST(EngineApi, StopsAtEosUnlessIgnored) {
  Fixture fx = fixture();
  // The fixture's 150-token prompt continues 572, 788, 2 (eos, from config.json), ...
  ASSERT_EQ(fx.greedy[10][2], 2);
  LLM llm(tiny(), cfg());
  auto outs = llm.generate({fx.ids[10], fx.ids[10]}, {greedy(16, false), greedy(16, true)}, false);
  EXPECT_EQ(outs[0].token_ids(), std::vector<int32_t>(fx.greedy[10].begin(), fx.greedy[10].begin() + 3));
  EXPECT_EQ(outs[0].finish_reason(), FinishReason::stop);
  EXPECT_EQ(outs[1].token_ids(), fx.greedy[10]);
  EXPECT_EQ(outs[1].finish_reason(), FinishReason::length);
}

TEST(EngineApi, StopsAtMaxModelLen) {
  Fixture fx = fixture();
  EngineConfig c = cfg();
  c.max_model_len = 205;
  LLM llm(tiny(), c);
  auto out = llm.generate({fx.ids[11]}, greedy(16), false)[0];  // 200-token prompt
  EXPECT_EQ(out.token_ids(), std::vector<int32_t>(fx.greedy[11].begin(), fx.greedy[11].begin() + 5));
  EXPECT_EQ(out.finish_reason(), FinishReason::length);
  // A prompt of exactly max_model_len still gets its one token.
  std::vector<int32_t> full(fx.ids[11].begin(), fx.ids[11].end());
  full.resize(205, 7);
  EXPECT_EQ(llm.generate({full}, greedy(16), false)[0].token_ids().size(), 1u);
}

// A random tiny Qwen3 with the real Qwen3 tokenizer beside it.
class WithTokenizer : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fixtures::write_tiny_model_with_tokenizer("engine_api");
    if (dir_.empty()) GTEST_SKIP() << "no models/qwen3-tokenizer (run scripts/setup.sh)";
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  fs::path dir_;
};

TEST_F(WithTokenizer, TextPromptsAreEncodedAndCompletionsDecoded) {
  LLM llm(dir_.string(), cfg());
  ASSERT_TRUE(llm.has_tokenizer());
  const std::string prompt = "The capital of France is";
  auto by_text = llm.generate(std::vector<std::string>{prompt}, greedy(8), false)[0];
  auto by_ids = llm.generate({llm.encode(prompt)}, greedy(8), false)[0];
  EXPECT_EQ(by_text.prompt_token_ids, llm.encode(prompt));
  EXPECT_EQ(by_text.token_ids(), by_ids.token_ids());
  // The text is the completion decoded with special tokens skipped, and without the ids of
  // Qwen3's padded embedding rows (151669 and up), which have no token (HF drops them too).
  std::vector<int32_t> expected_ids;
  for (int32_t id : by_text.token_ids())
    if (id < 151643) expected_ids.push_back(id);  // 151643+ are special or padding
  bool has_added_nonspecial = false;
  for (int32_t id : by_text.token_ids()) has_added_nonspecial |= (id >= 151646 && id < 151669);
  if (!has_added_nonspecial) EXPECT_EQ(by_text.text(), llm.decode(expected_ids));
  auto chat = llm.apply_chat_template({{"user", "Hi", ""}}, true, false);
  EXPECT_NE(chat.find("<|im_start|>user\nHi<|im_end|>"), std::string::npos);
}

TEST_F(WithTokenizer, CompletionTextSkipsSpecialAndUnknownIds) {
  EngineConfig c = cfg();
  c.model = dir_.string();
  LLMEngine engine(c);
  auto hello = engine.tokenizer().encode("hello world");
  std::vector<int32_t> ids = hello;
  ids.push_back(151645);  // <|im_end|>
  ids.push_back(151643);  // <|endoftext|>
  ids.push_back(151900);  // a padded embedding row: no token
  TextStream text(engine.tokenizer(), {}, false, /*skip_special_tokens=*/true);
  std::string out;
  for (int32_t id : ids) out += text.push(id);
  out += text.finish();
  EXPECT_EQ(out, "hello world");
  // tokenizer_config.json's eos joins config.json's: <|im_end|> stops a request.
  EXPECT_EQ(engine.tokenizer().eos_token_id(), std::optional<int32_t>(151645));
}

}  // namespace
}  // namespace nanovllm

namespace nanovllm {
namespace {

// vLLM's tokenization of text prompts: with the tokenizer's special tokens. Llama 3's tokenizer
// puts <|begin_of_text|> (128000) first; a rendered chat carries its own and gets none added.
TEST(EngineApi, TextPromptsGetTheTokenizersSpecialTokens) {
  namespace fs = std::filesystem;
  const fs::path tok = fs::path(NANOVLLM_SOURCE_DIR) / "models/llama3_1-tokenizer";
  if (!fs::exists(tok / "tokenizer.json")) GTEST_SKIP() << "models/llama3_1-tokenizer is missing (scripts/setup.sh)";
  const fs::path dir = fs::temp_directory_path() / ("nanovllm_llama_bos_" + std::to_string(::getpid()));
  RandomModelSpec spec = random_model_preset("tiny", ModelArch::llama);
  spec.dtype = DType::f32;
  spec.vocab_size = 128256;
  spec.bos_token_id = 128000;
  spec.eos_token_ids = {128009};
  write_random_model(spec, dir);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) fs::copy_file(tok / f, dir / f);
  LLM llm(dir.string(), fixtures::cpu_engine_config(16, 256, 64));
  const auto ids = llm.encode("Hello world");
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), 128000);
  EXPECT_EQ(llm.encode("Hello world", false), std::vector<int32_t>(ids.begin() + 1, ids.end()));
  const auto out = llm.generate({"Hello world"}, fixtures::greedy(2), false)[0];
  EXPECT_EQ(out.prompt_token_ids, ids);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace nanovllm
