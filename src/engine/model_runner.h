// ModelRunner: turns a scheduled batch into the model's device inputs, runs the forward (replaying
// a CUDA graph for decode when it can), and samples on the device. Owns the backend, the weights
// and the paged KV cache, which it sizes from memory. nano-vLLM's model_runner.py.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "engine/batch_layout.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "engine/step_stats.h"
#include "model/hf_config.h"
#include "model/decoder_model.h"
#include "model/safetensors.h"
#include "nanovllm/config.h"
#include "util/env_options.h"

namespace nanovllm {

// `config` as the runner takes it: max_model_len capped by the model's max_position_embeddings,
// the device resolved (unset: CUDA when a GPU is usable, else the CPU).
EngineConfig resolve_config(EngineConfig config, const ModelConfig& model_config);
// The backend `config.device` (resolved) names, with `env`'s measurement switches and the
// config's quantization (throws std::invalid_argument for one the device cannot run), for
// tensor-parallel rank `rank`: GPU `rank`, or on the CPU its share of the threads.
std::unique_ptr<Backend> make_backend_for(const EngineConfig& config, const EnvOptions& env, int rank = 0);
// EngineConfig::kv_cache_dtype on `backend` for a checkpoint of dtype `checkpoint_dtype`;
// throws std::invalid_argument for a name it does not know or a dtype the backend's cache cannot be.
DType kv_cache_dtype(const std::string& name, const Backend& backend, DType checkpoint_dtype);
// The CPU KV cache's cap when EngineConfig::cpu_kvcache_space_gb is 0 (vLLM's default).
inline constexpr double kDefaultCpuKvcacheSpaceGb = 4.0;
// A KV dtype as --kv-cache-dtype names it where it differs from dtype_name: fp8_e4m3, fp8_e5m2.
std::string kv_dtype_label(DType t);

// FP8 KV scales from a calibration forward (vLLM's calculate_kv_scales): scale = amax / C, with
// C = 200 for e4m3 (vLLM's K_SCALE_CONSTANT / V_SCALE_CONSTANT: 448 / 200 of headroom) and the
// same headroom for e5m2 (57344 * 200 / 448); an amax of 0 gives 1.
inline constexpr float kFp8E4m3ScaleConstant = 200.0f;
inline constexpr float kFp8E5m2ScaleConstant = 57344.0f * 200.0f / 448.0f;
float fp8_kv_scale(float amax, DType kv_dtype);
// The calibration batch: this many sequences of kKvCalibrationTokens / kKvCalibrationSeqs tokens
// each (fewer where max_num_batched_tokens, max_num_seqs or max_model_len say so), random ids
// drawn with this seed.
inline constexpr int kKvCalibrationTokens = 512, kKvCalibrationSeqs = 4;
inline constexpr uint64_t kKvCalibrationSeed = 0x6b765f7363616c65ull;  // "kv_scale"
// The calibration batch's n token ids below `vocab` (splitmix64 from kKvCalibrationSeed: the same
// on every rank and every run).
std::vector<int32_t> kv_calibration_ids(int64_t vocab, int n);

// What one step produced.
struct StepResult {
  std::vector<int32_t> tokens;                // one per sequence of batch.sampled, in order
  std::vector<PositionLogprobs> logprobs;     // likewise; token_id -1 where SamplingParams::logprobs is unset
  // The prompt logprobs this step computed, per sequence that owes them (positions in order).
  std::vector<std::pair<Sequence*, std::vector<PositionLogprobs>>> prompt_logprobs;
};

class WorkerGroup;
struct WorkerCommand;
struct RankInfo;

class ModelRunner {
 public:
  // Loads the weights onto `backend` and allocates the per-step buffers. `config` is resolved:
  // max_model_len already capped by the model. Then allocate_kv_cache(), then capture_cudagraph().
  // Tensor parallel (config.tensor_parallel_size > 1): rank 0 (the engine's) first starts the
  // other ranks' processes (`worker`: the executable they run as, see tp_group.h) and drives them
  // from every call below; a worker's runner (rank > 0, its backend joined to the group) is
  // driven through execute().
  ModelRunner(const EngineConfig& config, const ModelConfig& model_config, std::unique_ptr<Backend> backend,
              int rank = 0, const std::string& worker = {});
  ~ModelRunner();
  ModelRunner(const ModelRunner&) = delete;
  ModelRunner& operator=(const ModelRunner&) = delete;

  // Sizes the paged KV cache (config.num_kvcache_blocks, or from memory after a profiling run of
  // the largest batch) and allocates it.
  void allocate_kv_cache();
  // CUDA: captures a decode graph per batch size (none under enforce_eager or on the CPU).
  void capture_cudagraph();

  // Runs one step over `batch`: one sampled token for each of batch.sampled, in order, with the
  // logprobs they ask for, and the prompt logprobs of the batch's prefill chunks that owe them;
  // `timing` gets when the work reached the device and when the results were back.
  StepResult run(const ScheduledBatch& batch, StepTiming* timing = nullptr);
  // `seq` finished or was aborted: the sampler's state for it (its token-counts row) goes back.
  void release(Sequence& seq) { sampler_->release(seq); }

  // The logits of the last run(): one f32 row of the vocabulary per sequence of batch.sampled,
  // in order (the sampler reads them and leaves them as they are). For numerics measurements.
  std::vector<float> last_logits(int rows);

  Backend& backend() { return *backend_; }
  const Backend& backend() const { return *backend_; }
  int num_kvcache_blocks() const { return kv_.num_blocks; }
  int64_t kvcache_bytes() const { return kvcache_bytes_; }
  DType kv_cache_dtype() const { return kv_dtype_; }
  // Why the KV cache got its size, as the start-up line says it.
  const std::string& kv_cache_reason() const { return kv_cache_reason_; }
  int num_graphs() const { return static_cast<int>(graphs_.size()); }
  // An FP8 cache's per-layer scales (this rank's; empty for other dtypes) and where they came from:
  // "checkpoint", "calibrated over N random tokens" or "1.0 (--no-calculate-kv-scales)".
  const std::vector<float>& kv_k_scales() const { return k_scales_; }
  const std::vector<float>& kv_v_scales() const { return v_scales_; }
  const std::string& kv_scales_source() const { return kv_scales_source_; }
  // The start-up line on the KV cache's dtype: for FP8, the blocks bf16 would have given in the
  // same memory, and the scales' source and range over layers.
  std::string kv_cache_summary() const;
  size_t weight_bytes() const { return model_->weight_bytes(); }

  // Tensor parallelism: this rank's figures, then (rank 0) every other rank's.
  std::vector<RankInfo> rank_infos() const;
  // Rank 0: the worker processes (empty on one rank).
  std::vector<int> worker_pids() const;
  // A worker: runs rank 0's command with its payload; the reply (profile_kv: the block count).
  int64_t execute(const WorkerCommand& cmd, const void* payload);

 private:
  // Fills the staging buffer for `seqs` into `layout` (decode rows beyond seqs.size() are padding)
  // and returns the forward's inputs pointing into the device buffer (forward_staged copies it there).
  ForwardInputs prepare(const ScheduledBatch& batch, const BatchLayout& layout, int num_rows);
  // Writes a batch of `num_seqs` dummy sequences of `len` tokens each (nothing stored, block table
  // [0, 1, ...]) for warm-up and graph capture.
  ForwardInputs prepare_dummy(int num_seqs, int len, const BatchLayout& layout, int max_seqlen_k);
  // The prompt logprobs of `batch`'s sequences that owe them, from the hidden states the forward
  // left (computed in rows of at most max_num_seqs logits at a time).
  void prompt_logprobs(const ScheduledBatch& batch, StepResult& result);
  ForwardInputs inputs_at(const BatchLayout& layout, int num_tokens, int num_seqs, int num_rows, bool is_prefill,
                          int max_seqlen_q, int max_seqlen_k);
  void copy_staging(const BatchLayout& layout);
  // The forward (or graph replay) of inputs staged as `layout`, on every rank: rank 0 first
  // hands the staging buffer to the workers.
  void forward_staged(const BatchLayout& layout, const ForwardInputs& in, int graph_batch, Tensor logits);
  // The logits of hidden rows rows_host_[0, R) into logits, on every rank.
  void logits_of_rows(int R, Tensor logits);
  int64_t kv_block_bytes() const;
  int64_t kv_block_bytes(DType dtype) const;
  // The checkpoint's KV scales (self_attn.k_scale / v_scale, or k_proj/v_proj.output_scale) into
  // k_scales_ / v_scales_ when every layer has them; false when none has.
  bool read_checkpoint_kv_scales(const Checkpoint& checkpoint);
  // An FP8 cache's scales, before it is allocated: the checkpoint's, else calibrated
  // (calibrate_kv_scales; every rank at once, it runs a forward), else 1.
  void set_kv_scales();
  void calibrate_kv_scales();
  void allocate_blocks(int num_blocks);
  int decide_num_blocks();
  // The CPU cache's blocks (at most `useful`), with the reason in kv_cache_reason_ and `available`.
  int64_t cpu_num_blocks(int64_t block_bytes, int64_t useful, std::string* available);

  EngineConfig config_;
  ModelConfig model_config_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Checkpoint> checkpoint_;  // kept open while the model uses its mapping in place
  int rank_ = 0;
  std::unique_ptr<WorkerGroup> group_;  // rank 0 of a group: the other ranks (after backend_: goes first)
  std::unique_ptr<DecoderModel> model_;
  int max_num_tokens_, max_num_seqs_, max_num_blocks_;

  KVCache kv_;
  DeviceBuffer kv_buffer_;
  int64_t kvcache_bytes_ = 0;
  DType kv_dtype_ = DType::f32;
  std::string kv_cache_reason_;
  std::vector<float> k_scales_, v_scales_;  // per layer, FP8 caches only
  std::string kv_scales_source_;
  bool checkpoint_kv_scales_ = false;

  // Host staging (pinned on CUDA) for the largest layout; freed by the backend, which outlives it.
  struct HostFree {
    Backend* backend;
    void operator()(char* p) const { backend->host_free(p); }
  };
  std::unique_ptr<char, HostFree> staging_buffer_{nullptr, HostFree{nullptr}};
  struct HostFree32 {
    Backend* backend;
    void operator()(int32_t* p) const { backend->host_free(p); }
  };
  DeviceBuffer inputs_device_;   // the same layout on the device, written once per step
  DeviceBuffer logits_buffer_;
  Tensor logits_;                // f32 [max_num_seqs, vocab]
  std::unique_ptr<Sampler> sampler_;
  // Hidden-state rows whose logits prompt logprobs need, staged for one transfer.
  std::unique_ptr<int32_t, HostFree32> rows_host_{nullptr, HostFree32{nullptr}};
  DeviceBuffer rows_device_;

  // Decode batch size -> graph handle, and the inputs and logits each graph was captured with
  // (kept alive: a backend may re-run the captured function on replay).
  std::map<int, int> graphs_;
  struct GraphIO {
    ForwardInputs in;
    Tensor logits;
  };
  std::map<int, GraphIO> graph_io_;
};

}  // namespace nanovllm
