// The CUDA sampler and logprobs held to the CPU backend's (the reference, itself held to a
// double-precision reference and to transformers in test_sampler*.cpp): random logits at batch
// 1..512 with every row's settings drawn apart (greedy, temperature, top_k, top_p, min_p,
// penalties, logit_bias, min_tokens masks), including ties, all-equal rows, -inf entries, top_k
// beyond the vocabulary and top_p = 1; the top-k path (top_k <= 64) on both sides of its limits and
// of its ties. Skips visibly without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/rng.h"
#include "sampling_reference.h"

namespace nanovllm {
namespace {

using testing_ref::HostBatch;

class CudaSampling : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda_available(&why)) GTEST_SKIP() << "CUDA sampling tests skipped: " << why;
    cpu_ = make_backend(DeviceKind::cpu);
    gpu_ = make_backend(DeviceKind::cuda);
    const uint64_t seed = std::random_device{}();
    rng_.seed(seed);
    std::printf("[ seed     ] %llu\n", static_cast<unsigned long long>(seed));
  }

  enum class Kind { normal, ties, all_equal, neg_inf, peaked };

  std::vector<float> row_logits(int V, Kind kind) {
    std::normal_distribution<float> n(0.f, 3.f);
    std::uniform_real_distribution<float> u(0.f, 1.f);
    std::vector<float> l(V);
    for (int v = 0; v < V; ++v) {
      switch (kind) {
        case Kind::normal: l[v] = n(rng_); break;
        case Kind::ties: l[v] = std::round(n(rng_) * 0.5f); break;  // a dozen values, thousands of each
        case Kind::all_equal: l[v] = 1.5f; break;
        case Kind::neg_inf: l[v] = u(rng_) < 0.3f ? -INFINITY : n(rng_); break;
        case Kind::peaked: l[v] = n(rng_) * 0.3f + (u(rng_) < 0.002f ? 15.f : 0.f); break;
      }
    }
    return l;
  }

  // Greedy, plain and filtered rows, to be mixed in one batch.
  static std::vector<SamplingRow> default_menu(int V) {
    return {
        SamplingRow{},  // greedy
        SamplingRow{.temperature = 0.8f},
        SamplingRow{.temperature = 0.6f, .top_p = 0.95f, .top_k = 20},  // Qwen3's
        SamplingRow{.temperature = 1.0f, .top_p = 0.9f},
        SamplingRow{.temperature = 0.7f, .top_k = 1},
        SamplingRow{.temperature = 1.3f, .top_p = 1.0f, .min_p = 0.05f, .top_k = V + 5},  // top_k beyond V
        SamplingRow{.temperature = 0.5f, .top_k = 1000},
        SamplingRow{.temperature = 2.0f, .top_p = 0.3f},
        SamplingRow{.temperature = 1.0f, .top_p = 0.8f, .min_p = 0.01f, .top_k = 50},
        SamplingRow{.temperature = 0.9f, .top_p = 0.999f},
        SamplingRow{.temperature = 1.0f, .min_p = 0.5f},
        SamplingRow{.temperature = 1e-3f},
    };
  }

  // A row's settings drawn from the menu, with a key and counter, and a quarter of the time
  // penalties and a quarter of the time sparse adds.
  SamplingRow draw_row(int V, HostBatch& h, const std::vector<SamplingRow>& menu) {
    SamplingRow r = menu[std::uniform_int_distribution<size_t>(0, menu.size() - 1)(rng_)];
    r.key = static_cast<int64_t>(rng_());
    r.counter = static_cast<int64_t>(rng_() % 100000);
    std::uniform_real_distribution<float> u(0.f, 1.f);
    if (u(rng_) < 0.25f) {  // penalties over counts and a prompt drawn here
      r.repetition_penalty = 1.0f + u(rng_);
      r.presence_penalty = u(rng_) - 0.5f;
      r.frequency_penalty = u(rng_) * 0.5f;
      r.counts_row = h.counts_rows++;
      const size_t words = (V + 31) / 32;
      h.counts.resize(size_t(h.counts_rows) * V, 0);
      h.mask.resize(size_t(h.counts_rows) * words, 0);
      std::uniform_int_distribution<int> id(0, std::min(V, 2000) - 1);  // crowd them where they matter
      for (int i = 0; i < 60; ++i) h.counts[size_t(r.counts_row) * V + id(rng_)] += 1;
      for (int i = 0; i < 200; ++i) {
        const int v = id(rng_);
        h.mask[r.counts_row * words + v / 32] |= static_cast<int32_t>(1u << (v % 32));
      }
    }
    r.adds_begin = static_cast<int>(h.add_ids.size());
    if (u(rng_) < 0.25f) {  // logit_bias, and a min_tokens mask
      std::uniform_int_distribution<int> id(0, V - 1);
      for (int i = 0; i < 5; ++i) {
        h.add_ids.push_back(id(rng_));
        h.add_values.push_back((u(rng_) - 0.5f) * 20.f);
      }
      h.add_ids.push_back(id(rng_));
      h.add_values.push_back(-INFINITY);
    }
    r.adds_end = static_cast<int>(h.add_ids.size());
    return r;
  }
  SamplingRow draw_row(int V, HostBatch& h) { return draw_row(V, h, default_menu(V)); }

  // Random rows of one kind (or of mixed kinds) with settings from the menu on both backends.
  void check_batch(int B, int V, Kind kind_of_all = Kind::normal, bool mix_kinds = true,
                   const std::vector<SamplingRow>& menu = {}, int hint = -1) {
    HostBatch h;
    h.vocab = V;
    std::vector<float> logits;
    std::vector<int> kinds(B);
    std::uniform_int_distribution<int> k(0, 4);
    for (int b = 0; b < B; ++b) {
      kinds[b] = static_cast<int>(mix_kinds ? static_cast<Kind>(k(rng_)) : kind_of_all);
      std::vector<float> l = row_logits(V, static_cast<Kind>(kinds[b]));
      logits.insert(logits.end(), l.begin(), l.end());
      h.rows.push_back(draw_row(V, h, menu.empty() ? default_menu(V) : menu));
    }
    check_tokens(h, logits, kinds, hint);
  }

  // Runs the sampler on both backends; checks each GPU token against the CPU's (kinds: a label
  // per row for the messages). hint >= 0: the GPU batch's max_filtered_top_k, true or not.
  // Returns the GPU's tokens.
  std::vector<int32_t> check_tokens(HostBatch& h, const std::vector<float>& logits, const std::vector<int>& kinds,
                                    int hint = -1) {
    const int B = static_cast<int>(h.rows.size()), V = h.vocab;
    std::vector<DeviceBuffer> cb, gb;
    const SampleBatch bc = testing_ref::place(*cpu_, h, cb);
    SampleBatch bg = testing_ref::place(*gpu_, h, gb);
    if (hint >= 0) bg.max_filtered_top_k = hint;
    Tensor lc = cpu_->alloc_tensor(DType::f32, {B, V}, cb), lg = gpu_->alloc_tensor(DType::f32, {B, V}, gb);
    std::memcpy(lc.data, logits.data(), logits.size() * 4);
    gpu_->copy_to_device(lg.data, logits.data(), logits.size() * 4);
    Tensor oc = cpu_->alloc_tensor(DType::i32, {B}, cb), og = gpu_->alloc_tensor(DType::i32, {B}, gb);
    cpu_->sample(lc, bc, oc);
    gpu_->sample(lg, bg, og);
    std::vector<int32_t> got(B);
    gpu_->copy_to_host(got.data(), og.data, B * 4);
    int boundary = 0;
    for (int b = 0; b < B; ++b) {
      const int32_t want = oc.ptr<int32_t>()[b];
      if (got[b] == want) continue;
      // Only a near-boundary (top_p or min_p within 1e-4) or near-tie draw may differ.
      EXPECT_GE(got[b], 0);
      EXPECT_LT(got[b], V);
      if (got[b] < 0 || got[b] >= V) return got;
      const SamplingRow& r = h.rows[b];
      const std::vector<float> row(logits.begin() + size_t(b) * V, logits.begin() + size_t(b + 1) * V);
      const auto loose = testing_ref::reference_row(row, r, h.adds_of(b), h.counts_of(b), h.prompt_of(b), 1e-4, -1e-4);
      const auto tight = testing_ref::reference_row(row, r, h.adds_of(b), h.counts_of(b), h.prompt_of(b), -1e-4, 1e-4);
      double best_tight = 0;
      testing_ref::reference_pick(tight, r, &best_tight);
      EXPECT_TRUE(loose.keep[got[b]]) << "row " << b << ": GPU picked " << got[b] << ", which the reference drops; CPU "
                                      << want << " (kind " << kinds[b] << ", T " << r.temperature << ", top_k "
                                      << r.top_k << ", top_p " << r.top_p << ", min_p " << r.min_p << ")";
      double s = loose.x[got[b]];
      if (r.temperature > 0) s -= std::log(-std::log(double(uniform01(r.key, r.counter, got[b]))));
      EXPECT_GE(s, best_tight - 1e-4 * std::max(1.0, std::fabs(best_tight)))
          << "row " << b << ": GPU picked " << got[b] << " (score " << s << "), CPU " << want << " (kind " << kinds[b]
          << ", T " << r.temperature << ", top_k " << r.top_k << ", top_p " << r.top_p << ", min_p " << r.min_p << ")";
      ++boundary;
    }
    EXPECT_LE(boundary, 2 + B / 50) << "too many rows differ from the CPU";
    // The tokens were counted where the rows have counts.
    if (h.counts_rows > 0) {
      std::vector<int32_t> cg(h.counts.size());
      gpu_->copy_to_host(cg.data(), bg.counts.counts.data, cg.size() * 4);
      for (int b = 0; b < B; ++b) {
        if (h.rows[b].counts_row < 0) continue;
        const size_t at = size_t(h.rows[b].counts_row) * V + got[b];
        EXPECT_EQ(cg[at], h.counts[at] + 1) << "row " << b << ": token " << got[b] << " not counted";
      }
    }
    return got;
  }

  // The GPU sampler's tokens for batch h over `logits` (its rows of h.vocab each).
  std::vector<int32_t> gpu_tokens(const HostBatch& h, const std::vector<float>& logits) {
    const int B = static_cast<int>(h.rows.size()), V = h.vocab;
    std::vector<DeviceBuffer> gb;
    const SampleBatch bg = testing_ref::place(*gpu_, h, gb);
    Tensor lg = gpu_->alloc_tensor(DType::f32, {B, V}, gb), og = gpu_->alloc_tensor(DType::i32, {B}, gb);
    gpu_->copy_to_device(lg.data, logits.data(), logits.size() * 4);
    gpu_->sample(lg, bg, og);
    std::vector<int32_t> got(B);
    gpu_->copy_to_host(got.data(), og.data, B * 4);
    return got;
  }

  std::unique_ptr<Backend> cpu_, gpu_;
  std::mt19937_64 rng_;
};

TEST_F(CudaSampling, MixedSettingsMatchTheCpu) {
  for (int V : {1000, 151936}) {
    for (int B : {1, 3, 64}) {
      SCOPED_TRACE("B " + std::to_string(B) + " V " + std::to_string(V));
      check_batch(B, V);
    }
  }
  SCOPED_TRACE("B 512 V 32000");
  check_batch(512, 32000);
}

TEST_F(CudaSampling, TiesAndAllEqualRows) {
  // Thousands of ids share each value: the thresholds fall inside groups bigger than the
  // candidate buffer, so the exact search path runs.
  for (Kind kind : {Kind::ties, Kind::all_equal, Kind::neg_inf, Kind::peaked}) {
    SCOPED_TRACE("kind " + std::to_string(int(kind)));
    check_batch(24, 151936, kind, false);
  }
}

TEST_F(CudaSampling, TopKPathMatchesTheCpu) {
  // A batch whose filtered rows all have 1 <= top_k <= 64 takes the top-k path (each chunk's
  // top_k, no histogram), greedy and plain rows beside them; a batch with top_k 65 or a row
  // without top_k takes the histogram path for every filtered row.
  std::vector<SamplingRow> top = {
      SamplingRow{},
      SamplingRow{.temperature = 0.8f},
      SamplingRow{.temperature = 0.6f, .top_p = 0.95f, .top_k = 20},
      SamplingRow{.temperature = 0.6f, .top_p = 0.95f, .min_p = 0.05f, .top_k = 20},
      SamplingRow{.temperature = 0.7f, .top_k = 1},
      SamplingRow{.temperature = 1.0f, .top_k = 64},
      SamplingRow{.temperature = 0.9f, .top_p = 0.8f, .min_p = 0.02f, .top_k = 64},
      SamplingRow{.temperature = 1.2f, .min_p = 0.3f, .top_k = 20},
      SamplingRow{.temperature = 1.0f, .top_p = 0.5f, .top_k = 5},
  };
  std::vector<SamplingRow> mixed = top;
  mixed.push_back(SamplingRow{.temperature = 1.0f, .top_k = 65});
  mixed.push_back(SamplingRow{.temperature = 1.0f, .top_p = 0.9f});
  for (int B : {1, 7, 256}) {
    SCOPED_TRACE("B " + std::to_string(B) + " V 151936");
    check_batch(B, 151936, Kind::normal, true, top);
  }
  for (Kind kind : {Kind::normal, Kind::peaked, Kind::neg_inf}) {
    SCOPED_TRACE("kind " + std::to_string(int(kind)) + " B 64 V 151936");
    check_batch(64, 151936, kind, false, top);
  }
  for (int V : {64, 1000}) {  // one chunk; top_k 64 (and 65) of 64 ids
    SCOPED_TRACE("B 64 V " + std::to_string(V));
    check_batch(64, V, Kind::normal, true, top);
    check_batch(64, V, Kind::normal, true, mixed);
  }
  {
    SCOPED_TRACE("B 64 V 151936, histogram path");
    check_batch(64, 151936, Kind::normal, true, mixed);
  }
  {
    // A wrong hint costs time, not tokens: rows the top-k path cannot take are searched whole.
    SCOPED_TRACE("B 32 V 151936, hint 20 over top_k 65 and top_p rows");
    check_batch(32, 151936, Kind::normal, true, mixed, 20);
  }
  SCOPED_TRACE("B 3 V 300000");  // more chunks than sample_finish gathers lists of: the histogram path
  check_batch(3, 300000, Kind::normal, true, top);
}

TEST_F(CudaSampling, TopKTiesMatchTheCpu) {
  // Rows built so that top_k = 20 ends in ties, each of 256 rows with its own counter:
  //   cut at the threshold: 10 ids at 9 and 100 ids at 8 in each of chunks 0 and 5, where a
  //     chunk's list holds 64: the 200 ids at 8 all stay, so the row is searched whole;
  //   cut below the threshold: 100 ids at 8 in chunk 0, 25 at 8.5 in chunk 2, 10 at 9 in chunk 7:
  //     the threshold is 8.5 (all 25 stay), chunk 0's list is cut at 8, which cannot survive;
  //   ties in one list: 30 ids at 8 in chunk 3, all kept.
  // The rest of each row is N(0, 1), clipped to [-3, 3]; top_p 0.95 keeps every tie group here.
  const int V = 151936, C = 4096, B = 256;
  enum Layout { cut_at, cut_below, one_list, random_row };
  auto ids = [](int first, int step, int n) {
    std::vector<int> v;
    for (int i = 0; i < n; ++i) v.push_back(first + i * step);
    return v;
  };
  const std::vector<int> at8_c0 = ids(40, 1, 100), at8_c5 = ids(5 * C + 1, 7, 100), at9_c9 = ids(9 * C, 11, 10);
  const std::vector<int> at85_c2 = ids(2 * C + 3, 5, 25), at9_c7 = ids(7 * C + 2, 3, 10), at8_c3 = ids(3 * C, 13, 30);
  HostBatch h;
  h.vocab = V;
  std::vector<float> logits;
  std::vector<int> layouts(B);
  std::normal_distribution<float> n(0.f, 1.f);
  const SamplingRow tie_row{.key = 4242, .temperature = 1.0f, .top_p = 0.95f, .top_k = 20};
  for (int b = 0; b < B; ++b) {
    layouts[b] = b % 4;
    std::vector<float> l(V);
    for (float& x : l) x = std::clamp(n(rng_), -3.f, 3.f);
    auto set = [&](const std::vector<int>& at, float value) {
      for (int v : at) l[v] = value;
    };
    SamplingRow r = tie_row;
    r.counter = b;
    switch (layouts[b]) {
      case cut_at: set(at8_c0, 8.f), set(at8_c5, 8.f), set(at9_c9, 9.f); break;
      case cut_below: set(at8_c0, 8.f), set(at85_c2, 8.5f), set(at9_c7, 9.f); break;
      case one_list: set(at8_c3, 8.f); break;
      case random_row:
        l = row_logits(V, Kind::normal);
        r = draw_row(V, h, {SamplingRow{.temperature = 0.6f, .top_p = 0.95f, .top_k = 20},
                            SamplingRow{.temperature = 1.0f, .top_k = 64}});
        break;
    }
    logits.insert(logits.end(), l.begin(), l.end());
    h.rows.push_back(r);
  }
  std::vector<int> kinds(B);
  for (int b = 0; b < B; ++b) kinds[b] = 100 + layouts[b];
  const std::vector<int32_t> got = check_tokens(h, logits, kinds);
  {
    SCOPED_TRACE("the same rows on the histogram path");
    check_tokens(h, logits, kinds, 0);
  }
  // Each layout's ties past what a list or the k-th place holds are drawn too (in about a third of
  // a layout's 64 rows each).
  auto drawn = [&](Layout layout, const std::vector<int>& group, size_t from) {
    int k = 0;
    for (int b = 0; b < B; ++b)
      if (layouts[b] == layout) k += std::find(group.begin() + from, group.end(), got[b]) != group.end();
    return k;
  };
  EXPECT_GT(drawn(cut_at, at8_c0, 64) + drawn(cut_at, at8_c5, 64), 0) << "ids past a cut list are never drawn";
  EXPECT_GT(drawn(cut_below, at85_c2, 10), 0) << "ids tied with the 20th are never drawn";
  EXPECT_EQ(drawn(cut_below, at8_c0, 0), 0) << "ids below the threshold are drawn";
  EXPECT_GT(drawn(one_list, at8_c3, 20), 0) << "ids tied with the 20th are never drawn";
}

TEST_F(CudaSampling, SignedZerosAreOneTie) {
  // -0 and +0 are equal: when top_p's threshold falls inside a group of zeros, both halves stay
  // (a bit-pattern order would put -0 below +0 and drop it). 10 ids at 1, then zeros of both
  // signs; top_p 0.5 keeps the ones (2.7% of the mass) and the whole group of zeros.
  const int V = 1000, B = 256;
  std::vector<float> row(V);
  for (int v = 0; v < V; ++v) row[v] = v < 10 ? 1.0f : (v % 2 ? -0.0f : 0.0f);
  HostBatch h;
  h.vocab = V;
  std::vector<float> logits;
  for (int b = 0; b < B; ++b) {
    h.rows.push_back(SamplingRow{.key = 99, .counter = b, .temperature = 1.0f, .top_p = 0.5f});
    logits.insert(logits.end(), row.begin(), row.end());
  }
  std::vector<DeviceBuffer> cb, gb;
  const SampleBatch bc = testing_ref::place(*cpu_, h, cb), bg = testing_ref::place(*gpu_, h, gb);
  Tensor lc = cpu_->alloc_tensor(DType::f32, {B, V}, cb), lg = gpu_->alloc_tensor(DType::f32, {B, V}, gb);
  std::memcpy(lc.data, logits.data(), logits.size() * 4);
  gpu_->copy_to_device(lg.data, logits.data(), logits.size() * 4);
  Tensor oc = cpu_->alloc_tensor(DType::i32, {B}, cb), og = gpu_->alloc_tensor(DType::i32, {B}, gb);
  cpu_->sample(lc, bc, oc);
  gpu_->sample(lg, bg, og);
  std::vector<int32_t> got(B);
  gpu_->copy_to_host(got.data(), og.data, B * 4);
  int negative_zero = 0;
  for (int b = 0; b < B; ++b) {
    EXPECT_EQ(got[b], oc.ptr<int32_t>()[b]) << "row " << b;
    negative_zero += got[b] >= 10 && got[b] % 2;
  }
  EXPECT_GT(negative_zero, B / 4) << "ids holding -0 are never drawn";
}

TEST_F(CudaSampling, SameSeedSameTokenWhateverTheBatch) {
  const int V = 151936;
  std::vector<float> row = row_logits(V, Kind::normal);
  SamplingRow r{.temperature = 0.6f, .top_p = 0.95f, .top_k = 20};
  r.key = 12345;
  auto sample_in = [&](int B, int at) {
    HostBatch h;
    h.vocab = V;
    std::vector<float> logits;
    for (int b = 0; b < B; ++b) {
      std::vector<float> l = b == at ? row : row_logits(V, Kind::normal);
      logits.insert(logits.end(), l.begin(), l.end());
      h.rows.push_back(b == at ? r : draw_row(V, h));
    }
    return gpu_tokens(h, logits)[at];
  };
  for (int counter = 0; counter < 5; ++counter) {
    r.counter = counter;
    const int alone = sample_in(1, 0);
    EXPECT_EQ(sample_in(8, 3), alone);
    EXPECT_EQ(sample_in(100, 99), alone);
    EXPECT_EQ(sample_in(100, 99), alone);  // and run to run
  }
}

// Plain rows (temperature only, the bench.py workload's) score most ids by a bound from the fast
// log2 and only the few that may win exactly (sampling.cu, gumbel_bound): every row's token must
// still be the best x - log(-log u) in double precision, to float rounding, with no row let off.
// Flat rows (noise decides among thousands of close logits), temperatures from 1e-3 (|x| ~ 1e4) to
// 50 (x ~ 0), -inf entries, a lone finite id.
TEST_F(CudaSampling, PlainDrawsAreTheBestScore) {
  const int V = 151936, B = 48;
  const float temps[] = {1e-3f, 0.6f, 1.0f, 3.0f, 50.0f};
  std::normal_distribution<float> n(0.f, 1.f);
  HostBatch h;
  h.vocab = V;
  std::vector<float> logits;
  for (int b = 0; b < B; ++b) {
    std::vector<float> l = row_logits(V, static_cast<Kind>(b % 5));
    if (b % 8 == 7) for (float& x : l) x = n(rng_) * 0.01f;  // flat
    if (b == B - 1) {  // one finite id among -inf
      std::fill(l.begin(), l.end(), -INFINITY);
      l[V / 2 + 3] = 0.5f;
    }
    logits.insert(logits.end(), l.begin(), l.end());
    SamplingRow r{.temperature = temps[b % 5]};
    r.key = static_cast<int64_t>(rng_());
    r.counter = static_cast<int64_t>(rng_() % 100000);
    h.rows.push_back(r);
  }
  const std::vector<int32_t> got = gpu_tokens(h, logits);
  for (int b = 0; b < B; ++b) {
    const SamplingRow& r = h.rows[b];
    const float inv_t = 1.0f / r.temperature;
    auto score = [&](int v) {
      const double x = logits[size_t(b) * V + v] * inv_t;  // the float x the kernels compute
      return x - std::log(-std::log(double(uniform01(r.key, r.counter, v))));
    };
    int want = 0;
    double best = score(0);
    for (int v = 1; v < V; ++v) {
      const double s = score(v);
      if (s > best) { best = s; want = v; }
    }
    ASSERT_GE(got[b], 0) << "row " << b;
    ASSERT_LT(got[b], V) << "row " << b;
    EXPECT_GE(score(got[b]), best - 1e-5 * std::max(1.0, std::fabs(best)))
        << "row " << b << " (T " << r.temperature << "): GPU picked " << got[b] << ", the best is " << want;
  }
  EXPECT_EQ(got[B - 1], V / 2 + 3);
}

TEST_F(CudaSampling, DrawsFollowTheFilteredDistribution) {
  // 10,000 draws (counters) of one small row: only survivors, at their renormalised probabilities.
  const int V = 64, N = 10000, B = 500;
  std::vector<float> row = row_logits(V, Kind::normal);
  for (SamplingRow r : {SamplingRow{.temperature = 0.8f, .top_p = 0.9f}, SamplingRow{.temperature = 1.0f, .top_k = 5},
                        SamplingRow{.temperature = 1.0f, .min_p = 0.1f}}) {
    const auto ref = testing_ref::reference_row(row, r, {}, std::vector<int32_t>(V, 0), std::vector<char>(V, 0));
    std::vector<double> p(V, 0);
    double z = 0;
    for (int v = 0; v < V; ++v)
      if (ref.keep[v]) z += p[v] = std::exp(ref.x[v]);
    std::vector<double> counts(V, 0);
    for (int start = 0; start < N; start += B) {
      HostBatch h;
      h.vocab = V;
      std::vector<float> logits;
      for (int b = 0; b < B; ++b) {
        SamplingRow rb = r;
        rb.key = 777;
        rb.counter = start + b;
        h.rows.push_back(rb);
        logits.insert(logits.end(), row.begin(), row.end());
      }
      for (int t : gpu_tokens(h, logits)) {
        ASSERT_TRUE(ref.keep[t]) << "drew " << t << ", which the filters drop";
        counts[t] += 1;
      }
    }
    double chi2 = 0;
    int dof = -1;
    for (int v = 0; v < V; ++v) {
      if (!ref.keep[v]) continue;
      const double e = N * p[v] / z;
      chi2 += (counts[v] - e) * (counts[v] - e) / e;
      ++dof;
    }
    // A generous fixed threshold: the 1e-6 tail of chi-square stays below dof + 10 sqrt(2 dof) + 25.
    EXPECT_LT(chi2, dof + 10 * std::sqrt(2.0 * std::max(dof, 1)) + 25) << "dof " << dof;
  }
}

TEST_F(CudaSampling, LogprobsMatchTheCpu) {
  for (int V : {1000, 151936}) {
    for (int R : {1, 37}) {
      SCOPED_TRACE("R " + std::to_string(R) + " V " + std::to_string(V));
      const int B = R + 3, N = 7;
      std::vector<float> logits;
      std::vector<int32_t> ids(B), rows(R);
      std::uniform_int_distribution<int> id(0, V - 1);
      for (int b = 0; b < B; ++b) {
        std::vector<float> l = row_logits(V, b % 4 == 3 ? Kind::neg_inf : Kind::normal);
        logits.insert(logits.end(), l.begin(), l.end());
        ids[b] = id(rng_);
        while (!std::isfinite(l[ids[b]])) ids[b] = id(rng_);
      }
      for (int r = 0; r < R; ++r) rows[r] = (r * 7 + 2) % B;
      std::vector<DeviceBuffer> cb, gb;
      auto run = [&](Backend& be, std::vector<DeviceBuffer>& bufs) {
        Tensor l = be.alloc_tensor(DType::f32, {B, V}, bufs), ti = be.alloc_tensor(DType::i32, {B}, bufs),
               tr = be.alloc_tensor(DType::i32, {R}, bufs);
        be.copy_to_device(l.data, logits.data(), logits.size() * 4);
        be.copy_to_device(ti.data, ids.data(), B * 4);
        be.copy_to_device(tr.data, rows.data(), R * 4);
        LogprobsOut o{be.alloc_tensor(DType::f32, {R}, bufs), be.alloc_tensor(DType::i32, {R}, bufs),
                      be.alloc_tensor(DType::i32, {R, N}, bufs), be.alloc_tensor(DType::f32, {R, N}, bufs)};
        be.logprobs(l, tr, ti, N, o);
        std::vector<float> lp(R), tlp(size_t(R) * N);
        std::vector<int32_t> rk(R), tid(size_t(R) * N);
        be.copy_to_host(lp.data(), o.token_logprobs.data, R * 4);
        be.copy_to_host(rk.data(), o.ranks.data, R * 4);
        be.copy_to_host(tid.data(), o.top_ids.data, R * N * 4);
        be.copy_to_host(tlp.data(), o.top_logprobs.data, R * N * 4);
        return std::tuple{lp, rk, tid, tlp};
      };
      auto [lp_c, rk_c, id_c, tl_c] = run(*cpu_, cb);
      auto [lp_g, rk_g, id_g, tl_g] = run(*gpu_, gb);
      for (int r = 0; r < R; ++r) {
        EXPECT_NEAR(lp_g[r], lp_c[r], 1e-4) << "row " << r;
        EXPECT_EQ(rk_g[r], rk_c[r]) << "row " << r;
        for (int k = 0; k < N; ++k) {
          EXPECT_EQ(id_g[r * N + k], id_c[r * N + k]) << "row " << r << " top " << k;
          EXPECT_NEAR(tl_g[r * N + k], tl_c[r * N + k], 1e-4) << "row " << r << " top " << k;
        }
      }
    }
  }
}

TEST_F(CudaSampling, ResetTokenCountsMatchesTheCpu) {
  const int V = 151936, rows = 3;
  const int64_t words = (V + 31) / 32;
  std::vector<int32_t> prompt = {5, 5, 77, 151935, 0, 31, 32}, output = {9, 9, 9, 151935};
  std::vector<DeviceBuffer> cb, gb;
  auto run = [&](Backend& be, std::vector<DeviceBuffer>& bufs) {
    TokenCounts t{be.alloc_tensor(DType::i32, {rows, V}, bufs), be.alloc_tensor(DType::i32, {rows, words}, bufs)};
    std::vector<int32_t> junk(size_t(rows) * V, 3);
    be.copy_to_device(t.counts.data, junk.data(), junk.size() * 4);
    be.copy_to_device(t.prompt_mask.data, junk.data(), size_t(rows) * words * 4);
    Tensor p = be.alloc_tensor(DType::i32, {int64_t(prompt.size())}, bufs), o = be.alloc_tensor(DType::i32, {int64_t(output.size())}, bufs);
    be.copy_to_device(p.data, prompt.data(), prompt.size() * 4);
    be.copy_to_device(o.data, output.data(), output.size() * 4);
    be.reset_token_counts(t, 1, p, o);
    std::vector<int32_t> c(size_t(rows) * V), m(size_t(rows) * words);
    be.copy_to_host(c.data(), t.counts.data, c.size() * 4);
    be.copy_to_host(m.data(), t.prompt_mask.data, m.size() * 4);
    return std::pair{c, m};
  };
  auto [cc, mc] = run(*cpu_, cb);
  auto [cg, mg] = run(*gpu_, gb);
  EXPECT_EQ(cg, cc);
  EXPECT_EQ(mg, mc);
  EXPECT_EQ(cc[size_t(V) + 9], 3);
  EXPECT_EQ(cc[size_t(V) + 10], 0);
  EXPECT_EQ(cc[0], 3);  // other rows untouched
}

}  // namespace
}  // namespace nanovllm
