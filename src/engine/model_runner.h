// ModelRunner: turns a scheduled batch into the model's device inputs, runs the forward (replaying
// a CUDA graph for decode when it can), and samples on the device. Owns the backend, the weights
// and the paged KV cache, which it sizes from memory. nano-vLLM's model_runner.py.
#pragma once
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "engine/batch_layout.h"
#include "engine/sequence.h"
#include "model/hf_config.h"
#include "model/qwen3.h"
#include "model/safetensors.h"
#include "nanovllm/config.h"

namespace nanovllm {

class ModelRunner {
 public:
  // `config` is resolved: device is "cpu" or "cuda", max_model_len already capped by the model.
  // `backend`: the one to run on (tests pass a wrapped one); null makes config.device's.
  ModelRunner(const EngineConfig& config, const ModelConfig& model_config, std::unique_ptr<Backend> backend = nullptr);
  ~ModelRunner();
  ModelRunner(const ModelRunner&) = delete;
  ModelRunner& operator=(const ModelRunner&) = delete;

  // Runs one step over `seqs` (each with num_scheduled_tokens set and blocks for them) and returns
  // one sampled token for each sequence that samples_this_step(), in batch order.
  std::vector<int32_t> run(const std::vector<Sequence*>& seqs, bool is_prefill);

  Backend& backend() { return *backend_; }
  const Backend& backend() const { return *backend_; }
  int num_kvcache_blocks() const { return kv_.num_blocks; }
  int64_t kvcache_bytes() const { return kvcache_bytes_; }
  int max_num_blocks() const { return max_num_blocks_; }
  int num_graphs() const { return static_cast<int>(graphs_.size()); }
  // Time from one step's results reaching the host to the next step's launch: the device idles
  // then (every step ends with a synchronizing copy). pause_gap_clock() stops counting until the
  // next step, for callers that go idle on purpose (between generate() calls).
  double host_gap_seconds() const { return host_gap_seconds_; }
  // Seconds spent in each start-up phase (the engine's start-up log line).
  struct StartupTimes {
    double weights_s = 0, profile_s = 0, kv_cache_s = 0, graphs_s = 0;
  };
  const StartupTimes& startup_times() const { return startup_; }
  size_t weight_bytes() const { return model_->weight_bytes(); }
  void pause_gap_clock() { idle_since_ = 0; }

 private:
  // Fills the staging buffer for `seqs` into `layout` (decode rows beyond seqs.size() are padding)
  // and returns the forward's inputs pointing into the device buffer.
  ForwardInputs prepare(const std::vector<Sequence*>& seqs, bool is_prefill, const BatchLayout& layout,
                        int num_rows, int* num_sampled);
  // Writes a batch of `num_seqs` dummy sequences of `len` tokens each (nothing stored, block table
  // [0, 1, ...]) for warm-up and graph capture.
  ForwardInputs prepare_dummy(int num_seqs, int len, const BatchLayout& layout, int max_seqlen_k);
  ForwardInputs inputs_at(const BatchLayout& layout, int num_tokens, int num_seqs, int num_rows, bool is_prefill,
                          int max_seqlen_q, int max_seqlen_k);
  void copy_staging(const BatchLayout& layout);
  int64_t kv_block_bytes() const;
  void allocate_kv_cache(int num_blocks);
  int decide_num_blocks();
  void capture_graphs();

  EngineConfig config_;
  ModelConfig model_config_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Qwen3Model> model_;
  int max_num_tokens_, max_num_seqs_, max_num_blocks_;

  KVCache kv_;
  DeviceBuffer kv_buffer_;
  int64_t kvcache_bytes_ = 0;

  // Host staging (pinned on CUDA) for the largest layout; freed by the backend, which outlives it.
  struct HostFree {
    Backend* backend;
    void operator()(char* p) const { backend->host_free(p); }
  };
  std::unique_ptr<char, HostFree> staging_buffer_{nullptr, HostFree{nullptr}};
  DeviceBuffer inputs_device_;   // the same layout on the device, written once per step
  DeviceBuffer logits_buffer_, sampled_buffer_;
  Tensor logits_;                // f32 [max_num_seqs, vocab]
  std::vector<int32_t> sampled_host_;

  // Decode batch size -> graph handle, and the inputs and logits each graph was captured with
  // (kept alive: a backend may re-run the captured function on replay).
  std::map<int, int> graphs_;
  struct GraphIO {
    ForwardInputs in;
    Tensor logits;
  };
  std::map<int, GraphIO> graph_io_;

  StartupTimes startup_;
  struct FileClose {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  std::unique_ptr<std::FILE, FileClose> trace_;
  double host_gap_seconds_ = 0, idle_since_ = 0;
  void mark_launch();
  void mark_idle();
};

}  // namespace nanovllm
