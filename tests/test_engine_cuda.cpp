// The engine on the CUDA backend (bf16) against the Hugging Face fixtures: KV sizing from free
// memory, decode through captured CUDA graphs (batches padded to a captured size) and eagerly,
// chunked prefill and preemption, tensor parallel on two GPUs. bf16 rounding may flip a near tie, so a continuation must
// follow HF's greedy path until a step whose float64 top-2 margin is small (then it may part).
// Skips without a usable GPU.
#include <gtest/gtest.h>

#include <algorithm>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "hf_fixture.h"
#include "nanovllm/llm.h"

namespace nanovllm {
namespace {

constexpr double kNearTie = 0.1;  // logit margin under which bf16 may pick the runner-up

using Case = fixtures::HfPrompt;
const auto& model_dir = fixtures::hf_fixture_dir;
const auto& load_cases = fixtures::load_hf_fixture;

// Returns how many leading tokens match; fails when they part at a step that is not a near tie.
size_t expect_follows_hf(const Case& c, const std::vector<int32_t>& got, const std::string& what) {
  EXPECT_EQ(got.size(), c.greedy.size()) << what;
  size_t k = 0;
  while (k < got.size() && k < c.greedy.size() && got[k] == c.greedy[k]) ++k;
  if (k < got.size() && k < c.greedy.size())
    EXPECT_LT(c.margins[k], kNearTie) << what << ": parted from HF at step " << k << " (HF " << c.greedy[k]
                                      << ", got " << got[k] << ") where HF's margin is " << c.margins[k];
  return k;
}

class EngineCuda : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda_available(&why)) GTEST_SKIP() << "engine CUDA tests skipped: " << why;
  }
  EngineConfig config() const {
    EngineConfig c;
    c.device = DeviceKind::cuda;
    c.kvcache_block_size = 16;
    c.max_model_len = 256;
    c.max_num_seqs = 16;
    c.max_num_batched_tokens = 2048;
    c.gpu_memory_utilization = 0.3f;  // sized from memory: exercises the warm-up rule
    return c;
  }
  // profile: the generate inside LLM::start_profile / stop_profile (no profiler attached, so the
  // range is opened and closed for nothing) must leave the tokens as they are.
  void run_all(const EngineConfig& c, const std::string& what, EngineStats* stats = nullptr, bool profile = false) {
    auto cases = load_cases(GetParam());
    LLM llm(model_dir(GetParam()), c);
    std::vector<std::vector<int32_t>> prompts;
    for (const Case& cs : cases) prompts.push_back(cs.ids);
    SamplingParams p;
    p.temperature = 0;
    p.max_tokens = static_cast<int>(cases[0].greedy.size());
    p.ignore_eos = true;
    if (profile) llm.start_profile();
    auto outs = llm.generate(prompts, p, false);
    if (profile) llm.stop_profile();
    ASSERT_EQ(outs.size(), cases.size());
    size_t matched = 0, floor = 0;
    for (size_t i = 0; i < cases.size(); ++i) {
      matched += expect_follows_hf(cases[i], outs[i].token_ids(), what + ", prompt " + std::to_string(i));
      // Every token before a prompt's first near tie must match. (Random fixtures have near ties
      // early: qwen2-tied's 7 prompts meet their first at steps 2-23, so a fixed share of matched
      // tokens would hold some fixtures to luck and others to nothing.)
      const auto& m = cases[i].margins;
      floor += std::find_if(m.begin(), m.end(), [](double x) { return x < kNearTie; }) - m.begin();
    }
    EXPECT_GE(matched, floor) << what;
    if (stats) *stats = llm.stats();
  }
};

TEST_P(EngineCuda, GraphsAndMemorySizedCache) {
  EngineStats s;
  run_all(config(), "graphs", &s, true);
  EXPECT_GT(s.num_kvcache_blocks, 16);
  EXPECT_GT(s.kvcache_bytes, 0);
  EXPECT_GT(s.peak_device_bytes, 0);
  EXPECT_NE(s.device, "cpu");
  EXPECT_EQ(s.num_free_blocks, s.num_kvcache_blocks);
}

TEST_P(EngineCuda, Eager) {
  EngineConfig c = config();
  c.enforce_eager = true;
  run_all(c, "eager");
}

TEST_P(EngineCuda, ChunkedPrefillAndPreemption) {
  EngineConfig c = config();
  c.kvcache_block_size = 4;
  c.num_kvcache_blocks = 66;
  c.max_num_batched_tokens = 40;
  c.max_num_seqs = 12;
  EngineStats s;
  run_all(c, "chunked + preempted", &s);
  if (load_cases(GetParam()).size() >= 12) EXPECT_GT(s.num_preemptions, 0);  // the Qwen3 fixtures' 12 prompts overflow
}

// Tensor parallelism over two GPUs (NCCL, one process a GPU, decode graphs holding the
// collectives): the same criterion against HF. Skips on one GPU (scripts/multi_gpu.sh runs it).
TEST_P(EngineCuda, TensorParallelTwoGpus) {
  if (cuda_device_count() < 2) GTEST_SKIP() << "needs 2 GPUs, " << cuda_device_count() << " visible";
  EngineConfig c = config();
  c.tensor_parallel_size = 2;
  EngineStats s;
  run_all(c, "tp 2, graphs", &s);
  EXPECT_EQ(s.num_free_blocks, s.num_kvcache_blocks);
  c.enforce_eager = true;
  c.kvcache_block_size = 4;
  c.num_kvcache_blocks = 66;
  c.max_num_batched_tokens = 40;
  c.max_num_seqs = 12;
  run_all(c, "tp 2, eager, chunked + preempted");
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EngineCuda, ::testing::ValuesIn(fixtures::all_fixture_models()),
                         [](const auto& info) { return fixtures::param_name(info.param); });

}  // namespace
}  // namespace nanovllm
