// What the CPU's reduced-precision settings cost in accuracy: a bf16 KV cache and int8 weights,
// against the CPU engine in float32 (float32 cache, the checkpoint's weights exact), next to
// transformers' own bf16 where the fixture has it. Teacher-forced along the fixture's path (the
// logits' max |err|, that over the row's range, KL of the softmax, argmax agreement), and
// free-running greedy (leading tokens kept, tokens equal).
// Fixtures: a numerics fixture (tests/fixtures/numerics/*.json: float32's path and transformers'
// bf16 error) or a model fixture's expected.json (tests/fixtures/models/*: float64's greedy path).
// Run: bench_cpu_numerics --model DIR --fixture FILE [--max-prompt N] [--threads N]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/bench/stats.h"
#include "engine/numerics.h"
#include "nanovllm/llm.h"

using namespace nanovllm;
using nlohmann::json;

namespace {

// An empty sample (a length bucket with no positions) prints as 0.
double mean(const std::vector<double>& v) { return v.empty() ? 0 : summarize(v).mean; }
double p99(const std::vector<double>& v) { return v.empty() ? 0 : percentile(v, 99); }

struct Variant {
  const char* name;
  const char* kv_cache_dtype;
  const char* quantization;
};

// Greedy continuations of every case's prompt, as long as its path.
std::vector<std::vector<int32_t>> greedy(const EngineConfig& c, const std::vector<NumericsCase>& cases) {
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& k : cases) prompts.push_back(k.prompt);
  SamplingParams p;
  p.temperature = 0;
  p.ignore_eos = true;
  p.max_tokens = static_cast<int>(cases.at(0).path.size());
  LLM llm(c);
  std::vector<std::vector<int32_t>> out;
  for (const auto& o : llm.generate(prompts, p, false)) out.push_back(o.token_ids());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  EngineConfig base;
  base.device = DeviceKind::cpu;
  base.max_model_len = 2048;
  base.max_num_seqs = 64;
  std::string fixture;
  size_t max_prompt = 200;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    if (a == "--model") base.model = next();
    else if (a == "--fixture") fixture = next();
    else if (a == "--max-prompt") max_prompt = std::stoul(next());
    else if (a == "--threads") base.num_threads = std::stoi(next());
    else {
      std::fprintf(stderr, "bench_cpu_numerics: unknown argument '%s'\n", a.c_str());
      return 2;
    }
  }
  try {
    std::ifstream f(fixture);
    if (!f) throw std::runtime_error(fixture + ": cannot open file");
    const json j = json::parse(f);
    std::vector<NumericsCase> cases;
    std::vector<const json*> hf;  // transformers' bf16 errors, where the fixture has them
    const bool numerics = j.contains("cases");
    for (const auto& c : numerics ? j.at("cases") : j.at("prompts")) {
      if (c.at("ids").size() > max_prompt) continue;
      cases.push_back({c.at("ids").get<std::vector<int32_t>>(), c.at(numerics ? "path" : "greedy").get<std::vector<int32_t>>()});
      hf.push_back(numerics ? &c.at("hf_bf16") : nullptr);
    }
    if (cases.empty()) throw std::runtime_error("no case with a prompt of at most " + std::to_string(max_prompt) + " tokens");
    EngineConfig ref_config = base;
    ref_config.kv_cache_dtype = "float32";
    const auto ref = teacher_forced_logits(ref_config, cases);
    const int vocab = static_cast<int>(ref[0].size() / cases[0].path.size());
    size_t positions = 0;
    for (const auto& c : cases) positions += c.path.size();
    std::printf("model %s, %zu cases (prompts <= %zu tokens), %zu positions; against the CPU in float32\n",
                base.model.c_str(), cases.size(), max_prompt, positions);
    std::printf("%-22s | %-17s | %-19s | %-17s | %-9s | %-9s | %s\n", "variant", "max|err| mean/p99", "rel mean/p99",
                "KL mean/p99", "argmax=", "=path", "greedy: kept (mean), all equal");
    auto row = [&](const char* name, const std::vector<double>& ma, const std::vector<double>& rel,
                   const std::vector<double>& kl, int same_ref, int same_path, double kept, int equal) {
      std::printf("%-22s | %.4f/%.4f     | %.6f/%.6f | %.1e/%.1e | %4d/%-4zu | %4d/%-4zu | %.1f, %d/%zu\n", name,
                  mean(ma), p99(ma), mean(rel), p99(rel), mean(kl), p99(kl), same_ref, positions, same_path, positions,
                  kept, equal, cases.size());
    };
    const Variant variants[] = {{"float32 (reference)", "float32", ""},
                                {"bf16 KV", "bfloat16", ""},
                                {"fp8 e4m3 KV (calibrated scales)", "fp8_e4m3", ""},
                                {"fp8 e5m2 KV (calibrated scales)", "fp8_e5m2", ""},
                                {"int8 weights", "float32", "int8"},
                                {"int8 weights, bf16 KV", "bfloat16", "int8"}};
    for (const Variant& v : variants) {
      EngineConfig c = base;
      c.kv_cache_dtype = v.kv_cache_dtype;
      c.quantization = v.quantization;
      const auto got = teacher_forced_logits(c, cases);
      const auto free = greedy(c, cases);
      std::vector<double> ma, rel, kl;
      int same_ref = 0, same_path = 0, equal = 0;
      double kept = 0;
      for (size_t i = 0; i < cases.size(); ++i) {
        for (size_t k = 0; k < cases[i].path.size(); ++k) {
          const float* x = &got[i][k * vocab];
          const RowError e = row_error(&ref[i][k * vocab], x, vocab);
          ma.push_back(e.max_abs);
          rel.push_back(e.rel);
          kl.push_back(e.kl);
          same_ref += e.same_argmax;
          same_path += static_cast<int32_t>(std::max_element(x, x + vocab) - x) == cases[i].path[k];
        }
        size_t n = 0;
        while (n < free[i].size() && n < cases[i].path.size() && free[i][n] == cases[i].path[n]) ++n;
        kept += n;
        equal += n == cases[i].path.size();
      }
      row(v.name, ma, rel, kl, same_ref, same_path, kept / cases.size(), equal);
    }
    if (numerics) {  // transformers' bf16 against its float32, from the fixture
      std::vector<double> ma, rel, kl;
      int same = 0;
      double kept = 0;
      for (const json* h : hf) {
        for (const char* key : {"max_abs", "rel", "kl"}) {
          auto v = h->at(key).get<std::vector<double>>();
          auto& dst = key[0] == 'm' ? ma : key[0] == 'r' ? rel : kl;
          dst.insert(dst.end(), v.begin(), v.end());
        }
        for (bool s : h->at("argmax").get<std::vector<bool>>()) same += s;
        kept += h->at("greedy_agree").get<int>();
      }
      std::printf("%-22s | %.4f/%.4f     | %.6f/%.6f | %.1e/%.1e | %4d/%-4zu | %4s      | %.1f\n",
                  "transformers bf16", mean(ma), p99(ma), mean(rel), p99(rel), mean(kl), p99(kl), same, positions, "",
                  kept / cases.size());
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cpu_numerics: %s\n", e.what());
    return 2;
  }
}
