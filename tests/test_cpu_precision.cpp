// What the CPU backend's reduced-precision settings do to whole models, against references: the
// Hugging Face fixtures' greedy continuations (float64's paths, tests/fixtures/models) with a bf16
// KV cache, a bf16 checkpoint used in place (mapped from its file, the default bf16 cache) against
// transformers' float32 path, int8 weights against the float32 engine teacher-forced on the same
// path, and tensor-parallel ranks that each map only their slices of a bf16 checkpoint.
// Each test prints what it measured; the bounds are set below those measurements with margin
// (docs/cpu-backend.md, accuracy).
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "engine/numerics.h"
#include "hf_fixture.h"
#include "model/decoder_model.h"
#include "model/hf_config.h"
#include "model/safetensors.h"
#include "nanovllm/llm.h"

namespace nanovllm {
namespace {

int argmax(const float* row, int n) {
  int a = 0;
  for (int v = 1; v < n; ++v)
    if (row[v] > row[a]) a = v;
  return a;
}

EngineConfig config_for(const std::string& model) {
  EngineConfig c = fixtures::cpu_engine_config(16, 512, 512);
  c.max_num_seqs = 16;
  c.max_num_batched_tokens = 1024;
  c.model = fixtures::hf_fixture_dir(model);
  return c;
}

// Leading tokens equal to the reference's, summed over the prompts, and the tokens compared.
struct Agreement {
  int leading = 0, total = 0;
  double fraction() const { return total ? static_cast<double>(leading) / total : 0; }
};
Agreement greedy_agreement(const std::string& model, const EngineConfig& c) {
  const auto cases = fixtures::load_hf_fixture(model);
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& cs : cases) prompts.push_back(cs.ids);
  SamplingParams p = fixtures::greedy(static_cast<int>(cases[0].greedy.size()));
  const auto outs = LLM(c.model, c).generate(prompts, p, false);
  Agreement a;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& got = outs[i].outputs.at(0).token_ids;
    size_t k = 0;
    while (k < got.size() && k < cases[i].greedy.size() && got[k] == cases[i].greedy[k]) ++k;
    a.leading += static_cast<int>(k);
    a.total += static_cast<int>(cases[i].greedy.size());
  }
  return a;
}

// A bf16 KV cache on the float32 fixtures: K and V are rounded to bf16 as they are stored (8 bits
// of mantissa), the rest is float32. Random tiny models have near-ties (their logits' top two
// often within 1e-3), so a split is expected somewhere; most continuations stay equal throughout.
TEST(CpuPrecision, Bf16KvCacheFollowsHuggingFaceGreedy) {
  Agreement all;
  for (const std::string& model : fixtures::all_fixture_models()) {
    EngineConfig c = config_for(model);
    c.kv_cache_dtype = "bfloat16";
    const Agreement a = greedy_agreement(model, c);
    std::printf("  bf16 KV %-18s leading tokens equal %d / %d (%.3f)\n", model.c_str(), a.leading, a.total,
                a.fraction());
    EXPECT_GE(a.fraction(), 0.5) << model;
    all.leading += a.leading;
    all.total += a.total;
  }
  std::printf("  bf16 KV, all fixtures: %d / %d (%.3f)\n", all.leading, all.total, all.fraction());
  EXPECT_GE(all.fraction(), 0.85);
  // float32 (the same fixtures' exact equality is EngineVsHF's): the same harness gives 1.
  const Agreement f32 = greedy_agreement("tiny-tied", config_for("tiny-tied"));
  EXPECT_EQ(f32.leading, f32.total);
}

std::vector<NumericsCase> numerics_cases(const std::string& name, size_t max_prompt) {
  std::ifstream f(std::string(NANOVLLM_SOURCE_DIR) + "/tests/fixtures/numerics/" + name + ".json");
  const nlohmann::json j = nlohmann::json::parse(f);
  std::vector<NumericsCase> cases;
  for (const auto& c : j.at("cases"))
    if (c.at("ids").size() <= max_prompt)
      cases.push_back({c.at("ids").get<std::vector<int32_t>>(), c.at("path").get<std::vector<int32_t>>()});
  return cases;
}

struct PathScore {
  int same = 0, total = 0;
  double worst_rel = 0;  // the largest logit error over a row's range, against the reference rows
};
PathScore score(const std::vector<NumericsCase>& cases, const std::vector<std::vector<float>>& rows,
                const std::vector<std::vector<float>>* ref) {
  PathScore s;
  const int vocab = static_cast<int>(rows[0].size() / cases[0].path.size());
  for (size_t i = 0; i < cases.size(); ++i)
    for (size_t k = 0; k < cases[i].path.size(); ++k, ++s.total) {
      s.same += argmax(&rows[i][k * vocab], vocab) == cases[i].path[k];
      if (ref) s.worst_rel = std::max(s.worst_rel, row_error(&(*ref)[i][k * vocab], &rows[i][k * vocab], vocab).rel);
    }
  return s;
}

// The bf16 checkpoint as it ships: its weight matrices used where they lie in the mapped file
// (no copy), the KV cache bf16 by default, against transformers' float32 path; and the same
// weights with a float32 cache, whose logits the bf16 cache moves by little.
TEST(CpuPrecision, Bf16CheckpointInPlaceFollowsTheFloat32Path) {
  const std::string name = "tiny-tied-bf16";
  const std::string dir = fixtures::hf_fixture_dir(name);
  {
    const ModelConfig mc = load_model_config(dir);
    const Checkpoint ckpt = Checkpoint::open(dir);
    auto be = make_backend(DeviceKind::cpu, BackendOptions{.num_threads = 1});
    DecoderModel m(mc, ckpt, *be, 64, 4);
    EXPECT_EQ(m.checkpoint_dtype(), DType::bf16);
    EXPECT_EQ(m.weight_dtype(), DType::bf16);
    EXPECT_FALSE(m.folds_norms());
    // Every weight matrix but the fused q/k/v (three tensors apart in the file) is mapped.
    EXPECT_GT(m.mapped_bytes(), m.weight_bytes() / 2);
  }
  const auto cases = numerics_cases(name, 200);
  EngineConfig c = config_for(name);
  const auto bf16_kv = teacher_forced_logits(c, cases);  // kv_cache_dtype auto: bf16 here
  c.kv_cache_dtype = "float32";
  const auto f32_kv = teacher_forced_logits(c, cases);
  const PathScore s16 = score(cases, bf16_kv, &f32_kv), s32 = score(cases, f32_kv, nullptr);
  std::printf("  %s: argmax on the float32 path, bf16 KV %d / %d, float32 KV %d / %d; bf16 KV's logit error "
              "vs float32 KV <= %.2e of the row's range\n",
              name.c_str(), s16.same, s16.total, s32.same, s32.total, s16.worst_rel);
  EXPECT_GE(s32.same, s32.total - 1);
  EXPECT_GE(s16.same, s16.total * 97 / 100);
  EXPECT_LT(s16.worst_rel, 2e-2);
}

// Int8 weights (per output channel, quantized at load; activations per row at run time) against
// the float32 engine on the fixtures' float32 paths, teacher-forced.
TEST(CpuPrecision, Int8WeightsStayNearFloat32) {
  for (const std::string name : {"tiny-tied", "small-untied", "tiny-tied-bf16"}) {
    const auto cases = numerics_cases(name, 200);
    EngineConfig c = config_for(name);
    c.kv_cache_dtype = "float32";
    const auto ref = teacher_forced_logits(c, cases);
    c.quantization = "int8";
    const auto q = teacher_forced_logits(c, cases);
    const PathScore s = score(cases, q, &ref);
    std::printf("  int8 %-15s argmax on the float32 path %d / %d (%.3f); logit error <= %.2e of the row's range\n",
                name.c_str(), s.same, s.total, static_cast<double>(s.same) / s.total, s.worst_rel);
    EXPECT_GE(s.same, s.total * 9 / 10) << name;
    EXPECT_LT(s.worst_rel, 0.1) << name;
  }
}

// --quantization fp8 (each projection row quantized to e4m3 at load with scale max |w| / 448, a
// folded norm multiplied in first; the CPU keeps the dequantized weights in f32) against the same
// checkpoint's unquantized engine (bf16 or f32 weights), teacher-forced on the fixtures' float32 paths. Measured
// when it was added: argmax 568 / 672 (0.845) and 583 / 672 (0.868), logit error <= 0.105 and 0.095
// of the row's range. e4m3 keeps 3 mantissa bits (~3.6% RMS relative error a weight, several times
// per-channel int8's on these Gaussian weights), and the random fixtures are full of near ties.
TEST(CpuPrecision, Fp8WeightsStayNearUnquantized) {
  for (const std::string name : {"tiny-tied-bf16", "small-untied"}) {
    const auto cases = numerics_cases(name, 200);
    EngineConfig c = config_for(name);
    c.kv_cache_dtype = "float32";
    const auto ref = teacher_forced_logits(c, cases);
    c.quantization = "fp8";
    const auto q = teacher_forced_logits(c, cases);
    const PathScore s = score(cases, q, &ref);
    std::printf("  fp8 %-15s argmax on the float32 path vs unquantized %d / %d (%.3f); logit error <= %.2e of the "
                "row's range\n",
                name.c_str(), s.same, s.total, static_cast<double>(s.same) / s.total, s.worst_rel);
    EXPECT_GE(s.same, s.total * 8 / 10) << name;
    EXPECT_LT(s.worst_rel, 0.15) << name;
  }
}

// Tensor parallelism over a bf16 checkpoint: each rank maps its own slices (the lm-head's and
// embedding's rows, whole tensors where a rank has them all, copies where its slice is scattered)
// and the ranks together give one rank's greedy tokens.
TEST(CpuPrecision, TensorParallelRanksOfABf16CheckpointEqualOneRank) {
  const std::string name = "tiny-tied-bf16";
  const auto cases = numerics_cases(name, 40);
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& cs : cases) prompts.push_back(cs.prompt);
  auto run = [&](int world, const std::string& quant) {
    EngineConfig c = config_for(name);
    c.kv_cache_dtype = "float32";
    c.tensor_parallel_size = world;
    c.quantization = quant;
    return LLM(c.model, c).generate(prompts, fixtures::greedy(12), false);
  };
  for (const std::string quant : {"", "int8"}) {
    const auto one = run(1, quant), two = run(2, quant);
    int equal = 0, leading = 0, total = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      const auto &a = one[i].token_ids(), &b = two[i].token_ids();
      equal += a == b;
      size_t k = 0;
      while (k < a.size() && k < b.size() && a[k] == b[k]) ++k;
      leading += static_cast<int>(k);
      total += static_cast<int>(a.size());
    }
    std::printf("  tp 2 vs 1 (%s): %d / %zu continuations equal, leading tokens %d / %d\n",
                quant.empty() ? "bf16" : "int8", equal, prompts.size(), leading, total);
    // bf16: the same exact weights, float32 sums in another order. int8: a row-parallel rank
    // quantizes its own columns (its own scales), so near-ties split, as against float32.
    if (quant.empty()) EXPECT_EQ(equal, static_cast<int>(prompts.size()));
    else EXPECT_GE(leading, total / 2);
  }
}

}  // namespace
}  // namespace nanovllm
