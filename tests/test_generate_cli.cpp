// `nanovllm generate` end to end: the executable's JSON lines against the Hugging Face fixture,
// prompt order, text output, chat prompts, the sampling flags against the C++ API, logprobs,
// generation_config.json defaults, and errors that name the bad input.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <functional>
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

std::vector<nlohmann::json> json_lines(const std::string& out) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

// A copy of a fixture model in a fresh temporary directory (removed by the destructor), to add
// a generation_config.json to.
struct ModelCopy {
  fs::path dir;
  ModelCopy(const std::string& from, const std::string& tag)
      : dir(fs::temp_directory_path() / ("nanovllm_generate_cli_" + tag + "_" + std::to_string(::getpid()))) {
    fs::remove_all(dir);
    fs::copy(from, dir, fs::copy_options::recursive);
  }
  ~ModelCopy() { fs::remove_all(dir); }
  void write_generation_config(const std::string& json) const { std::ofstream(dir / "generation_config.json") << json; }
};

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
           {" --max-tokens 0", "--max-tokens: must be a positive number, got 0"},
           {" --top-p abc", "--top-p: 'abc' is not a number"},
           {" --min-tokens -1", "--min-tokens: must be zero or more, got -1"},
           {" --logprobs -2", "--logprobs: must be zero or more, got -2"},
           {" --logit-bias 5", "--logit-bias '5': expected TOKEN_ID=BIAS"},
           {" --logit-bias x=1", "--logit-bias 'x': 'x' is not a token id"},
           {" --logit-bias 5=abc", "--logit-bias '5=abc': expected TOKEN_ID=BIAS"},
           {" --generation-config /nonexistent/dir", "--generation-config: '/nonexistent/dir' is not auto, vllm or a directory"}}) {
    Result r = run_cli("--model " + fixture_dir() + " --device cpu --prompt-ids 1" + flags, true);
    EXPECT_NE(r.rc, 0) << flags;
    EXPECT_NE(r.out.find(want), std::string::npos) << flags << ": " << r.out;
  }
  // Values only the engine can judge (against the vocabulary, max_logprobs): its message names the field.
  for (auto [flags, want] : std::vector<std::pair<std::string, std::string>>{
           {" --top-p 1.5", "top_p must be in (0, 1], got 1.5"},
           {" --top-k -2", "top_k must be -1 or 0 (off) or >= 1, got -2"},
           {" --min-p 2", "min_p must be in [0, 1], got 2"},
           {" --repetition-penalty 0", "repetition_penalty must be a finite number > 0, got 0"},
           {" --presence-penalty 3", "presence_penalty must be in [-2, 2], got 3"},
           {" --frequency-penalty -2.5", "frequency_penalty must be in [-2, 2], got -2.5"},
           {" --temperature -1", "temperature must be a finite number >= 0"},
           {" --logit-bias 5000=1", "logit_bias: token id 5000 is outside the vocabulary"},
           {" --min-tokens 9 --max-tokens 8", "min_tokens must be in [0, max_tokens = 8], got 9"},
           {" --logprobs 21", "logprobs must be in [0, max_logprobs = 20], got 21"},
           {" --max-logprobs 4 --prompt-logprobs 5", "prompt_logprobs must be in [0, max_logprobs = 4], got 5"},
           {" --max-logprobs 65", "max_logprobs must be in [0, 64], got 65"},
           {" --generation-config " + fixture_dir(), "generation_config.json does not exist"}}) {
    Result r = run_cli("--model " + fixture_dir() + kCommon + " --prompt-ids 1" + flags, true);
    EXPECT_NE(r.rc, 0) << flags;
    EXPECT_NE(r.out.find(want), std::string::npos) << flags << ": " << r.out;
  }
}

// Each sampling flag sets its SamplingParams field: the executable's tokens equal the C++ API's
// with that field set, and the field changes them (so the comparison can tell): against seeded
// sampling at temperature 1, or for the penalties and biases, against greedy.
TEST(GenerateCli, SamplingFlagsReachTheEngine) {
  const std::vector<int32_t> prompt = {5, 6, 7, 8, 9, 10, 11, 12};
  const std::string base = "--model " + fixture_dir() + kCommon + " --json --no-progress --prompt-ids " +
                           join_ids(prompt) + " --max-tokens 16 --ignore-eos --request-seed 11";
  LLM llm(fixture_dir(), fixtures::cpu_engine_config(16, 256, 64));
  using Set = std::function<void(SamplingParams&)>;
  auto reference = [&](const Set& set) {
    SamplingParams p{.max_tokens = 16, .ignore_eos = true, .seed = 11};
    set(p);
    return llm.generate({prompt}, p, false)[0].token_ids();
  };
  const auto sampled = reference([](SamplingParams&) {});
  const auto greedy = reference([](SamplingParams& p) { p.temperature = 0; });
  struct Case {
    std::string flags;
    Set set;
    const std::vector<int32_t>* differs_from;
  };
  for (const Case& c : std::vector<Case>{
           {" --temperature 0", [](SamplingParams& p) { p.temperature = 0; }, &sampled},
           {" --top-p 0.05", [](SamplingParams& p) { p.top_p = 0.05f; }, &sampled},
           {" --top-k 2", [](SamplingParams& p) { p.top_k = 2; }, &sampled},
           {" --min-p 0.9", [](SamplingParams& p) { p.min_p = 0.9f; }, &sampled},
           {" --temperature 0 --repetition-penalty 5",
            [](SamplingParams& p) { p.temperature = 0, p.repetition_penalty = 5; }, &greedy},
           {" --temperature 0 --presence-penalty 2", [](SamplingParams& p) { p.temperature = 0, p.presence_penalty = 2; },
            &greedy},
           {" --temperature 0 --frequency-penalty 2",
            [](SamplingParams& p) { p.temperature = 0, p.frequency_penalty = 2; }, &greedy},
           {" --logit-bias 42=6 --logit-bias 43=-inf", [](SamplingParams& p) { p.logit_bias = {{42, 6.0f}, {43, -INFINITY}}; },
            &sampled},
           {" --temperature 0 --logit-bias 2=20 --min-tokens 5 --stop-token-ids 2",
            [](SamplingParams& p) {
              p.temperature = 0, p.logit_bias = {{2, 20.0f}}, p.min_tokens = 5, p.stop_token_ids = {2};
            },
            &greedy},
           {" --n 2", [](SamplingParams& p) { p.n = 2; }, nullptr}}) {
    Result r = run_cli(base + c.flags);
    ASSERT_EQ(r.rc, 0) << c.flags;
    const auto lines = json_lines(r.out);
    ASSERT_EQ(lines.size(), c.differs_from ? 1u : 2u) << c.flags;
    const auto ref = reference(c.set);
    EXPECT_EQ(lines[0]["token_ids"].get<std::vector<int32_t>>(), ref) << c.flags;
    if (c.differs_from) EXPECT_NE(ref, *c.differs_from) << c.flags << " does not change the tokens: the test cannot tell";
  }
}

TEST(GenerateCli, TopKOneAndLogitBiasAgainstGreedy) {
  const auto prompts = fixtures::load_hf_fixture("small-untied");
  const std::string base = "--model " + fixture_dir() + kCommon + " --json --no-progress --max-tokens 16 --ignore-eos" +
                           " --prompt-ids " + join_ids(prompts[0].ids);
  // top_k 1 at any temperature is transformers' greedy continuation.
  Result top1 = run_cli(base + " --temperature 1.5 --top-k 1");
  ASSERT_EQ(top1.rc, 0);
  EXPECT_EQ(json_lines(top1.out).at(0)["token_ids"].get<std::vector<int32_t>>(), prompts[0].greedy);
  // A large bias makes greedy pick that token every time.
  Result biased = run_cli(base + " --temperature 0 --logit-bias 77=100");
  ASSERT_EQ(biased.rc, 0);
  EXPECT_EQ(json_lines(biased.out).at(0)["token_ids"].get<std::vector<int32_t>>(), std::vector<int32_t>(16, 77));
}

// --logprobs N: per generated token its logprob and rank and the N most likely, largest first;
// greedy picks the first of them, and the first position's list is transformers' top logits (a
// logprob gap equals the logit gap). --prompt-logprobs N: vLLM's list with its leading null.
TEST(GenerateCli, JsonLogprobsShapeAndValues) {
  const auto prompts = fixtures::load_hf_fixture("small-untied");
  std::string args = "--model " + fixture_dir() + kCommon +
                     " --json --no-progress --temperature 0 --max-tokens 6 --ignore-eos --logprobs 4 --prompt-logprobs 3";
  for (int i : {1, 2}) args += " --prompt-ids " + join_ids(prompts[i].ids);
  Result r = run_cli(args);
  ASSERT_EQ(r.rc, 0);
  const auto lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 2u);
  auto check_top = [](const nlohmann::json& top, size_t n) {
    ASSERT_EQ(top.size(), n);
    double mass = 0;
    for (size_t j = 0; j < n; ++j) {
      mass += std::exp(top[j]["logprob"].get<double>());
      if (j) EXPECT_LE(top[j]["logprob"].get<double>(), top[j - 1]["logprob"].get<double>()) << top;
    }
    EXPECT_LE(mass, 1.0 + 1e-5);
  };
  for (size_t k = 0; k < lines.size(); ++k) {
    const auto& o = lines[k];
    const auto& hf = prompts[k + 1];
    const auto tokens = o["token_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tokens, std::vector<int32_t>(hf.greedy.begin(), hf.greedy.begin() + 6));
    const auto& lps = o["logprobs"];
    ASSERT_EQ(lps.size(), tokens.size());
    for (size_t t = 0; t < lps.size(); ++t) {
      EXPECT_EQ(lps[t]["token_id"], tokens[t]);
      EXPECT_EQ(lps[t]["rank"], 1);
      EXPECT_LE(lps[t]["logprob"].get<double>(), 0.0);
      check_top(lps[t]["top_logprobs"], 4);
      EXPECT_EQ(lps[t]["top_logprobs"][0]["token_id"], tokens[t]);
      EXPECT_EQ(lps[t]["top_logprobs"][0]["logprob"].get<double>(), lps[t]["logprob"].get<double>());
    }
    for (size_t j = 0; j < 4; ++j) {
      const auto& e = lps[0]["top_logprobs"][j];
      EXPECT_EQ(e["token_id"], hf.top[j].first) << j;
      EXPECT_NEAR(e["logprob"].get<double>() - lps[0]["logprob"].get<double>(), hf.top[j].second - hf.top[0].second,
                  1e-3) << j;
    }
    const auto& plp = o["prompt_logprobs"];
    ASSERT_EQ(plp.size(), hf.ids.size());
    EXPECT_TRUE(plp[0].is_null());
    for (size_t j = 1; j < plp.size(); ++j) {
      EXPECT_EQ(plp[j]["token_id"], hf.ids[j]);
      EXPECT_GE(plp[j]["rank"].get<int>(), 1);
      check_top(plp[j]["top_logprobs"], 3);
      EXPECT_LE(plp[j]["logprob"].get<double>(), plp[j]["top_logprobs"][0]["logprob"].get<double>());
      if (plp[j]["rank"] == 1) EXPECT_EQ(plp[j]["top_logprobs"][0]["token_id"], hf.ids[j]);
    }
  }
  // Without the flags the keys are absent, as before.
  Result plain = run_cli("--model " + fixture_dir() + kCommon + " --json --temperature 0 --max-tokens 2 --prompt-ids 1,2");
  ASSERT_EQ(plain.rc, 0);
  EXPECT_FALSE(json_lines(plain.out).at(0).contains("logprobs"));
  EXPECT_FALSE(json_lines(plain.out).at(0).contains("prompt_logprobs"));
}

TEST(GenerateCli, TextOutputListsLogprobs) {
  Result r = run_cli("--model " + fixture_dir() + kCommon + " --temperature 0 --max-tokens 3 --prompt-ids 5,6,7 --logprobs 2");
  ASSERT_EQ(r.rc, 0);
  Result j = run_cli("--model " + fixture_dir() + kCommon + " --temperature 0 --max-tokens 3 --prompt-ids 5,6,7 --logprobs 2 --json");
  const auto lps = json_lines(j.out).at(0)["logprobs"];
  const size_t at = r.out.find("Logprobs:\n");
  ASSERT_NE(at, std::string::npos) << r.out;
  std::istringstream lines(r.out.substr(at + 10));
  std::string line;
  for (const auto& lp : lps) {  // "  id: logprob (rank r); top: id logprob, id logprob"
    ASSERT_TRUE(std::getline(lines, line));
    char buf[64];
    std::snprintf(buf, sizeof buf, "  %d: %.4f (rank 1); top: %d ", lp["token_id"].get<int>(), lp["logprob"].get<double>(),
                  lp["token_id"].get<int>());
    EXPECT_EQ(line.rfind(buf, 0), 0u) << line << " vs " << buf;
  }
}

// generation_config.json's sampling fields are the defaults of the flags left out (vLLM's
// --generation-config auto); flags win; --generation-config vllm ignores the file, and a
// directory names another file.
TEST(GenerateCli, GenerationConfigSetsTheDefaults) {
  const auto prompts = fixtures::load_hf_fixture("small-untied");
  ModelCopy model(fixture_dir(), "gencfg");
  model.write_generation_config(R"({"temperature": 0.0, "max_new_tokens": 5, "eos_token_id": 2})");
  const std::string base = "--model " + model.dir.string() + kCommon + " --json --no-progress --ignore-eos --prompt-ids " +
                           join_ids(prompts[3].ids);
  auto tokens = [](const Result& r) { return json_lines(r.out).at(0)["token_ids"].get<std::vector<int32_t>>(); };
  const std::vector<int32_t> greedy5(prompts[3].greedy.begin(), prompts[3].greedy.begin() + 5);

  Result from_file = run_cli(base);
  ASSERT_EQ(from_file.rc, 0);
  EXPECT_EQ(tokens(from_file), greedy5);  // temperature 0 and 5 tokens, from the file
  Result more = run_cli(base + " --max-tokens 7");
  ASSERT_EQ(more.rc, 0);
  EXPECT_EQ(tokens(more), std::vector<int32_t>(prompts[3].greedy.begin(), prompts[3].greedy.begin() + 7));
  Result sampled = run_cli(base + " --temperature 1 --request-seed 3");
  ASSERT_EQ(sampled.rc, 0);
  EXPECT_EQ(tokens(sampled).size(), 5u);
  EXPECT_NE(tokens(sampled), greedy5);

  // vllm: SamplingParams' own defaults (64 tokens at temperature 1), as without the file.
  Result ignored = run_cli(base + " --generation-config vllm --request-seed 3", true);
  ASSERT_EQ(ignored.rc, 0);
  Result no_file = run_cli("--model " + fixture_dir() + kCommon + " --json --ignore-eos --request-seed 3 --prompt-ids " +
                           join_ids(prompts[3].ids));
  ASSERT_EQ(no_file.rc, 0);
  EXPECT_EQ(tokens(no_file).size(), 64u);
  EXPECT_EQ(ignored.out.find("default sampling parameters from"), std::string::npos) << ignored.out;
  const size_t json_at = ignored.out.find("{\"");
  ASSERT_NE(json_at, std::string::npos) << ignored.out;
  EXPECT_EQ(nlohmann::json::parse(ignored.out.substr(json_at, ignored.out.find('\n', json_at) - json_at))["token_ids"],
            tokens(no_file));

  // A directory: its generation_config.json, for a model that has none.
  Result other = run_cli("--model " + fixture_dir() + kCommon + " --json --ignore-eos --generation-config " +
                         model.dir.string() + " --prompt-ids " + join_ids(prompts[3].ids));
  ASSERT_EQ(other.rc, 0);
  EXPECT_EQ(tokens(other), greedy5);
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
