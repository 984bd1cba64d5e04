// Sampling: the backend's sample op as the engine uses it (greedy, seeded draws, the temperature's
// distribution) and the engine-level guarantees built on it (reproducible across batching,
// preemption and seeds).
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "backend/backend.h"
#include "engine/sampler.h"
#include "hf_fixture.h"
#include "nanovllm/llm.h"

namespace nanovllm {
namespace {

// Runs the CPU backend's sample op on host arrays.
std::vector<int32_t> sample_cpu(Backend& b, std::vector<float> logits, int64_t V, std::vector<float> temps,
                                std::vector<int64_t> keys, std::vector<int64_t> counters) {
  const int64_t B = static_cast<int64_t>(temps.size());
  std::vector<int32_t> out(B, -1);
  Tensor tl(logits.data(), DType::f32, {B, V}), tt(temps.data(), DType::f32, {B}), tk(keys.data(), DType::i64, {B}),
      tc(counters.data(), DType::i64, {B}), to(out.data(), DType::i32, {B});
  b.sample(tl, tt, tk, tc, to);
  return out;
}

TEST(Sampler, GreedyTakesArgmaxLowestIndexOnTies) {
  auto b = make_backend(DeviceKind::cpu, {.num_threads = 1});
  std::vector<float> logits = {0.1f, 3.0f, -1.0f, 3.0f,   // tie: index 1
                               -5.f, -4.f, -3.f, -2.f};   // last
  EXPECT_EQ(sample_cpu(*b, logits, 4, {0.f, 0.f}, {1, 2}, {0, 0}), (std::vector<int32_t>{1, 3}));
}

TEST(Sampler, SameKeyAndCounterDrawTheSameToken) {
  auto b = make_backend(DeviceKind::cpu, {.num_threads = 1});
  const int V = 50;
  std::vector<float> row(V, 0.f);  // uniform: every token equally likely
  std::vector<float> logits;
  for (int i = 0; i < 3; ++i) logits.insert(logits.end(), row.begin(), row.end());
  // Rows 0 and 2 share key and counter; row 1 has another counter.
  auto out = sample_cpu(*b, logits, V, {1.f, 1.f, 1.f}, {7, 7, 7}, {3, 4, 3});
  EXPECT_EQ(out[0], out[2]);
  // Over many counters the draws vary (a fixed token would mean the counter is ignored).
  std::map<int, int> seen;
  for (int c = 0; c < 40; ++c) seen[sample_cpu(*b, row, V, {1.f}, {7}, {c})[0]]++;
  EXPECT_GT(seen.size(), 10u);
}

// Frequencies of draws over counters 0..N-1 match softmax(logits / T).
void expect_distribution(float temperature) {
  auto b = make_backend(DeviceKind::cpu, {.num_threads = 1});
  const std::vector<float> logits = {0.f, 1.f, 2.f, 0.5f};
  const int V = 4, N = 20000, R = 200;  // R rows per call
  std::vector<double> counts(V, 0);
  std::vector<float> batch;
  for (int r = 0; r < R; ++r) batch.insert(batch.end(), logits.begin(), logits.end());
  for (int start = 0; start < N; start += R) {
    std::vector<int64_t> keys(R, 12345), counters(R);
    for (int r = 0; r < R; ++r) counters[r] = start + r;
    for (int32_t t : sample_cpu(*b, batch, V, std::vector<float>(R, temperature), keys, counters)) counts[t] += 1;
  }
  double z = 0;
  for (float l : logits) z += std::exp(l / temperature);
  for (int v = 0; v < V; ++v) {
    double p = std::exp(logits[v] / temperature) / z;
    double sd = std::sqrt(p * (1 - p) / N);
    EXPECT_NEAR(counts[v] / N, p, 5 * sd + 1e-3) << "token " << v << " at T=" << temperature;
  }
}

TEST(Sampler, TemperatureOneMatchesSoftmax) { expect_distribution(1.0f); }
TEST(Sampler, LowTemperatureSharpens) { expect_distribution(0.5f); }
TEST(Sampler, HighTemperatureFlattens) { expect_distribution(2.0f); }

TEST(Sampler, KeyIsTheRequestSeedOrDerived) {
  SamplingParams p;
  p.seed = 99;
  EXPECT_EQ(sampling_key(p, 1, 5), 99u);
  SamplingParams q;
  EXPECT_EQ(sampling_key(q, 1, 5), mix64(1 ^ mix64(5)));
  EXPECT_NE(sampling_key(q, 1, 5), sampling_key(q, 1, 6));
  EXPECT_NE(sampling_key(q, 1, 5), sampling_key(q, 2, 5));
}

// ---- engine-level: reproducible random sampling -------------------------------------------------

std::string tiny_model() { return fixtures::hf_fixture_dir("tiny-tied"); }

EngineConfig engine_config() { return fixtures::cpu_engine_config(8, 128, 128); }

std::vector<std::vector<int32_t>> prompts() {
  std::vector<std::vector<int32_t>> v;
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> p;
    for (int j = 0; j < 5 + 9 * i; ++j) p.push_back((37 * i + 11 * j + 3) % 1000);
    v.push_back(p);
  }
  return v;
}

SamplingParams seeded(uint64_t seed) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.max_tokens = 24;
  p.ignore_eos = true;
  p.seed = seed;
  return p;
}

TEST(SamplerEngine, SeededDrawsDoNotDependOnBatchingOrPreemption) {
  auto ps = prompts();
  std::vector<SamplingParams> params;
  for (size_t i = 0; i < ps.size(); ++i) params.push_back(seeded(1000 + i));
  LLM batched(tiny_model(), engine_config());
  auto together = batched.generate(ps, params, false);
  // One at a time.
  for (size_t i = 0; i < ps.size(); ++i)
    EXPECT_EQ(batched.generate({ps[i]}, params[i], false)[0].token_ids(), together[i].token_ids()) << "prompt " << i;
  // A cache so small that sequences are preempted and recomputed, with chunked prefill.
  EngineConfig tight = engine_config();
  tight.num_kvcache_blocks = 17;
  tight.max_num_batched_tokens = 20;
  LLM small(tiny_model(), tight);
  auto squeezed = small.generate(ps, params, false);
  EXPECT_GT(small.stats().num_preemptions, 0);
  for (size_t i = 0; i < ps.size(); ++i) EXPECT_EQ(squeezed[i].token_ids(), together[i].token_ids()) << "prompt " << i;
}

TEST(SamplerEngine, DifferentSeedsDiffer) {
  auto ps = prompts();
  LLM llm(tiny_model(), engine_config());
  auto a = llm.generate({ps[0]}, seeded(1), false)[0].token_ids();
  auto b = llm.generate({ps[0]}, seeded(2), false)[0].token_ids();
  EXPECT_NE(a, b);
  EXPECT_EQ(llm.generate({ps[0]}, seeded(1), false)[0].token_ids(), a);
}

TEST(SamplerEngine, EngineSeedDecidesUnseededRequests) {
  auto ps = prompts();
  SamplingParams p;
  p.temperature = 0.8f;
  p.max_tokens = 16;
  p.ignore_eos = true;
  EngineConfig c = engine_config();
  c.seed = 5;
  LLM x(tiny_model(), c), y(tiny_model(), c);
  auto xs = x.generate(ps, p, false);
  EXPECT_EQ(xs[3].token_ids(), y.generate(ps, p, false)[3].token_ids());  // same seed, same request ids
  c.seed = 6;
  LLM z(tiny_model(), c);
  EXPECT_NE(z.generate(ps, p, false)[3].token_ids(), xs[3].token_ids());
}

}  // namespace
}  // namespace nanovllm
