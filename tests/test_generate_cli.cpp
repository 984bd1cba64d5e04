// `nanovllm generate` end to end: the executable's JSON lines against the Hugging Face fixture,
// prompt order, text output, chat prompts, and errors that name the bad input.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "hf_fixture.h"
#include "model/random_model.h"
#include "nanovllm/llm.h"

namespace nanovllm {
namespace {

namespace fs = std::filesystem;

struct Result {
  int rc = -1;
  std::string out;  // stdout and stderr together when merged
};

Result run_cli(const std::string& args, bool merge_stderr = false) {
  std::string cmd = std::string(NANOVLLM_BINARY) + " generate " + args + (merge_stderr ? " 2>&1" : " 2>/dev/null");
  Result r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int status = pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string fixture_dir() { return std::string(NANOVLLM_SOURCE_DIR) + "/tests/fixtures/models/small-untied"; }

std::string join_ids(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

const char* kCommon = " --device cpu --threads 1 --max-model-len 256 --block-size 16 --num-kvcache-blocks 64";

TEST(GenerateCli, JsonLinesMatchHuggingFaceInPromptOrder) {
  std::ifstream f(fixture_dir() + "/expected.json");
  auto j = nlohmann::json::parse(f);
  std::vector<std::vector<int32_t>> ids, expected;
  std::string args = "--model " + fixture_dir() + kCommon + " --temperature 0 --max-tokens 16 --ignore-eos --json";
  for (int i : {9, 0, 5}) {  // long, short, middle: output order must follow the command line
    ids.push_back(j["prompts"][i]["ids"].get<std::vector<int32_t>>());
    expected.push_back(j["prompts"][i]["greedy"].get<std::vector<int32_t>>());
    args += " --prompt-ids " + join_ids(ids.back());
  }
  Result r = run_cli(args);
  ASSERT_EQ(r.rc, 0);
  std::istringstream lines(r.out);
  std::string line;
  size_t k = 0;
  while (std::getline(lines, line)) {
    ASSERT_LT(k, ids.size()) << line;
    auto o = nlohmann::json::parse(line);
    EXPECT_EQ(o["prompt_token_ids"].get<std::vector<int32_t>>(), ids[k]);
    EXPECT_EQ(o["token_ids"].get<std::vector<int32_t>>(), expected[k]);
    EXPECT_EQ(o["finish_reason"], "length");
    EXPECT_FALSE(o.contains("text"));  // the fixture has no tokenizer
    ++k;
  }
  EXPECT_EQ(k, ids.size());
}

TEST(GenerateCli, PlainTextOutputAndStats) {
  Result r = run_cli("--model " + fixture_dir() + kCommon + " --temperature 0 --max-tokens 3 --prompt-ids 5,6,7",
                     true);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("Prompt: [5, 6, 7]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Completion: ["), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("decode 2 tokens"), std::string::npos) << r.out;
}

TEST(GenerateCli, ErrorsNameTheInput) {
  Result bad_ids = run_cli("--model " + fixture_dir() + kCommon + " --prompt-ids 1,x,3", true);
  EXPECT_NE(bad_ids.rc, 0);
  EXPECT_NE(bad_ids.out.find("'x' is not a token id"), std::string::npos) << bad_ids.out;
  Result no_tok = run_cli("--model " + fixture_dir() + kCommon + " --prompt hello", true);
  EXPECT_NE(no_tok.rc, 0);
  EXPECT_NE(no_tok.out.find("tokenizer.json"), std::string::npos) << no_tok.out;
  Result out_of_vocab = run_cli("--model " + fixture_dir() + kCommon + " --prompt-ids 1,5000", true);
  EXPECT_NE(out_of_vocab.rc, 0);
  EXPECT_NE(out_of_vocab.out.find("5000"), std::string::npos) << out_of_vocab.out;
  Result none = run_cli("--model " + fixture_dir() + kCommon, true);
  EXPECT_NE(none.rc, 0);
  EXPECT_NE(none.out.find("at least one --prompt"), std::string::npos) << none.out;
  // Numeric flags say what they want and what they got.
  for (auto [flags, want] : std::vector<std::pair<std::string, std::string>>{
           {" --max-num-seqs 0", "--max-num-seqs: must be a positive number, got 0"},
           {" --max-model-len abc", "--max-model-len: 'abc' is not a number"},
           {" --threads -1", "--threads: must be zero or more, got -1"},
           {" --max-tokens 0", "--max-tokens: must be a positive number, got 0"}}) {
    Result r = run_cli("--model " + fixture_dir() + " --device cpu --prompt-ids 1" + flags, true);
    EXPECT_NE(r.rc, 0) << flags;
    EXPECT_NE(r.out.find(want), std::string::npos) << flags << ": " << r.out;
  }
}

TEST(GenerateCli, ChatPromptsUseTheTemplate) {
  fs::path tok = fs::path(NANOVLLM_SOURCE_DIR) / "models/qwen3-tokenizer";
  if (!fs::exists(tok / "tokenizer.json")) GTEST_SKIP() << "no " << tok << " (run scripts/setup.sh)";
  fs::path dir = fs::temp_directory_path() / ("nanovllm_generate_cli_" + std::to_string(::getpid()));
  RandomModelSpec spec = random_model_preset("tiny");
  spec.dtype = DType::f32;
  write_random_model(spec, dir);
  fs::copy_file(tok / "tokenizer.json", dir / "tokenizer.json", fs::copy_options::overwrite_existing);
  fs::copy_file(tok / "tokenizer_config.json", dir / "tokenizer_config.json", fs::copy_options::overwrite_existing);

  Result r = run_cli("--model " + dir.string() + kCommon +
                     " --temperature 0 --max-tokens 4 --json --chat --no-thinking --prompt 'Hello there' --prompt 'Bye'");
  ASSERT_EQ(r.rc, 0);
  LLM llm(dir.string(), fixtures::cpu_engine_config(16, 256, 64));
  std::istringstream lines(r.out);
  std::string line;
  std::vector<std::string> prompts = {"Hello there", "Bye"};
  size_t k = 0;
  while (std::getline(lines, line)) {
    ASSERT_LT(k, prompts.size());
    auto o = nlohmann::json::parse(line);
    EXPECT_EQ(o["prompt"], prompts[k]);
    std::string templated = llm.apply_chat_template({{"user", prompts[k], ""}}, true, false);
    EXPECT_EQ(o["prompt_token_ids"].get<std::vector<int32_t>>(), llm.encode(templated));
    EXPECT_TRUE(o.contains("text"));
    auto ref = llm.generate({llm.encode(templated)}, SamplingParams{.temperature = 0, .max_tokens = 4}, false)[0];
    EXPECT_EQ(o["token_ids"].get<std::vector<int32_t>>(), ref.token_ids());
    EXPECT_EQ(o["text"], ref.text());
    ++k;
  }
  EXPECT_EQ(k, prompts.size());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace nanovllm
