// The CPU sampler and the engine's logprobs against Hugging Face transformers, from the fixtures
// tests/reference/make_sampling_fixtures.py writes (tests/fixtures/sampling/):
// - processors.json: transformers' TopK/TopP/MinP/Temperature warpers and its repetition penalty
//   on random rows (float64); ours must keep the same ids with the same processed values.
// - logprobs.json: transformers' float32 log-softmax along the greedy path of the fixture models
//   and over their prompts; the CPU engine's logprobs, top-5 and prompt logprobs within 1e-4.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_ops.h"
#include "hf_fixture.h"
#include "nanovllm/llm.h"

namespace nanovllm {
namespace {

nlohmann::json load(const std::string& name) {
  const std::string path = std::string(NANOVLLM_SOURCE_DIR) + "/tests/fixtures/sampling/" + name;
  std::ifstream f(path);
  if (!f) throw std::runtime_error("missing fixture " + path + " (tests/reference/make_sampling_fixtures.py)");
  return nlohmann::json::parse(f);
}

float or_neg_inf(const nlohmann::json& v) {
  return v.is_null() ? -std::numeric_limits<float>::infinity() : v.get<float>();
}

TEST(SamplerHf, ProcessorsKeepWhatTransformersKeeps) {
  const nlohmann::json j = load("processors.json");
  ASSERT_GT(j.at("cases").size(), 50u);
  for (const auto& c : j.at("cases")) {
    SCOPED_TRACE(c.at("name").get<std::string>() + " " + c.at("settings").dump());
    std::vector<float> logits;
    for (const auto& v : c.at("logits")) logits.push_back(or_neg_inf(v));
    const int V = static_cast<int>(logits.size());
    const auto& s = c.at("settings");
    SamplingRow r;
    r.temperature = s.value("temperature", 1.0f);
    r.top_k = s.value("top_k", 0);
    r.top_p = s.value("top_p", 1.0f);
    r.min_p = s.value("min_p", 0.0f);
    r.repetition_penalty = s.value("repetition_penalty", 1.0f);
    // transformers' repetition penalty covers its input_ids: here, the prompt mask.
    std::vector<int32_t> counts(V, 0), mask((V + 31) / 32, 0);
    for (int id : c.at("input_ids")) mask[id / 32] |= static_cast<int32_t>(1u << (id % 32));
    SampleBatch batch;
    if (r.has_penalties()) {
      r.counts_row = 0;
      batch.counts = TokenCounts{Tensor(counts.data(), DType::i32, {1, V}), Tensor(mask.data(), DType::i32, {1, (V + 31) / 32})};
    }
    std::vector<float> x(V);
    std::vector<int32_t> scratch;
    cpu::process_row(logits.data(), V, r, batch, x.data());
    const float threshold = cpu::survivor_threshold(x.data(), V, r, scratch);
    const auto& want = c.at("processed");
    int kept = 0;
    for (int v = 0; v < V; ++v) {
      const bool ours = x[v] >= threshold && x[v] > -std::numeric_limits<float>::infinity();
      ASSERT_EQ(ours, !want[v].is_null()) << "id " << v << ": ours " << x[v] << " (threshold " << threshold << ")";
      if (!ours) continue;
      ++kept;
      const double w = want[v].get<double>();
      EXPECT_NEAR(x[v], w, 1e-5 * std::max(1.0, std::fabs(w))) << "id " << v;
    }
    EXPECT_GT(kept, 0);
  }
}

TEST(SamplerHf, LogprobsMatchTransformersFloat32) {
  const nlohmann::json j = load("logprobs.json");
  const int top_n = j.at("top_n").get<int>();
  for (const auto& [name, cases] : j.at("models").items()) {
    SCOPED_TRACE(name);
    ASSERT_FALSE(cases.empty());
    LLM llm(fixtures::hf_fixture_dir(name), fixtures::cpu_engine_config(8, 256, 96));
    for (const auto& c : cases) {
      const auto prompt = c.at("prompt").get<std::vector<int32_t>>();
      const auto greedy = c.at("greedy").get<std::vector<int32_t>>();
      SamplingParams p = fixtures::greedy(static_cast<int>(greedy.size()));
      p.logprobs = top_n;
      p.prompt_logprobs = top_n;
      const RequestOutput out = llm.generate({prompt}, p, false)[0];
      ASSERT_EQ(out.token_ids(), greedy);
      auto expect_position = [&](const PositionLogprobs& got, const nlohmann::json& want, const std::string& where) {
        EXPECT_EQ(got.token_id, want.at("token_id").get<int>()) << where;
        EXPECT_NEAR(got.logprob, want.at("logprob").get<double>(), 1e-4) << where;
        const auto& top = want.at("top");
        ASSERT_EQ(got.top.size(), top.size()) << where;
        for (size_t k = 0; k < top.size(); ++k) {
          // An id may swap with its neighbour only where transformers' two logprobs are within 1e-4.
          const bool near_tie = (k > 0 && top[k - 1][1].get<double>() - top[k][1].get<double>() < 1e-4) ||
                                (k + 1 < top.size() && top[k][1].get<double>() - top[k + 1][1].get<double>() < 1e-4);
          if (!near_tie) EXPECT_EQ(got.top[k].token_id, top[k][0].get<int>()) << where << " top " << k;
          EXPECT_NEAR(got.top[k].logprob, top[k][1].get<double>(), 1e-4) << where << " top " << k;
        }
      };
      const auto& lps = c.at("logprobs");
      ASSERT_EQ(out.outputs[0].logprobs.size(), lps.size());
      for (size_t k = 0; k < lps.size(); ++k) expect_position(out.outputs[0].logprobs[k], lps[k], "token " + std::to_string(k));
      const auto& plps = c.at("prompt_logprobs");
      ASSERT_EQ(out.prompt_logprobs.size(), plps.size());
      for (size_t k = 0; k < plps.size(); ++k) expect_position(out.prompt_logprobs[k], plps[k], "prompt " + std::to_string(k + 1));
    }
  }
}

}  // namespace
}  // namespace nanovllm
