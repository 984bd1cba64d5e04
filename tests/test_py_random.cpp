// PyRandom against CPython's own draws (tests/fixtures/py_random/draws.json, written by
// tests/reference/make_py_random_fixtures.py), and nano-vLLM bench.py's workload totals.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/bench/py_random.h"
#include "cli/bench/workload.h"

namespace nanovllm {
namespace {

const nlohmann::json& fixtures() {
  static const nlohmann::json data = [] {
    std::ifstream f(std::string(NANOVLLM_SOURCE_DIR) + "/tests/fixtures/py_random/draws.json");
    if (!f) throw std::runtime_error("cannot open tests/fixtures/py_random/draws.json");
    return nlohmann::json::parse(f);
  }();
  return data;
}

int64_t to_i64(const nlohmann::json& j) { return std::stoll(j.get<std::string>()); }

TEST(PyRandom, FixturesCoverTheSeeds) { EXPECT_GE(fixtures()["cases"].size(), 6u); }

TEST(PyRandom, RandomMatchesCPython) {
  for (const auto& c : fixtures()["cases"]) {
    auto r = PyRandom::from_decimal(c["seed"]);
    for (const auto& want : c["random"]) EXPECT_EQ(r.random(), want.get<double>()) << "seed " << c["seed"];
  }
}

TEST(PyRandom, GetrandbitsMatchesCPython) {
  for (const auto& c : fixtures()["cases"]) {
    for (const auto& [k, draws] : c["getrandbits"].items()) {
      auto r = PyRandom::from_decimal(c["seed"]);
      for (const auto& want : draws)
        EXPECT_EQ(words_to_hex(r.getrandbits_words(std::stoi(k))), want.get<std::string>())
            << "seed " << c["seed"] << " k " << k;
    }
  }
}

TEST(PyRandom, Getrandbits64AgreesWithWords) {
  PyRandom a(7), b(7);
  for (int k : {0, 1, 31, 32, 33, 63, 64}) {
    auto w = a.getrandbits_words(k);
    uint64_t v = w.size() == 1 ? w[0] : (uint64_t(w[1]) << 32) | w[0];
    EXPECT_EQ(b.getrandbits(k), v) << "k " << k;
  }
}

TEST(PyRandom, RandintMatchesCPythonIncludingRejection) {
  for (const auto& c : fixtures()["cases"]) {
    for (const auto& range : c["randint"]) {
      auto r = PyRandom::from_decimal(c["seed"]);
      const int64_t a = to_i64(range["a"]), b = to_i64(range["b"]);
      for (const auto& want : range["draws"])
        EXPECT_EQ(r.randint(a, b), to_i64(want)) << "seed " << c["seed"] << " randint(" << a << ", " << b << ")";
    }
  }
}

TEST(PyRandom, ExpovariateMatchesCPython) {
  for (const auto& c : fixtures()["cases"]) {
    auto r = PyRandom::from_decimal(c["seed"]);
    for (const auto& want : c["expovariate_2_5"]) EXPECT_DOUBLE_EQ(r.expovariate(2.5), want.get<double>());
  }
}

TEST(PyRandom, MixedCallsShareOneState) {
  for (const auto& c : fixtures()["cases"]) {
    auto r = PyRandom::from_decimal(c["seed"]);
    const auto& m = c["mixed"];
    for (size_t i = 0; i + 2 < m.size(); i += 3) {
      EXPECT_EQ(r.randint(0, 10000), to_i64(m[i]));
      EXPECT_EQ(words_to_hex(r.getrandbits_words(33 + int(i / 3))), m[i + 1].get<std::string>());
      EXPECT_EQ(r.random(), std::strtod(m[i + 2].get<std::string>().c_str(), nullptr));
    }
  }
}

TEST(PyRandom, IntSeedEqualsDecimalSeed) {
  for (int64_t s : {int64_t(0), int64_t(1), int64_t(42), int64_t(-42), (int64_t(1) << 32) + 5}) {
    PyRandom a(s), b = PyRandom::from_decimal(std::to_string(s));
    for (int i = 0; i < 5; ++i) EXPECT_EQ(a.genrand_uint32(), b.genrand_uint32()) << "seed " << s;
  }
}

TEST(PyRandom, UnsignedSeedCoversAllOf64Bits) {
  const uint64_t big = (uint64_t(1) << 63) + 7;  // above INT64_MAX: random.seed(2**63 + 7)
  PyRandom a = PyRandom::from_unsigned(big), b = PyRandom::from_decimal("9223372036854775815");
  PyRandom c = PyRandom::from_unsigned(42), d(42);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(a.genrand_uint32(), b.genrand_uint32());
    EXPECT_EQ(c.genrand_uint32(), d.genrand_uint32());
  }
}

TEST(PyRandom, BadInputsThrow) {
  EXPECT_THROW(PyRandom::from_decimal("12a"), std::invalid_argument);
  EXPECT_THROW(PyRandom::from_decimal(""), std::invalid_argument);
  PyRandom r;
  EXPECT_THROW(r.randint(5, 4), std::invalid_argument);
  EXPECT_THROW(r.randbelow(0), std::invalid_argument);
  EXPECT_THROW(r.getrandbits(65), std::invalid_argument);
  EXPECT_THROW(r.getrandbits_words(-1), std::invalid_argument);
}

TEST(Workload, BenchPyDefaultsGiveNanoVllmTotals) {
  Workload w = make_workload(WorkloadSpec{});
  EXPECT_EQ(w.prompts.size(), 256u);
  EXPECT_EQ(w.prompt_tokens(), 142827);
  EXPECT_EQ(w.output_tokens(), 133966);
  // And draw for draw, against CPython running bench.py's own comprehension.
  const auto& ref = fixtures()["bench_workload"];
  EXPECT_EQ(int64_t(w.prompts[0].size()), ref["first_prompt_len"].get<int64_t>());
  auto head = ref["first_prompt_head"].get<std::vector<int32_t>>();
  EXPECT_EQ(std::vector<int32_t>(w.prompts[0].begin(), w.prompts[0].begin() + 8), head);
  auto tail = ref["last_prompt_tail"].get<std::vector<int32_t>>();
  EXPECT_EQ(std::vector<int32_t>(w.prompts.back().end() - 8, w.prompts.back().end()), tail);
  EXPECT_EQ(std::vector<int>(w.max_tokens.begin(), w.max_tokens.begin() + 8), ref["max_tokens_head"].get<std::vector<int>>());
  EXPECT_EQ(std::vector<int>(w.max_tokens.end() - 8, w.max_tokens.end()), ref["max_tokens_tail"].get<std::vector<int>>());
}

TEST(Workload, RespectsRangesAndRejectsEmptyOnes) {
  WorkloadSpec s{.num_seqs = 50, .min_input = 3, .max_input = 9, .min_output = 2, .max_output = 4, .max_token_id = 99, .seed = 5};
  Workload w = make_workload(s);
  ASSERT_EQ(w.prompts.size(), 50u);
  for (size_t i = 0; i < w.prompts.size(); ++i) {
    EXPECT_GE(w.prompts[i].size(), 3u);
    EXPECT_LE(w.prompts[i].size(), 9u);
    for (int id : w.prompts[i]) EXPECT_TRUE(id >= 0 && id <= 99);
    EXPECT_TRUE(w.max_tokens[i] >= 2 && w.max_tokens[i] <= 4);
  }
  s.max_input = 2;
  EXPECT_THROW(make_workload(s), std::invalid_argument);
  EXPECT_THROW(make_workload(WorkloadSpec{.num_seqs = 0}), std::invalid_argument);
}

}  // namespace
}  // namespace nanovllm
