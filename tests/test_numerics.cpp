// The numerics measurement (engine/numerics.h) on the CPU: teacher forcing along transformers'
// greedy path reproduces that path's argmax at every position, the same logits come out of a
// mixed batch, chunked prefill and prefix-cache hits, and the row metrics are what they say.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/numerics.h"
#include "hf_fixture.h"

namespace nanovllm {
namespace {

std::vector<NumericsCase> fixture_cases() {
  fixtures::HfColumns fx = fixtures::load_hf_columns("tiny-tied");
  std::vector<NumericsCase> cases;
  for (size_t i = 0; i < fx.ids.size(); i += 3) cases.push_back({fx.ids[i], fx.greedy[i]});
  return cases;
}

int argmax(const float* row, int n) {
  int a = 0;
  for (int v = 1; v < n; ++v)
    if (row[v] > row[a]) a = v;
  return a;
}

TEST(Numerics, TeacherForcedLogitsFollowTheReferencePath) {
  const std::vector<NumericsCase> cases = fixture_cases();
  EngineConfig c = fixtures::cpu_engine_config(8, 256, 256);
  c.model = fixtures::hf_fixture_dir("tiny-tied");
  const auto rows = teacher_forced_logits(c, cases);
  ASSERT_EQ(rows.size(), cases.size());
  const int vocab = static_cast<int>(rows[0].size() / cases[0].path.size());
  EXPECT_EQ(vocab, 1000);
  for (size_t i = 0; i < cases.size(); ++i)
    for (size_t k = 0; k < cases[i].path.size(); ++k)
      EXPECT_EQ(argmax(&rows[i][k * vocab], vocab), cases[i].path[k]) << "case " << i << " position " << k;

  // Chunked prefill (16-token steps) and every prompt twice (the copies hit the prefix cache):
  // the same logits, to float32 rounding.
  EngineConfig chunked = c;
  chunked.max_num_batched_tokens = 16;
  std::vector<NumericsCase> twice = cases;
  twice.insert(twice.end(), cases.begin(), cases.end());
  const auto again = teacher_forced_logits(chunked, twice);
  for (size_t i = 0; i < twice.size(); ++i)
    for (size_t k = 0; k < twice[i].path.size(); ++k) {
      const RowError e = row_error(&rows[i % cases.size()][k * vocab], &again[i][k * vocab], vocab);
      EXPECT_LT(e.rel, 1e-5) << "case " << i << " position " << k;
      EXPECT_TRUE(e.same_argmax);
    }
}

// The committed numerics fixtures (tests/reference/make_numerics_fixtures.py): the CPU engine in
// float32 follows each fixture's float32 path (transformers') at nearly every position.
TEST(Numerics, CpuFollowsTheFixturesFloat32Paths) {
  for (const char* name : {"tiny-tied", "small-untied", "tiny-tied-bf16"}) {
    std::ifstream f(std::string(NANOVLLM_SOURCE_DIR) + "/tests/fixtures/numerics/" + name + ".json");
    ASSERT_TRUE(f) << name;
    const nlohmann::json j = nlohmann::json::parse(f);
    std::vector<NumericsCase> cases;
    for (const auto& c : j.at("cases"))
      if (c.at("ids").size() <= 200) cases.push_back({c.at("ids").get<std::vector<int32_t>>(), c.at("path").get<std::vector<int32_t>>()});
    EngineConfig c = fixtures::cpu_engine_config(16, 512, 512);
    c.model = fixtures::hf_fixture_dir(name);
    c.kv_cache_dtype = "float32";  // the bf16 checkpoint's own default would be a bf16 cache
    const auto rows = teacher_forced_logits(c, cases);
    const int vocab = static_cast<int>(rows[0].size() / cases[0].path.size());
    int same = 0, total = 0;
    for (size_t i = 0; i < cases.size(); ++i)
      for (size_t k = 0; k < cases[i].path.size(); ++k, ++total) same += argmax(&rows[i][k * vocab], vocab) == cases[i].path[k];
    EXPECT_GE(same, total - 1) << name << ": float32 should differ from float32 only at an exact near-tie";
  }
}

TEST(Numerics, RowErrorMeasuresWhatItSays) {
  const std::vector<float> ref = {0.f, 1.f, 2.f, 3.f};
  RowError same = row_error(ref.data(), ref.data(), 4);
  EXPECT_EQ(same.max_abs, 0);
  EXPECT_EQ(same.kl, 0);
  // A constant shift leaves the softmax as it is.
  const std::vector<float> shifted = {0.5f, 1.5f, 2.5f, 3.5f};
  RowError s = row_error(ref.data(), shifted.data(), 4);
  EXPECT_DOUBLE_EQ(s.max_abs, 0.5);
  EXPECT_DOUBLE_EQ(s.rel, 0.5 / 3);
  EXPECT_NEAR(s.kl, 0, 1e-12);
  // Uniform against one-hot-ish: KL(p || q) by hand.
  const std::vector<float> flat = {0.f, 0.f, 0.f, 0.f};
  RowError k = row_error(ref.data(), flat.data(), 4);
  double z = 0;
  for (float v : ref) z += std::exp(v);
  double kl = 0;
  for (float v : ref) kl += std::exp(v) / z * (v - std::log(z) - std::log(0.25));
  EXPECT_NEAR(k.kl, kl, 1e-9);
  EXPECT_FALSE(k.same_argmax);  // the flat row's argmax is 0, the reference's 3
}

}  // namespace
}  // namespace nanovllm
