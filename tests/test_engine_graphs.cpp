// The decode-graph path of ModelRunner, checked on the CPU: a backend wrapper that "captures" a
// graph by keeping the captured function and "replays" it by running it again on the inputs it
// was captured with (what a CUDA graph does: same pointers, the capture-time batch size and
// max_seqlen_k). Decode batches are padded to the captured sizes, and the continuations must
// still equal Hugging Face's greedy ones token for token.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "backend/backend.h"
#include "engine/block_manager.h"
#include "engine/model_runner.h"
#include "engine/scheduler.h"
#include "model/hf_config.h"

namespace nanovllm {
namespace {

class GraphEmulatingBackend : public Backend {
 public:
  explicit GraphEmulatingBackend(std::unique_ptr<Backend> inner) : b_(std::move(inner)) {}
  int replays = 0;

  DeviceKind device() const override { return b_->device(); }
  std::string name() const override { return "graph-emulating " + b_->name(); }
  DType compute_dtype() const override { return b_->compute_dtype(); }
  void* raw_alloc(size_t n) override { return b_->raw_alloc(n); }
  void raw_free(void* p) override { b_->raw_free(p); }
  void copy_to_device(void* d, const void* s, size_t n) override { b_->copy_to_device(d, s, n); }
  void copy_to_host(void* d, const void* s, size_t n) override { b_->copy_to_host(d, s, n); }
  void fill_zero(void* d, size_t n) override { b_->fill_zero(d, n); }
  void synchronize() override { b_->synchronize(); }
  void memory_info(size_t* f, size_t* t) override { b_->memory_info(f, t); }
  size_t peak_allocated_bytes() const override { return b_->peak_allocated_bytes(); }
  void* host_alloc(size_t n) override { return b_->host_alloc(n); }
  void host_free(void* p) override { b_->host_free(p); }
  bool supports_graphs() const override { return true; }
  int capture_graph(const std::function<void()>& fn) override {
    graphs_.push_back(fn);  // recorded, not run (as under stream capture)
    return static_cast<int>(graphs_.size()) - 1;
  }
  void replay_graph(int handle) override {
    ++replays;
    in_replay_ = true;
    replay_size_ = sizes_by_handle_.at(handle);
    graphs_.at(handle)();
    in_replay_ = false;
  }
  void set_size(int handle, int bs) { sizes_by_handle_[handle] = bs; }

 protected:
  // The ops go to the inner backend's public ops (which check their arguments again).
  void do_upload_convert(const Tensor& s, Tensor& d) override { b_->upload_convert(s, d); }
  void do_scale_columns(Tensor& w, const Tensor& s) override { b_->scale_columns(w, s); }
  void do_check_attention_shape(int bs, int hd, int g) const override { b_->check_attention_shape(bs, hd, g); }
  void do_embedding(const Tensor& i, const Tensor& t, int64_t start, Tensor& o, float s) override {
    b_->embedding_shard(i, t, start, start + t.size(0), o, s);
  }
  void do_rms_norm(const Tensor& x, const Tensor& w, float e, Tensor& o) override { b_->rms_norm(x, w, e, o); }
  void do_rms_norm_add(const Tensor& x, const Tensor& w, float e, Tensor& r) override { b_->rms_norm_add(x, w, e, r); }
  void do_add_bias(Tensor& x, const Tensor& b) override { b_->add_bias(x, b); }
  void do_softcap(Tensor& x, float cap) override { b_->softcap(x, cap); }
  void do_linear(const Tensor& x, const Tensor& w, Tensor& o, bool add) override {
    add ? b_->linear_add(x, w, o) : b_->linear(x, w, o);
  }
  void do_qk_norm_rope_store(const RopeStore& in, const PagedKV& c, Tensor& q) override {
    b_->qk_norm_rope_store(in, c, q);
  }
  void do_attention(const Tensor& q, const PagedKV& c, const AttentionMetadata& m, const AttentionOptions& opts,
                    Tensor& o) override {
    if (in_replay_) {
      // A graph replays its capture-time shapes: the padded batch, with max_seqlen_k the model's.
      EXPECT_FALSE(m.is_prefill);
      EXPECT_EQ(m.num_seqs, replay_size_);
    }
    b_->attention(q, c, m, opts, o);
  }
  void do_act_mul(const Tensor& x, const FoldedNorm& f, Activation a, Tensor& o) override { b_->act_mul(x, f, a, o); }
  void do_gather_rows(const Tensor& x, const Tensor& i, Tensor& o) override { b_->gather_rows(x, i, o); }
  void do_sample(const Tensor& l, const SampleBatch& b, Tensor& o) override { b_->sample(l, b, o); }
  void do_logprobs(const Tensor& l, const Tensor& r, const Tensor& i, int n, LogprobsOut& o) override {
    b_->logprobs(l, r, i, n, o);
  }
  void do_reset_token_counts(const TokenCounts& c, int row, const Tensor& p, const Tensor& o) override {
    b_->reset_token_counts(c, row, p, o);
  }
  void do_all_reduce(Tensor& x) override { b_->all_reduce(x); }
  void do_gather(const Tensor& x, Tensor& o) override { b_->gather(x, o); }
  void do_copy_columns(const Tensor& s, int64_t sc, Tensor& d, int64_t dc, int64_t w) override {
    b_->copy_columns(s, sc, d, dc, w);
  }

 private:
  std::unique_ptr<Backend> b_;
  std::vector<std::function<void()>> graphs_;
  std::map<int, int> sizes_by_handle_;
  bool in_replay_ = false;
  int replay_size_ = 0;
};

TEST(EngineGraphs, PaddedGraphReplayMatchesHuggingFace) {
  const std::string dir = std::string(NANOVLLM_SOURCE_DIR) + "/tests/fixtures/models/small-untied";
  std::ifstream f(dir + "/expected.json");
  auto j = nlohmann::json::parse(f);

  EngineConfig c;
  c.model = dir;
  c.device = DeviceKind::cpu;
  c.kvcache_block_size = 8;
  c.max_model_len = 256;
  c.num_kvcache_blocks = 120;
  c.max_num_seqs = 12;          // graphs for 1, 2, 4, 8, 12
  c.max_num_batched_tokens = 64;  // chunked prefill: the running set grows a few at a time
  ModelConfig mc = load_model_config(dir);
  auto owned = std::make_unique<GraphEmulatingBackend>(make_backend(DeviceKind::cpu, {.num_threads = 1}));
  GraphEmulatingBackend* backend = owned.get();
  ModelRunner runner(c, mc, std::move(owned));
  runner.allocate_kv_cache();
  runner.capture_cudagraph();
  ASSERT_EQ(runner.num_graphs(), 5);
  // Handles were handed out largest first.
  int handle = 0;
  for (int bs : {12, 8, 4, 2, 1}) backend->set_size(handle++, bs);

  BlockManager bm(runner.num_kvcache_blocks(), c.kvcache_block_size, true);
  SchedulerConfig sc{.max_num_seqs = c.max_num_seqs, .max_num_batched_tokens = c.max_num_batched_tokens,
                     .max_model_len = c.max_model_len};
  Scheduler sched(sc, bm);
  SamplingParams p;
  p.temperature = 0;
  p.max_tokens = 16;
  p.ignore_eos = true;
  std::vector<std::unique_ptr<Sequence>> seqs;
  std::vector<std::vector<int32_t>> expected;
  for (const auto& pr : j["prompts"]) {
    // Different lengths, so sequences finish one by one and decode batches take every size.
    p.max_tokens = 5 + static_cast<int>(seqs.size());
    seqs.push_back(std::make_unique<Sequence>(static_cast<int64_t>(seqs.size()), pr["ids"].get<std::vector<int32_t>>(),
                                              p, c.kvcache_block_size, 0, 0.0));
    expected.push_back(pr["greedy"].get<std::vector<int32_t>>());
    expected.back().resize(p.max_tokens);
    sched.add(seqs.back().get());
  }
  std::set<size_t> unpadded_sizes = {1, 2, 4, 8, 12};
  int padded_steps = 0;
  while (!sched.is_finished()) {
    ScheduledBatch batch = sched.schedule();
    ASSERT_FALSE(batch.empty());
    if (!batch.is_prefill && !unpadded_sizes.count(batch.seqs.size())) ++padded_steps;
    sched.postprocess(batch, runner.run(batch).tokens, 0.0);
  }
  for (size_t i = 0; i < seqs.size(); ++i) EXPECT_EQ(seqs[i]->completion_token_ids(), expected[i]) << "prompt " << i;
  EXPECT_GT(backend->replays, 0);
  EXPECT_GT(padded_steps, 0);  // some decode batches were not a captured size and ran padded
}

}  // namespace
}  // namespace nanovllm
