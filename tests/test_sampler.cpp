// Sampling: the backend's sample op as the engine uses it (greedy, seeded draws, the temperature's
// distribution) and the engine-level guarantees built on it (reproducible across batching,
// preemption and seeds).
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_ops.h"
#include "engine/sampler.h"
#include "hf_fixture.h"
#include "sampling_reference.h"
#include "nanovllm/llm.h"

namespace nanovllm {
namespace {

// Runs the CPU backend's sample op on host arrays (plain rows: temperature, key, counter).
std::vector<int32_t> sample_cpu(Backend& b, std::vector<float> logits, int64_t V, std::vector<float> temps,
                                std::vector<int64_t> keys, std::vector<int64_t> counters) {
  const int64_t B = static_cast<int64_t>(temps.size());
  std::vector<SamplingRow> rows(B);
  for (int64_t i = 0; i < B; ++i) rows[i] = SamplingRow{.key = keys[i], .counter = counters[i], .temperature = temps[i]};
  SampleBatch batch;
  batch.rows = rows.data();
  std::vector<int32_t> out(B, -1);
  Tensor tl(logits.data(), DType::f32, {B, V}), to(out.data(), DType::i32, {B});
  b.sample(tl, batch, to);
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

// ---- the CPU sampler against the double-precision reference ---------------------------------------

// Rows of the given kind, each sampled with `r` (keys and counters varied) on the CPU backend and
// compared with the reference's pick: equal, except where top_p or min_p sits within 1e-6 of a
// boundary (then the pick must survive the looser reference).
void expect_reference_picks(SamplingRow r, const char* kind, int V, int rows, uint64_t seed,
                            const std::vector<std::pair<int, float>>& adds = {}, bool penalties = false) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.f, 3.f);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  auto b = make_backend(DeviceKind::cpu, {.num_threads = 2});
  for (int i = 0; i < rows; ++i) {
    testing_ref::HostBatch h;
    h.vocab = V;
    std::vector<float> l(V);
    for (int v = 0; v < V; ++v) {
      const std::string k = kind;
      l[v] = k == "ties" ? std::round(n(rng) * 0.5f) : k == "all_equal" ? 1.5f
           : k == "neg_inf" ? (u(rng) < 0.3f ? -INFINITY : n(rng)) : n(rng);
    }
    SamplingRow row = r;
    row.key = static_cast<int64_t>(rng());
    row.counter = i;
    for (auto [id, val] : adds) {
      h.add_ids.push_back(id);
      h.add_values.push_back(val);
    }
    row.adds_end = static_cast<int>(adds.size());
    if (penalties) {
      row.counts_row = 0;
      h.counts_rows = 1;
      h.counts.assign(V, 0);
      h.mask.assign((V + 31) / 32, 0);
      for (int k = 0; k < 40; ++k) h.counts[rng() % V] += 1 + static_cast<int>(rng() % 3);
      for (int k = 0; k < 80; ++k) {
        const int v = static_cast<int>(rng() % V);
        h.mask[v / 32] |= static_cast<int32_t>(1u << (v % 32));
      }
    }
    h.rows = {row};
    std::vector<DeviceBuffer> bufs;
    const SampleBatch batch = testing_ref::place(*b, h, bufs);
    const auto ref = testing_ref::reference_row(l, row, adds, h.counts_of(0), h.prompt_of(0));
    // The processed logits and the survivors themselves, not only the pick.
    std::vector<float> x(V);
    std::vector<int32_t> scratch;
    cpu::process_row(l.data(), V, row, batch, x.data());
    const float threshold = row.temperature > 0 ? cpu::survivor_threshold(x.data(), V, row, scratch) : -INFINITY;
    const auto loose = testing_ref::reference_row(l, row, adds, h.counts_of(0), h.prompt_of(0), 1e-6, -1e-6);
    const auto tight = testing_ref::reference_row(l, row, adds, h.counts_of(0), h.prompt_of(0), -1e-6, 1e-6);
    for (int v = 0; v < V; ++v) {
      if (std::isfinite(ref.x[v])) ASSERT_NEAR(x[v], ref.x[v], 1e-5 * std::max(1.0, std::fabs(ref.x[v]))) << "id " << v;
      else ASSERT_EQ(x[v], ref.x[v]) << "id " << v;
      const bool keep = x[v] >= threshold && x[v] > -INFINITY;
      if (keep != bool(ref.keep[v])) ASSERT_TRUE(keep ? loose.keep[v] : !tight.keep[v]) << kind << " row " << i << " id " << v;
    }
    int32_t got = -1;  // after process_row: sampling counts the token in the batch's counts
    Tensor tl(l.data(), DType::f32, {1, V}), to(&got, DType::i32, {1});
    b->sample(tl, batch, to);
    const int want = testing_ref::reference_pick(ref, row);
    if (got == want) continue;
    EXPECT_TRUE(loose.keep[got]) << kind << " row " << i << ": picked " << got << ", the reference " << want;
    if (penalties) EXPECT_EQ(h.counts[got] + 1, batch.counts.counts.ptr<int32_t>()[got]) << "the token is counted";
  }
}

TEST(SamplerReference, EachSettingOnEachKindOfRow) {
  const std::vector<std::pair<const char*, SamplingRow>> settings = {
      {"greedy", SamplingRow{}},
      {"temperature", SamplingRow{.temperature = 0.7f}},
      {"top_k 1", SamplingRow{.temperature = 1.0f, .top_k = 1}},
      {"top_k 20", SamplingRow{.temperature = 1.0f, .top_k = 20}},
      {"top_k beyond V", SamplingRow{.temperature = 1.0f, .top_k = 5000}},
      {"top_p 0.95", SamplingRow{.temperature = 1.0f, .top_p = 0.95f}},
      {"top_p 0.2", SamplingRow{.temperature = 0.5f, .top_p = 0.2f}},
      {"top_p 1", SamplingRow{.temperature = 1.0f, .top_p = 1.0f}},
      {"min_p 0.1", SamplingRow{.temperature = 1.0f, .min_p = 0.1f}},
      {"qwen3", SamplingRow{.temperature = 0.6f, .top_p = 0.95f, .top_k = 20}},
      {"all", SamplingRow{.temperature = 1.2f, .top_p = 0.8f, .min_p = 0.02f, .top_k = 100}},
  };
  uint64_t seed = 1;
  for (const auto& [name, r] : settings)
    for (const char* kind : {"normal", "ties", "all_equal", "neg_inf"}) {
      SCOPED_TRACE(std::string(name) + " on " + kind);
      expect_reference_picks(r, kind, 3000, 6, seed++);
    }
}

TEST(SamplerReference, PenaltiesAndAdds) {
  const std::vector<std::pair<int, float>> adds = {{3, 5.0f}, {17, -2.5f}, {99, -INFINITY}, {1000, 30.0f}};
  for (SamplingRow r : {SamplingRow{.repetition_penalty = 1.5f},  // greedy with penalties: argmax of processed logits
                        SamplingRow{.temperature = 0.8f, .repetition_penalty = 0.7f, .presence_penalty = 1.0f},
                        SamplingRow{.temperature = 1.0f, .top_p = 0.9f, .frequency_penalty = 0.5f},
                        SamplingRow{.temperature = 1.0f, .top_k = 30, .presence_penalty = -1.5f,
                                    .frequency_penalty = -0.5f}}) {
    expect_reference_picks(r, "normal", 3000, 5, 99, {}, true);
    expect_reference_picks(r, "normal", 3000, 5, 100, adds, true);
  }
  expect_reference_picks(SamplingRow{.temperature = 1.0f}, "normal", 3000, 5, 101, adds);
}

TEST(SamplerReference, DrawsFollowTheFilteredDistribution) {
  // 10,000 seeded draws of one row per setting: only survivors, at their renormalised
  // probabilities (chi-square under a fixed, generous threshold).
  const int V = 50, N = 10000;
  std::mt19937_64 rng(7);
  std::normal_distribution<float> n(0.f, 2.f);
  std::vector<float> row(V);
  for (float& x : row) x = n(rng);
  auto b = make_backend(DeviceKind::cpu, {.num_threads = 2});
  for (SamplingRow r : {SamplingRow{.temperature = 0.8f, .top_p = 0.9f}, SamplingRow{.temperature = 1.0f, .top_k = 5},
                        SamplingRow{.temperature = 1.5f, .min_p = 0.2f},
                        SamplingRow{.temperature = 0.6f, .top_p = 0.95f, .top_k = 20}}) {
    const auto ref = testing_ref::reference_row(row, r, {}, std::vector<int32_t>(V, 0), std::vector<char>(V, 0));
    std::vector<SamplingRow> rows(N, r);
    std::vector<int32_t> filtered(N);
    for (int i = 0; i < N; ++i) {
      rows[i].key = 4242;
      rows[i].counter = i;
      filtered[i] = i;
    }
    std::vector<float> logits;
    for (int i = 0; i < N; ++i) logits.insert(logits.end(), row.begin(), row.end());
    SampleBatch batch;
    batch.rows = rows.data();
    batch.filtered_rows = filtered.data();
    batch.num_filtered = N;
    std::vector<int32_t> out(N);
    Tensor tl(logits.data(), DType::f32, {N, V}), to(out.data(), DType::i32, {N});
    b->sample(tl, batch, to);
    std::vector<double> counts(V, 0), p(V, 0);
    double z = 0;
    for (int v = 0; v < V; ++v)
      if (ref.keep[v]) z += p[v] = std::exp(ref.x[v]);
    for (int t : out) {
      ASSERT_TRUE(ref.keep[t]) << "drew " << t << ", which the filters drop";
      counts[t] += 1;
    }
    double chi2 = 0;
    int dof = -1;
    for (int v = 0; v < V; ++v) {
      if (!ref.keep[v]) continue;
      const double e = N * p[v] / z;
      chi2 += (counts[v] - e) * (counts[v] - e) / e;
      ++dof;
    }
    EXPECT_LT(chi2, dof + 10 * std::sqrt(2.0 * std::max(dof, 1)) + 25) << "dof " << dof;
    // The same seeds draw the same tokens again.
    std::vector<int32_t> again(N);
    Tensor ta(again.data(), DType::i32, {N});
    b->sample(tl, batch, ta);
    EXPECT_EQ(again, out);
  }
}

TEST(SamplerReference, LogprobsAgainstDoubleLogSoftmax) {
  const int V = 2000, B = 4, N = 6;
  std::mt19937_64 rng(3);
  std::normal_distribution<float> n(0.f, 3.f);
  std::vector<float> logits(size_t(B) * V);
  for (float& x : logits) x = n(rng);
  logits[size_t(2) * V + 5] = -INFINITY;
  std::vector<int32_t> ids = {0, 1999, 7, 42}, rows = {3, 0, 2};
  const int R = 3;
  std::vector<float> lp(R), top_lp(R * N);
  std::vector<int32_t> ranks(R), top_ids(R * N);
  LogprobsOut o{Tensor(lp.data(), DType::f32, {R}), Tensor(ranks.data(), DType::i32, {R}),
                Tensor(top_ids.data(), DType::i32, {R, N}), Tensor(top_lp.data(), DType::f32, {R, N})};
  auto b = make_backend(DeviceKind::cpu, {.num_threads = 2});
  b->logprobs(Tensor(logits.data(), DType::f32, {B, V}), Tensor(rows.data(), DType::i32, {R}),
              Tensor(ids.data(), DType::i32, {B}), N, o);
  for (int r = 0; r < R; ++r) {
    const float* x = logits.data() + size_t(rows[r]) * V;
    double m = -1e300, z = 0;
    for (int v = 0; v < V; ++v) m = std::max<double>(m, x[v]);
    for (int v = 0; v < V; ++v) z += std::exp(x[v] - m);
    const double lse = m + std::log(z);
    const int id = ids[rows[r]];
    EXPECT_NEAR(lp[r], x[id] - lse, 1e-5);
    int rank = 0;
    for (int v = 0; v < V; ++v) rank += x[v] >= x[id];
    EXPECT_EQ(ranks[r], rank);
    std::vector<int> order(V);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int c) { return x[a] > x[c]; });
    for (int k = 0; k < N; ++k) {
      EXPECT_EQ(top_ids[r * N + k], order[k]) << "row " << r << " top " << k;
      EXPECT_NEAR(top_lp[r * N + k], x[order[k]] - lse, 1e-5);
    }
  }
}

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
