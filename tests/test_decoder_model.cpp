// DecoderModel end to end against Hugging Face: tests/fixtures/models/<name>/expected.json holds the
// float64 transformers reference (last-position top-8 logits and 16 greedy tokens per prompt).
// The forward is driven by hand here (no engine): KV cache, block tables and metadata built below.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <tuple>

#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_backend.h"
#include "hf_fixture.h"
#include "model/decoder_model.h"
#include "model/random_model.h"

namespace nanovllm {
namespace {
namespace fs = std::filesystem;

using Prompt = fixtures::HfPrompt;


// Owns a model and a KV cache on the CPU backend, and runs batched forwards over sequences whose
// blocks are handed out from a shuffled pool (so block tables are not the identity).
class Harness {
 public:
  Harness(const fs::path& dir, int block_size, int num_blocks, int max_tokens, int max_seqs, uint32_t seed = 0)
      : cfg_(load_model_config(dir)), ckpt_(Checkpoint::open(dir)), be_(make_cpu_backend({.num_threads = 2})),
        model_(cfg_, ckpt_, *be_, max_tokens, max_seqs), bs_(block_size) {
    kv_.num_blocks = num_blocks;
    kv_.block_size = block_size;
    for (int l = 0; l < cfg_.num_hidden_layers; ++l) {
      kv_.k.push_back(be_->alloc_tensor(DType::f32, {num_blocks, block_size, cfg_.num_key_value_heads, cfg_.head_dim}, bufs_));
      kv_.v.push_back(be_->alloc_tensor(DType::f32, {num_blocks, block_size, cfg_.num_key_value_heads, cfg_.head_dim}, bufs_));
    }
    pool_.resize(num_blocks);
    std::iota(pool_.begin(), pool_.end(), 0);
    if (seed) std::shuffle(pool_.begin(), pool_.end(), std::mt19937(seed));
    logits_buf_.resize(size_t(max_seqs) * cfg_.vocab_size);
  }

  struct Seq {
    std::vector<int32_t> tokens;  // everything so far
    int computed = 0;             // tokens whose K/V are in the cache
    std::vector<int32_t> blocks;
  };

  // One forward: sequence s gets its tokens [computed, computed + n[s]) computed; returns the
  // logits of each sequence's last new token [num_seqs, vocab].
  const std::vector<float>& step(std::vector<Seq*> seqs, const std::vector<int>& n) {
    std::vector<int32_t> ids, pos, slots, cu = {0}, klen, last;
    int max_blocks = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      Seq& s = *seqs[i];
      const int end = s.computed + n[i];
      while (static_cast<int>(s.blocks.size()) * bs_ < end) s.blocks.push_back(pool_.at(next_block_++));
      max_blocks = std::max<int>(max_blocks, s.blocks.size());
      for (int p = s.computed; p < end; ++p) {
        ids.push_back(s.tokens[p]);
        pos.push_back(p);
        slots.push_back(s.blocks[p / bs_] * bs_ + p % bs_);
      }
      cu.push_back(cu.back() + n[i]);
      klen.push_back(end);
      last.push_back(cu.back() - 1);
      s.computed = end;
    }
    std::vector<int32_t> tables(seqs.size() * max_blocks, -1);
    for (size_t i = 0; i < seqs.size(); ++i)
      std::copy(seqs[i]->blocks.begin(), seqs[i]->blocks.end(), tables.begin() + i * max_blocks);
    ForwardInputs in;
    const int64_t T = ids.size(), B = seqs.size();
    in.input_ids = Tensor(ids.data(), DType::i32, {T});
    in.positions = Tensor(pos.data(), DType::i32, {T});
    in.last_token_indices = Tensor(last.data(), DType::i32, {B});
    in.meta.is_prefill = *std::max_element(n.begin(), n.end()) > 1 || seqs[0]->computed == n[0];
    in.meta.num_seqs = B;
    in.meta.num_tokens = T;
    in.meta.max_seqlen_q = *std::max_element(n.begin(), n.end());
    in.meta.max_seqlen_k = *std::max_element(klen.begin(), klen.end());
    in.meta.cu_seqlens_q = cu.data();
    in.meta.seqlens_k = klen.data();
    in.meta.slot_mapping = slots.data();
    in.meta.block_tables = tables.data();
    in.meta.max_num_blocks = max_blocks;
    Tensor logits(logits_buf_.data(), DType::f32, {B, cfg_.vocab_size});
    model_.forward(in, kv_, logits);
    return logits_buf_;
  }

  int vocab() const { return cfg_.vocab_size; }
  const ModelConfig& config() const { return cfg_; }
  DecoderModel& model() { return model_; }

 private:
  ModelConfig cfg_;
  Checkpoint ckpt_;
  std::unique_ptr<Backend> be_;
  DecoderModel model_;
  int bs_;
  KVCache kv_;
  std::vector<DeviceBuffer> bufs_;
  std::vector<int32_t> pool_;
  size_t next_block_ = 0;
  std::vector<float> logits_buf_;
};

int argmax(const float* row, int V) { return static_cast<int>(std::max_element(row, row + V) - row); }

const fs::path kFixtures = fs::path(NANOVLLM_SOURCE_DIR) / "tests/fixtures/models";

class ModelVsHuggingFace : public ::testing::TestWithParam<std::string> {};

// Each prompt alone: prefill, compare the last logits, then 16 greedy decode steps.
TEST_P(ModelVsHuggingFace, EachPromptAloneLogitsAndGreedy) {
  const fs::path dir = kFixtures / GetParam();
  const auto prompts = fixtures::load_hf_fixture(GetParam());
  ASSERT_FALSE(prompts.empty());
  for (const auto& p : prompts) {
    const int L = static_cast<int>(p.ids.size());
    Harness h(dir, 16, (L + static_cast<int>(p.greedy.size())) / 16 + 2, L, 1);
    const int V = h.vocab();
    Harness::Seq s{p.ids, 0, {}};
    const float* logits = h.step({&s}, {L}).data();
    for (auto [id, ref] : p.top)
      EXPECT_NEAR(logits[id], ref, 1e-3 * std::max(1.0, std::abs(ref))) << GetParam() << " prompt length " << L << " id " << id;
    EXPECT_EQ(argmax(logits, V), p.top[0].first);
    // The whole row, where the fixture holds it: float32 against transformers' float64.
    for (size_t id = 0; id < p.last_logits.size(); ++id)
      ASSERT_NEAR(logits[id], p.last_logits[id], 1e-3 * std::max(1.0, std::abs(p.last_logits[id])))
          << GetParam() << " prompt length " << L << " id " << id;
    std::vector<int32_t> got;
    for (size_t k = 0; k < p.greedy.size(); ++k) {
      const int next = argmax(logits, V);
      got.push_back(next);
      if (k + 1 == p.greedy.size()) break;
      s.tokens.push_back(next);
      logits = h.step({&s}, {1}).data();
    }
    EXPECT_EQ(got, p.greedy) << GetParam() << " prompt length " << L;
  }
}

// All prompts in one batch, as an engine runs them: prefill in two chunks (the second attends to
// the first through the cache), odd block size, shuffled blocks, then batched decode.
TEST_P(ModelVsHuggingFace, BatchedChunkedPrefillThenBatchedDecode) {
  const fs::path dir = kFixtures / GetParam();
  const auto prompts = fixtures::load_hf_fixture(GetParam());
  int total = 0, blocks = 0;
  const int bs = 7;
  for (const auto& p : prompts) {
    total += p.ids.size();
    blocks += (p.ids.size() + p.greedy.size() + bs - 1) / bs;
  }
  Harness h(dir, bs, blocks, total, prompts.size(), /*seed=*/5);
  const int V = h.vocab();
  std::vector<Harness::Seq> seqs;
  for (const auto& p : prompts) seqs.push_back({p.ids, 0, {}});
  std::vector<Harness::Seq*> ptrs;
  for (auto& s : seqs) ptrs.push_back(&s);

  std::vector<int> first, rest;
  for (const auto& p : prompts) {
    const int L = p.ids.size();
    first.push_back(std::max(1, L / 2));
    rest.push_back(L - std::max(1, L / 2));
  }
  std::vector<std::vector<float>> cur(prompts.size());
  const auto& l1 = h.step(ptrs, first);
  for (size_t i = 0; i < prompts.size(); ++i)
    if (rest[i] == 0) cur[i].assign(l1.begin() + i * V, l1.begin() + (i + 1) * V);
  std::vector<Harness::Seq*> sub;
  std::vector<int> sub_n, sub_idx;
  for (size_t i = 0; i < prompts.size(); ++i)
    if (rest[i] > 0) sub.push_back(ptrs[i]), sub_n.push_back(rest[i]), sub_idx.push_back(i);
  const auto& l2 = h.step(sub, sub_n);
  for (size_t k = 0; k < sub.size(); ++k) cur[sub_idx[k]].assign(l2.begin() + k * V, l2.begin() + (k + 1) * V);

  for (size_t i = 0; i < prompts.size(); ++i)
    for (auto [id, ref] : prompts[i].top)
      EXPECT_NEAR(cur[i][id], ref, 1e-3 * std::max(1.0, std::abs(ref))) << "prompt " << i << " id " << id;

  const size_t steps = prompts[0].greedy.size();
  std::vector<std::vector<int32_t>> got(prompts.size());
  for (size_t k = 0; k < steps; ++k) {
    for (size_t i = 0; i < prompts.size(); ++i) {
      got[i].push_back(argmax(cur[i].data(), V));
      seqs[i].tokens.push_back(got[i].back());
    }
    if (k + 1 == steps) break;
    const auto& l = h.step(ptrs, std::vector<int>(prompts.size(), 1));
    for (size_t i = 0; i < prompts.size(); ++i) cur[i].assign(l.begin() + i * V, l.begin() + (i + 1) * V);
  }
  for (size_t i = 0; i < prompts.size(); ++i)
    EXPECT_EQ(got[i], prompts[i].greedy) << GetParam() << " prompt " << i << " (length " << prompts[i].ids.size() << ")";
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelVsHuggingFace, ::testing::ValuesIn(fixtures::all_fixture_models()),
                         [](const auto& info) { return fixtures::param_name(info.param); });

}  // namespace
}  // namespace nanovllm

namespace nanovllm {
namespace {

class RandomModel : public ::testing::Test {
 protected:
  fs::path dir;
  void SetUp() override {
    dir = fs::temp_directory_path() / ("nanovllm_rm_" + std::to_string(::getpid()) + "_" +
                                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
  }
  void TearDown() override { fs::remove_all(dir); }
  static RandomModelSpec small() {
    RandomModelSpec s;
    s.vocab_size = 300;
    s.bos_token_id = 1;
    s.eos_token_ids = {2};
    s.max_position_embeddings = 128;
    return s;
  }
  static std::string read(const fs::path& f) {
    std::ifstream in(f, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::string model_error(const ModelConfig& c) {
    auto be = make_cpu_backend({.num_threads = 1});
    try {
      DecoderModel m(c, Checkpoint::open(dir), *be, 8, 1);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "(no error)";
  }
};

TEST_F(RandomModel, DeterministicLoadableAndScaled) {
  RandomModelSpec s = small();
  s.seed = 7;
  write_random_model(s, dir / "a");
  write_random_model(s, dir / "b");
  s.seed = 8;
  write_random_model(s, dir / "c");
  EXPECT_EQ(read(dir / "a/model.safetensors"), read(dir / "b/model.safetensors"));
  EXPECT_NE(read(dir / "a/model.safetensors"), read(dir / "c/model.safetensors"));

  ModelConfig c = load_model_config(dir / "a");
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.vocab_size, 300);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_EQ(c.eos_token_ids, std::vector<int>{2});
  Checkpoint ck = Checkpoint::open(dir / "a");
  EXPECT_FALSE(ck.contains("lm_head.weight"));
  // Weights: matrices ~N(0, 0.02), norms ~1 + N(0, 0.05), in bf16.
  auto be = make_cpu_backend({.num_threads = 1});
  auto stats = [&](const std::string& name) {
    Tensor t = ck.get(name);
    EXPECT_EQ(t.dtype, DType::bf16);
    std::vector<float> v(t.numel());
    Tensor f(v.data(), DType::f32, {t.numel()});
    be->upload_convert(t, f);
    double m = 0, sq = 0;
    for (float x : v) m += x, sq += double(x) * x;
    m /= v.size();
    return std::pair<double, double>(m, std::sqrt(sq / v.size() - m * m));
  };
  auto [em, es] = stats("model.embed_tokens.weight");
  EXPECT_NEAR(em, 0.0, 0.002);
  EXPECT_NEAR(es, 0.02, 0.002);
  auto [nm, ns] = stats("model.layers.1.post_attention_layernorm.weight");
  EXPECT_NEAR(nm, 1.0, 0.03);
  EXPECT_NEAR(ns, 0.05, 0.02);

  // The model runs on it: a prompt's logits are finite and not all equal.
  DecoderModel m(c, ck, *be, 16, 1);
  KVCache kv;
  kv.num_blocks = 2;
  kv.block_size = 8;
  std::vector<DeviceBuffer> bufs;
  for (int l = 0; l < 2; ++l) {
    kv.k.push_back(be->alloc_tensor(DType::f32, {2, 8, 2, 32}, bufs));
    kv.v.push_back(be->alloc_tensor(DType::f32, {2, 8, 2, 32}, bufs));
  }
  std::vector<int32_t> ids = {5, 17, 250}, pos = {0, 1, 2}, cu = {0, 3}, klen = {3}, table = {1, 0}, last = {2};
  ForwardInputs in;
  in.input_ids = Tensor(ids.data(), DType::i32, {3});
  in.positions = Tensor(pos.data(), DType::i32, {3});
  in.last_token_indices = Tensor(last.data(), DType::i32, {1});
  std::vector<int32_t> slots = {8, 9, 10};
  in.meta = {true, 1, 3, 3, 3, cu.data(), klen.data(), slots.data(), table.data(), 2};
  std::vector<float> logits(300);
  Tensor lt(logits.data(), DType::f32, {1, 300});
  m.forward(in, kv, lt);
  float lo = logits[0], hi = logits[0];
  for (float x : logits) {
    ASSERT_TRUE(std::isfinite(x));
    lo = std::min(lo, x), hi = std::max(hi, x);
  }
  EXPECT_GT(hi - lo, 1e-3f);
  // On the CPU the bf16 matrices stay bf16 (2 bytes a weight, used in place: nothing folded into
  // them, and make-model writes q, k, v and gate, up one after the other), and the norms run on
  // their own (f32): q/k norms, the two decoder norms a layer and the final norm.
  EXPECT_FALSE(m.folds_norms());
  EXPECT_EQ(m.weight_dtype(), DType::bf16);
  const size_t matrices = 300 * 64 + 2 * (128 * 64 + 64 * 64 * 2 + 64 * 128 + 256 * 64 + 64 * 128);
  EXPECT_EQ(m.weight_bytes(), matrices * 2 + size_t(2 * (32 * 2 + 64 * 2) + 64) * 4);
  EXPECT_EQ(m.mapped_bytes(), matrices * 2);
}

TEST_F(RandomModel, MissingAndMisshapenTensorsAreNamed) {
  RandomModelSpec s = small();
  s.dtype = DType::f32;
  write_random_model(s, dir);
  ModelConfig c = load_model_config(dir);
  ModelConfig more_layers = c;
  more_layers.num_hidden_layers = 3;
  more_layers.layer_sliding.push_back(false);
  EXPECT_THAT(model_error(more_layers), ::testing::HasSubstr("checkpoint has no tensor 'model.layers.2."));
  ModelConfig wider = c;
  wider.intermediate_size = 96;
  const std::string e = model_error(wider);
  EXPECT_THAT(e, ::testing::HasSubstr("model.layers.0.mlp.gate_proj.weight"));
  EXPECT_THAT(e, ::testing::HasSubstr("[128, 64]"));
  EXPECT_THAT(e, ::testing::HasSubstr("[96, 64]"));
  ModelConfig untied = c;
  untied.tie_word_embeddings = false;
  EXPECT_THAT(model_error(untied), ::testing::HasSubstr("lm_head.weight"));
  EXPECT_EQ(model_error(c), "(no error)");
}

}  // namespace
}  // namespace nanovllm

namespace nanovllm {
namespace {

// `nanovllm make-model` end to end: flags override the preset; the tokenizer comes along only
// when the vocabulary holds its ids.
TEST(MakeModelCli, FlagsAndTokenizerRule) {
  const fs::path dir = fs::temp_directory_path() / ("nanovllm_mm_cli_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  auto run = [&](const std::string& args) {
    const std::string cmd = std::string(NANOVLLM_BINARY) + " make-model " + args + " > " + (dir / "out.txt").string() + " 2>&1";
    fs::create_directories(dir);
    const int rc = std::system(cmd.c_str());
    std::ifstream in(dir / "out.txt");
    return std::pair<int, std::string>(rc, std::string(std::istreambuf_iterator<char>(in), {}));
  };
  auto [rc, out] = run("--preset tiny --vocab-size 512 --num-layers 1 --no-tie --dtype f32 --seed 3 --out " +
                       (dir / "small").string());
  ASSERT_EQ(rc, 0) << out;
  ModelConfig c = load_model_config(dir / "small");
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.num_hidden_layers, 1);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.torch_dtype, "float32");
  EXPECT_EQ(c.eos_token_ids, std::vector<int>{511});  // Qwen3's special ids do not exist here
  EXPECT_FALSE(c.bos_token_id.has_value());
  EXPECT_TRUE(Checkpoint::open(dir / "small").contains("lm_head.weight"));
  EXPECT_FALSE(fs::exists(dir / "small/tokenizer.json"));

  const fs::path tok = fs::path(NANOVLLM_SOURCE_DIR) / "models/qwen3-tokenizer";
  if (fs::exists(tok / "tokenizer.json")) {
    std::tie(rc, out) = run("--preset tiny --vocab-size 512 --tokenizer " + tok.string() + " --out " + (dir / "t1").string());
    ASSERT_EQ(rc, 0) << out;
    EXPECT_THAT(out, ::testing::HasSubstr("no tokenizer"));
    EXPECT_FALSE(fs::exists(dir / "t1/tokenizer.json"));
    std::tie(rc, out) = run("--preset tiny --hidden-size 32 --num-heads 2 --num-kv-heads 1 --head-dim 16 --tokenizer " +
                            tok.string() + " --out " + (dir / "t2").string());
    ASSERT_EQ(rc, 0) << out;
    EXPECT_TRUE(fs::exists(dir / "t2/tokenizer.json"));
    EXPECT_TRUE(fs::exists(dir / "t2/tokenizer_config.json"));
    EXPECT_EQ(load_model_config(dir / "t2").eos_token_ids, (std::vector<int>{151645, 151643}));
  }
  std::tie(rc, out) = run("--preset huge --out " + (dir / "x").string());
  EXPECT_NE(rc, 0);
  EXPECT_THAT(out, ::testing::HasSubstr("unknown model preset 'huge'"));
  std::tie(rc, out) = run("--num-heads 3 --out " + (dir / "x").string());
  EXPECT_NE(rc, 0);
  EXPECT_THAT(out, ::testing::HasSubstr("num_heads 3"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace nanovllm
