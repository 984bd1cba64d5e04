// The Hugging Face reference fixtures every end-to-end test reads: tests/fixtures/models/<name>/
// (made by tests/reference/make_model_fixtures.py) and its expected.json.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "model/random_model.h"
#include "nanovllm/config.h"
#include "nanovllm/sampling_params.h"

namespace nanovllm::fixtures {

// A CPU engine for the fixture models with a fixed KV cache, on one thread: with tiny models
// threads cost more than they give on a busy 2-core CI.
inline EngineConfig cpu_engine_config(int block_size, int max_model_len, int num_blocks) {
  EngineConfig c;
  c.device = DeviceKind::cpu;
  c.kvcache_block_size = block_size;
  c.max_model_len = max_model_len;
  c.num_kvcache_blocks = num_blocks;
  c.num_threads = 1;
  return c;
}

struct HfPrompt {
  std::vector<int32_t> ids;                   // the prompt
  std::vector<int32_t> greedy;                // transformers' next 16 greedy tokens
  std::vector<double> margins;                // top-1 minus top-2 logit at each greedy step
  std::vector<std::pair<int, double>> top;    // the prompt's last-position top-8 logits
  std::vector<double> last_logits;            // the whole last-position row (family fixtures only)
};

// Every fixture model transformers made, Qwen3's and the other families' (make_model_fixtures.py,
// make_family_fixtures.py).
inline const std::vector<std::string>& all_fixture_models() {
  static const std::vector<std::string> names = {"tiny-tied", "small-untied", "llama-tied-rope3", "llama-bias-linear",
                                                 "llama-yarn", "qwen2-tied", "mistral-window", "gemma3-window"};
  return names;
}

inline std::string hf_fixture_dir(const std::string& name) {
  return std::string(NANOVLLM_SOURCE_DIR) + "/tests/fixtures/models/" + name;
}

inline std::vector<HfPrompt> load_hf_fixture(const std::string& name) {
  const std::string path = hf_fixture_dir(name) + "/expected.json";
  std::ifstream f(path);
  if (!f) throw std::runtime_error("missing fixture " + path);
  const nlohmann::json j = nlohmann::json::parse(f);
  std::vector<HfPrompt> out;
  for (const auto& p : j.at("prompts")) {
    HfPrompt q;
    q.ids = p.at("ids").get<std::vector<int32_t>>();
    q.greedy = p.at("greedy").get<std::vector<int32_t>>();
    q.margins = p.at("greedy_margins").get<std::vector<double>>();
    for (const auto& t : p.at("last_logits_top")) q.top.emplace_back(t[0].get<int>(), t[1].get<double>());
    if (p.contains("last_logits")) q.last_logits = p.at("last_logits").get<std::vector<double>>();
    out.push_back(std::move(q));
  }
  return out;
}

// The prompts and transformers' greedy continuations of a fixture, as two columns.
struct HfColumns {
  std::vector<std::vector<int32_t>> ids, greedy;
};
inline HfColumns load_hf_columns(const std::string& name) {
  HfColumns c;
  for (const HfPrompt& p : load_hf_fixture(name)) {
    c.ids.push_back(p.ids);
    c.greedy.push_back(p.greedy);
  }
  return c;
}

// A random "tiny" model (f32) with the real Qwen3 tokenizer, in a fresh temporary directory named
// after `tag`; empty when scripts/setup.sh has not fetched the tokenizer.
inline std::filesystem::path write_tiny_model_with_tokenizer(const std::string& tag) {
  namespace fs = std::filesystem;
  const fs::path tok = fs::path(NANOVLLM_SOURCE_DIR) / "models/qwen3-tokenizer";
  if (!fs::exists(tok / "tokenizer.json")) return {};
  const fs::path dir = fs::temp_directory_path() / ("nanovllm_" + tag + "_" + std::to_string(::getpid()));
  RandomModelSpec spec = random_model_preset("tiny");
  spec.dtype = DType::f32;
  write_random_model(spec, dir);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(tok / f, dir / f, fs::copy_options::overwrite_existing);
  return dir;
}

// Greedy decoding of `max_tokens` tokens; by default through eos, as the fixtures' continuations
// run (id 2 may be among them).
inline SamplingParams greedy(int max_tokens, bool ignore_eos = true) {
  SamplingParams p;
  p.temperature = 0;
  p.max_tokens = max_tokens;
  p.ignore_eos = ignore_eos;
  return p;
}

// gtest's name for a fixture parameter ("tiny-tied" -> "tiny_tied"): names may not hold '-'.
inline std::string param_name(const std::string& fixture) {
  std::string n = fixture;
  for (char& ch : n)
    if (ch == '-') ch = '_';
  return n;
}

}  // namespace nanovllm::fixtures
