// Tensor parallelism on the CPU backend (ranks are processes, collectives through shared
// memory), the path CI can run: the shard arithmetic and its errors, the collectives, the engine
// at 2 and 4 ranks against Hugging Face's greedy tokens and against one rank's logprobs (with
// chunked prefill, prefix-cache hits, preemption), a worker killed mid-run, a worker that cannot
// start, and the TCP rendezvous between two processes.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/shm_group.h"
#include "engine/llm_engine.h"
#include "hf_fixture.h"
#include "model/decoder_model.h"
#include "model/hf_config.h"
#include "model/random_model.h"
#include "nanovllm/llm.h"
#include "util/rendezvous.h"

namespace nanovllm {
namespace {

// ---- how a model splits ----

ModelConfig config_with(int heads, int kv_heads, int intermediate, int vocab) {
  ModelConfig c;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.intermediate_size = intermediate;
  c.vocab_size = vocab;
  return c;
}

TEST(TensorParallelShards, SplitsHeadsMlpAndVocabulary) {
  const ModelConfig c = config_with(16, 8, 3072, 151936);
  const ShardDims d = shard_dims(c, {1, 4});
  EXPECT_EQ(d.q_heads, 4);
  EXPECT_EQ(d.first_q_head, 4);
  EXPECT_EQ(d.kv_heads, 2);
  EXPECT_EQ(d.first_kv_head, 2);
  EXPECT_EQ(d.intermediate, 768);
  EXPECT_EQ(d.first_intermediate, 768);
  EXPECT_EQ(d.vocab_rows, 37984);
  EXPECT_EQ(d.vocab_start, 37984);
  EXPECT_EQ(d.vocab_real, 37984);
  // An uneven vocabulary: the last shard is padded.
  const ShardDims last = shard_dims(config_with(4, 2, 256, 1001), {3, 4});
  EXPECT_EQ(last.vocab_rows, 251);
  EXPECT_EQ(last.vocab_start, 753);
  EXPECT_EQ(last.vocab_real, 248);
}

TEST(TensorParallelShards, ReplicatesKvHeadsWhenRanksOutnumberThem) {
  const ModelConfig c = config_with(8, 2, 64, 100);
  for (int r = 0; r < 8; ++r) {
    const ShardDims d = shard_dims(c, {r, 8});
    EXPECT_EQ(d.q_heads, 1);
    EXPECT_EQ(d.kv_heads, 1);
    EXPECT_EQ(d.first_kv_head, r / 4) << "rank " << r;  // q head r reads kv head r / (8 / 2)
  }
}

TEST(TensorParallelShards, UnevenSplitsNameTheField) {
  auto message = [](const ModelConfig& c, int world) {
    try {
      shard_dims(c, {0, world});
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(config_with(14, 2, 64, 100), 4).find("num_attention_heads (14)"), std::string::npos);
  EXPECT_NE(message(config_with(12, 3, 64, 100), 2).find("num_key_value_heads (3)"), std::string::npos);
  EXPECT_NE(message(config_with(8, 8, 100, 100), 8).find("intermediate_size (100)"), std::string::npos);
}

// ---- the collectives, across processes ----

// Runs `body(rank)` in world - 1 child processes and in this one as rank 0; a child's failure
// is its exit status.
template <class F>
void in_processes(int world, F body) {
  std::vector<pid_t> kids;
  for (int r = 1; r < world; ++r) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int code = 1;
      try {
        code = body(r) ? 0 : 1;
      } catch (...) {
        code = 2;
      }
      _exit(code);
    }
    kids.push_back(pid);
  }
  EXPECT_TRUE(body(0));
  for (pid_t pid : kids) {
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "rank process status " << status;
  }
}

float value_at(int rank, int64_t i) { return std::sin(0.37f * static_cast<float>(i) + rank) * (rank + 1); }

TEST(TensorParallelCollectives, AllReduceAndGatherGiveEveryRankTheSameBits) {
  constexpr int kWorld = 3;
  constexpr int64_t kN = 300000;  // more than one 1 MiB slot: the chunked path
  ShmGroup created = ShmGroup::create(kWorld);
  const std::string id = created.id();
  in_processes(kWorld, [&](int rank) {
    ShmGroup own = rank == 0 ? std::move(created) : ShmGroup::open(id);
    own.join(rank, kWorld);
    std::vector<float> x(kN);
    for (int64_t i = 0; i < kN; ++i) x[i] = value_at(rank, i);
    Tensor t(x.data(), DType::f32, {kN});
    own.all_reduce(t);
    for (int64_t i = 0; i < kN; ++i) {
      const float want = (value_at(0, i) + value_at(1, i)) + value_at(2, i);  // rank order, as the group sums
      if (x[i] != want) return false;
    }
    std::vector<float> mine(1000), all(kWorld * 1000);
    for (int i = 0; i < 1000; ++i) mine[i] = static_cast<float>(rank * 1000 + i);
    own.gather(mine.data(), rank == 0 ? all.data() : nullptr, mine.size() * sizeof(float));
    if (rank == 0)
      for (int i = 0; i < kWorld * 1000; ++i)
        if (all[i] != static_cast<float>(i)) return false;
    own.barrier();
    return true;
  });
}

TEST(TensorParallelCollectives, AbortWakesAWaitingRank) {
  ShmGroup g = ShmGroup::create(2);
  const std::string id = g.id();
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // rank 1 joins, then never comes to the barrier
    ShmGroup mine = ShmGroup::open(id);
    mine.join(1, 2);
    pause();
    _exit(0);
  }
  g.join(0, 2);
  std::thread aborter([&g] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    g.abort("rank 1 died");
  });
  EXPECT_THROW(
      {
        try {
          g.barrier();
        } catch (const std::runtime_error& e) {
          EXPECT_STREQ(e.what(), "rank 1 died");
          throw;
        }
      },
      std::runtime_error);
  aborter.join();
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

// ---- the engine ----

using Case = fixtures::HfPrompt;

EngineConfig tp_config(int world) {
  EngineConfig c = fixtures::cpu_engine_config(16, 256, 256);
  c.max_num_batched_tokens = 1024;
  c.max_num_seqs = 16;
  c.tensor_parallel_size = world;
  return c;
}

std::vector<std::vector<int32_t>> prompts_of(const std::vector<Case>& cases) {
  std::vector<std::vector<int32_t>> v;
  for (const Case& c : cases) v.push_back(c.ids);
  return v;
}

void expect_greedy(const std::vector<Case>& cases, const std::vector<RequestOutput>& outs, const std::string& what) {
  ASSERT_EQ(outs.size(), cases.size()) << what;
  for (size_t i = 0; i < cases.size(); ++i)
    EXPECT_EQ(outs[i].token_ids(), cases[i].greedy) << what << ", prompt " << i;
}

struct TpCase {
  std::string model;
  int world;
};

class TensorParallelVsHF : public ::testing::TestWithParam<TpCase> {};

// Every family at 2 ranks (kv heads split, or replicated where the model has one) and 4 (every
// fixture's kv heads replicated): Hugging Face's greedy tokens, batched.
TEST_P(TensorParallelVsHF, GreedyEqualsHuggingFace) {
  const auto cases = fixtures::load_hf_fixture(GetParam().model);
  LLM llm(fixtures::hf_fixture_dir(GetParam().model), tp_config(GetParam().world));
  expect_greedy(cases, llm.generate(prompts_of(cases), fixtures::greedy(static_cast<int>(cases[0].greedy.size())), false),
                "tp " + std::to_string(GetParam().world));
  EXPECT_EQ(llm.stats().num_free_blocks, llm.stats().num_kvcache_blocks);
}

std::vector<TpCase> tp_cases() {
  std::vector<TpCase> v;
  for (const std::string& m : fixtures::all_fixture_models())
    for (int world : {2, 4}) v.push_back({m, world});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TensorParallelVsHF, ::testing::ValuesIn(tp_cases()), [](const auto& info) {
  return fixtures::param_name(info.param.model) + "_tp" + std::to_string(info.param.world);
});

// Chunked prefill, preemption and prefix-cache hits at 2 ranks on a Qwen3 and a Gemma 3 fixture
// (its sandwich norms all-reduce another way).
TEST(TensorParallel, ChunkedPrefillPreemptionAndPrefixHits) {
  for (const std::string model : {"tiny-tied", "gemma3-window"}) {
    const auto cases = fixtures::load_hf_fixture(model);
    EngineConfig c = tp_config(2);
    c.max_num_batched_tokens = 40;
    c.kvcache_block_size = 4;
    c.num_kvcache_blocks = 66;
    c.max_num_seqs = 12;
    const SamplingParams greedy = fixtures::greedy(static_cast<int>(cases[0].greedy.size()));
    {
      LLM llm(fixtures::hf_fixture_dir(model), c);
      expect_greedy(cases, llm.generate(prompts_of(cases), greedy, false), model + " chunked + preempted");
      if (cases.size() >= 12) EXPECT_GT(llm.stats().num_preemptions, 0) << model;
    }
    c.num_kvcache_blocks = 1024;  // room to keep the first run's blocks cached
    LLM llm(fixtures::hf_fixture_dir(model), c);
    expect_greedy(cases, llm.generate(prompts_of(cases), greedy, false), model + " first");
    const int64_t hits = llm.stats().prefix_cache_hits;
    expect_greedy(cases, llm.generate(prompts_of(cases), greedy, false), model + " again, from the prefix cache");
    EXPECT_GT(llm.stats().prefix_cache_hits, hits) << model;
  }
}

// The logits themselves: prompt logprobs (every position's row through the gathered lm-head) and
// sampled tokens' logprobs at 2 and 4 ranks equal one rank's to float32 rounding.
TEST(TensorParallel, LogprobsEqualOneRanks) {
  const std::string model = "small-untied";  // an untied lm-head, 3 layers, one kv head (replicated)
  const auto cases = fixtures::load_hf_fixture(model);
  SamplingParams p = fixtures::greedy(6);
  p.logprobs = 5;
  p.prompt_logprobs = 3;
  std::vector<std::vector<int32_t>> prompts = prompts_of(cases);
  prompts.resize(4);
  auto run = [&](int world) { return LLM(fixtures::hf_fixture_dir(model), tp_config(world)).generate(prompts, p, false); };
  const auto one = run(1);
  for (int world : {2, 4}) {
    const auto tp = run(world);
    double worst = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      ASSERT_EQ(tp[i].token_ids(), one[i].token_ids()) << "tp " << world;
      ASSERT_EQ(tp[i].prompt_logprobs.size(), one[i].prompt_logprobs.size());
      auto compare = [&](const PositionLogprobs& a, const PositionLogprobs& b) {
        EXPECT_EQ(a.token_id, b.token_id);
        worst = std::max(worst, std::abs(static_cast<double>(a.logprob) - b.logprob));
        ASSERT_EQ(a.top.size(), b.top.size());
        for (size_t k = 0; k < a.top.size(); ++k) {
          EXPECT_EQ(a.top[k].token_id, b.top[k].token_id);
          worst = std::max(worst, std::abs(static_cast<double>(a.top[k].logprob) - b.top[k].logprob));
        }
      };
      for (size_t k = 0; k < tp[i].prompt_logprobs.size(); ++k) compare(tp[i].prompt_logprobs[k], one[i].prompt_logprobs[k]);
      const auto& a = tp[i].outputs.at(0).logprobs;
      const auto& b = one[i].outputs.at(0).logprobs;
      ASSERT_EQ(a.size(), b.size());
      for (size_t k = 0; k < a.size(); ++k) compare(a[k], b[k]);
    }
    EXPECT_LT(worst, 2e-5) << "tp " << world;
  }
}

// An uneven vocabulary over the ranks (1001 = 334 + 334 + 333: the last shard is padded) and an
// untied lm-head, at 1 and 3 ranks, greedy with logprobs, in float32 weights.
TEST(TensorParallel, UnevenVocabularyOverThreeRanks) {
  const std::string dir = ::testing::TempDir() + "/tp-uneven-" + std::to_string(getpid());
  RandomModelSpec spec;
  spec.hidden_size = 96;
  spec.intermediate_size = 192;
  spec.num_heads = 6;
  spec.num_kv_heads = 3;
  spec.head_dim = 16;
  spec.num_layers = 2;
  spec.vocab_size = 1001;
  spec.tie_word_embeddings = false;
  spec.dtype = DType::f32;
  spec.bos_token_id = 1;
  spec.eos_token_ids = {2};
  write_random_model(spec, dir);
  std::vector<std::vector<int32_t>> prompts = {{1, 3, 4}, {1000, 999, 5, 7, 334, 333, 667, 668}, {500}};
  SamplingParams p = fixtures::greedy(12);
  p.logprobs = 2;
  const auto one = LLM(dir, tp_config(1)).generate(prompts, p, false);
  const auto three = LLM(dir, tp_config(3)).generate(prompts, p, false);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(three[i].token_ids(), one[i].token_ids()) << "prompt " << i;
    ASSERT_EQ(three[i].outputs[0].logprobs.size(), one[i].outputs[0].logprobs.size());
    for (size_t k = 0; k < one[i].outputs[0].logprobs.size(); ++k)
      EXPECT_NEAR(three[i].outputs[0].logprobs[k].logprob, one[i].outputs[0].logprobs[k].logprob, 2e-5);
  }
  std::filesystem::remove_all(dir);
}

TEST(TensorParallel, SplitTheModelCannotTakeIsAClearError) {
  // tiny-tied has 4 attention heads: 3 ranks cannot split them.
  try {
    LLM llm(fixtures::hf_fixture_dir("tiny-tied"), tp_config(3));
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("num_attention_heads (4)"), std::string::npos) << e.what();
  }
}

EngineConfig tp_engine_config(const std::string& model, int world) {
  EngineConfig c = tp_config(world);
  c.model = fixtures::hf_fixture_dir(model);
  return c;
}

TEST(TensorParallel, AKilledWorkerEndsTheEngineWithAClearError) {
  LLMEngine engine(tp_engine_config("tiny-tied", 2));
  const std::vector<int> pids = engine.worker_pids();
  ASSERT_EQ(pids.size(), 1u);
  const std::vector<std::vector<int32_t>> prompt = {{5, 6, 7}};
  ASSERT_EQ(engine.generate(prompt, {fixtures::greedy(4)}, false).at(0).token_ids().size(), 4u);
  ASSERT_EQ(kill(pids[0], SIGKILL), 0);
  const auto start = std::chrono::steady_clock::now();
  try {
    engine.generate(prompt, {fixtures::greedy(64)}, false);
    FAIL() << "generate went on without rank 1";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("tensor-parallel rank 1 (pid " + std::to_string(pids[0]) + ")"), std::string::npos) << what;
    EXPECT_NE(what.find("killed by signal 9"), std::string::npos) << what;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  // The engine stays failed, saying why, rather than hanging.
  EXPECT_THROW(engine.generate(prompt, {fixtures::greedy(4)}, false), std::runtime_error);
}

TEST(TensorParallel, AWorkerThatCannotStartIsAClearError) {
  setenv("NANOVLLM_WORKER", "/bin/false", 1);
  try {
    LLMEngine engine(tp_engine_config("tiny-tied", 2));
    FAIL() << "the engine started without its worker";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("exited with status 1"), std::string::npos) << e.what();
  }
  setenv("NANOVLLM_WORKER", "/nonexistent/nanovllm", 1);
  try {
    LLMEngine engine(tp_engine_config("tiny-tied", 2));
    FAIL() << "the engine started without its worker";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("NANOVLLM_WORKER=/nonexistent/nanovllm is not an executable"),
              std::string::npos)
        << e.what();
  }
  unsetenv("NANOVLLM_WORKER");
}

// ---- the rendezvous (what joins hosts): two processes through 127.0.0.1 ----

int free_port() {
  // The kernel's pick of an ephemeral port, released for the test to bind.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t n = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  close(fd);
  return ntohs(a.sin_port);
}

TEST(Rendezvous, TwoProcessesFormAGroupThroughLoopback) {
  const int port = free_port();
  const std::string id(256, 'x');
  in_processes(3, [&](int rank) {
    RendezvousSpec s{.master_addr = "127.0.0.1", .master_port = port, .world_size = 3, .rank = rank, .timeout_s = 30};
    if (rank == 2) std::this_thread::sleep_for(std::chrono::milliseconds(200));  // a late joiner
    return rendezvous(s, rank == 0 ? "group-id:" + id : "") == "group-id:" + id;
  });
}

TEST(Rendezvous, AMismatchedWorldSizeIsRefusedByName) {
  const int port = free_port();
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    try {
      rendezvous({.master_addr = "127.0.0.1", .master_port = port, .world_size = 3, .rank = 1, .timeout_s = 20}, "");
    } catch (const std::runtime_error& e) {
      _exit(std::string(e.what()).find("refused: world size 3, rank 0 has 2") != std::string::npos ? 0 : 1);
    }
    _exit(2);
  }
  try {
    rendezvous({.master_addr = "127.0.0.1", .master_port = port, .world_size = 2, .rank = 0, .timeout_s = 20}, "id");
    ADD_FAILURE() << "a group of mismatched sizes formed";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("world size 3, rank 0 has 2"), std::string::npos) << e.what();
  }
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(Rendezvous, NoPeerTimesOut) {
  const int port = free_port();
  const auto start = std::chrono::steady_clock::now();
  try {
    rendezvous({.master_addr = "127.0.0.1", .master_port = port, .world_size = 2, .rank = 0, .timeout_s = 0.5}, "id");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  try {
    rendezvous({.master_addr = "127.0.0.1", .master_port = port, .world_size = 2, .rank = 1, .timeout_s = 0.3}, "");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot connect"), std::string::npos) << e.what();
  }
}

TEST(Rendezvous, MultiNodeEngineSaysWhatIsMissing) {
  EngineConfig c = tp_engine_config("tiny-tied", 1);
  c.nnodes = 2;
  try {
    LLM llm(c.model, c);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("across hosts is not built yet"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace nanovllm
