// ModelRunner: batch preparation (one host->device copy per step), KV-cache sizing, CUDA-graph
// capture and replay for decode, and on-device sampling.
#include "engine/model_runner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>

#include "backend/half.h"
#include "engine/tp_group.h"
#include "util/clock.h"

namespace nanovllm {
namespace {

// nano-vLLM's capture sizes: 1, 2, 4, 8, then every 16 up to the largest decode batch.
std::vector<int> graph_batch_sizes(int max_bs) {
  std::vector<int> sizes;
  for (int bs : {1, 2, 4, 8})
    if (bs <= max_bs) sizes.push_back(bs);
  for (int bs = 16; bs <= max_bs; bs += 16) sizes.push_back(bs);
  if (sizes.empty() || sizes.back() != max_bs) sizes.push_back(max_bs);
  return sizes;
}

}  // namespace

EngineConfig resolve_config(EngineConfig c, const ModelConfig& mc) {
  if (mc.max_position_embeddings > 0) c.max_model_len = std::min(c.max_model_len, mc.max_position_embeddings);
  if (!c.device) c.device = cuda_available() ? DeviceKind::cuda : DeviceKind::cpu;
  return c;
}

std::unique_ptr<Backend> make_backend_for(const EngineConfig& c, const EnvOptions& env, int rank) {
  const bool int8 = c.quantization == "int8", fp8 = c.quantization == "fp8";
  if (!int8 && !fp8 && !c.quantization.empty() && c.quantization != "none")
    throw std::invalid_argument("quantization '" + c.quantization + "': expected none, int8 or fp8");
  if (int8 && *c.device != DeviceKind::cpu)
    throw std::invalid_argument("quantization int8 is the CPU backend's (--device cpu); the CUDA backend runs bf16");
  const int world = c.tensor_parallel_size;
  int threads = c.num_threads;
  if (*c.device == DeviceKind::cpu && world > 1) {  // the ranks share the machine's cores
    const int total = threads > 0 ? threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    threads = std::max(1, total / world);
  }
  if (*c.device == DeviceKind::cuda && world > cuda_device_count())
    throw std::invalid_argument("tensor_parallel_size " + std::to_string(world) + " needs " + std::to_string(world) +
                                " GPUs; " + std::to_string(cuda_device_count()) + " visible");
  BackendOptions base;
  base.num_threads = threads;
  base.device_id = rank;
  BackendOptions opts = base.with_env(env);
  opts.int8_weights = int8;
  opts.fp8_weights = fp8;
  std::unique_ptr<Backend> backend = make_backend(*c.device, opts);
  if (fp8 && backend->device() != DeviceKind::cpu && !backend->takes_scaled_weight(DType::f8e4m3))
    throw std::invalid_argument("quantization fp8: the " + backend->name() +
                                " backend has no FP8 GEMMs in this build (the CPU runs it: --device cpu)");
  return backend;
}

DType kv_cache_dtype(const std::string& name, const Backend& backend, DType checkpoint_dtype) {
  DType t;
  if (name == "auto") t = backend.device() == DeviceKind::cpu ? checkpoint_dtype : backend.compute_dtype();
  else if (name == "bfloat16" || name == "bf16") t = DType::bf16;
  else if (name == "float16") t = DType::f16;
  else if (name == "float32") t = DType::f32;
  else if (name == "fp8" || name == "fp8_e4m3") t = DType::f8e4m3;
  else if (name == "fp8_e5m2") t = DType::f8e5m2;
  else
    throw std::invalid_argument("kv_cache_dtype '" + name +
                                "': expected auto, bfloat16 (bf16), float16, float32, fp8, fp8_e4m3 or fp8_e5m2");
  if (!backend.takes_kv(t))
    throw std::invalid_argument("kv_cache_dtype " + name + ": the " + backend.name() + " backend's KV cache cannot be " +
                                dtype_name(t) + " (it is " + dtype_name(backend.compute_dtype()) + ")");
  return t;
}

std::vector<int32_t> kv_calibration_ids(int64_t vocab, int n) {
  std::vector<int32_t> ids(n);
  uint64_t state = kKvCalibrationSeed;
  for (int32_t& id : ids) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    id = static_cast<int32_t>((z ^ (z >> 31)) % static_cast<uint64_t>(vocab));
  }
  return ids;
}

std::string kv_dtype_label(DType t) {
  if (t == DType::f8e4m3) return "fp8_e4m3";
  if (t == DType::f8e5m2) return "fp8_e5m2";
  return dtype_name(t);
}

float fp8_kv_scale(float amax, DType kv_dtype) {
  if (!(amax > 0)) return 1.0f;
  return amax / (kv_dtype == DType::f8e5m2 ? kFp8E5m2ScaleConstant : kFp8E4m3ScaleConstant);
}

ModelRunner::ModelRunner(const EngineConfig& config, const ModelConfig& model_config, std::unique_ptr<Backend> backend,
                         int rank, const std::string& worker)
    : config_(config),
      model_config_(model_config),
      backend_(std::move(backend)),
      rank_(rank) {
  const int world = config_.tensor_parallel_size;
  const int bs = config_.kvcache_block_size;
  max_num_tokens_ = config_.max_num_batched_tokens;
  max_num_seqs_ = config_.max_num_seqs;
  max_num_blocks_ = (config_.max_model_len + bs - 1) / bs;
  const ModelShard shard{rank_, world};
  const ShardDims dims = shard_dims(model_config_, shard);  // a split the shapes do not allow fails here
  backend_->check_attention_shape(bs, model_config_.head_dim, static_cast<int>(dims.q_heads / dims.kv_heads));
  BatchLayout largest(max_num_tokens_, max_num_seqs_, max_num_seqs_, max_num_blocks_);
  if (rank_ == 0 && world > 1)  // the other ranks start now and load their shards beside this one
    group_ = std::make_unique<WorkerGroup>(config_, *backend_, std::max(largest.total, sizeof(int32_t) * max_num_seqs_),
                                           worker);
  {
    // Where the model copies its weights out of the mapped files, unmapping them before the KV
    // cache is allocated keeps the file's pages out of the peak memory; where it uses them in
    // place (the CPU backend), the mapping stays open as the weights' memory. Each rank reads
    // only its slices.
    Checkpoint checkpoint = Checkpoint::open(config_.model);
    model_ = std::make_unique<DecoderModel>(model_config_, checkpoint, *backend_, max_num_tokens_, max_num_seqs_,
                                            shard);
    backend_->synchronize();
    kv_dtype_ = nanovllm::kv_cache_dtype(config_.kv_cache_dtype, *backend_, model_->checkpoint_dtype());
    if (is_fp8(kv_dtype_)) checkpoint_kv_scales_ = read_checkpoint_kv_scales(checkpoint);
    if (model_->mapped_bytes() > 0) checkpoint_ = std::make_unique<Checkpoint>(std::move(checkpoint));
  }

  // Persistent per-step buffers, sized for the largest batch; nothing is allocated per step.
  staging_buffer_ = std::unique_ptr<char, HostFree>(static_cast<char*>(backend_->host_alloc(largest.total)),
                                                    HostFree{backend_.get()});
  std::memset(staging_buffer_.get(), 0, largest.total);
  inputs_device_ = backend_->alloc(largest.total);
  logits_ = Tensor(nullptr, DType::f32, {max_num_seqs_, model_config_.vocab_size}, backend_->device());
  if (rank_ == 0) {  // the logits and the sampler live on rank 0
    logits_buffer_ = backend_->alloc(logits_.nbytes());
    logits_.data = logits_buffer_.get();
    sampler_ = std::make_unique<Sampler>(*backend_, max_num_seqs_, model_config_.vocab_size, config_.max_logprobs);
  }
  rows_host_ = std::unique_ptr<int32_t, HostFree32>(
      static_cast<int32_t*>(backend_->host_alloc(sizeof(int32_t) * max_num_seqs_)), HostFree32{backend_.get()});
  rows_device_ = backend_->alloc(sizeof(int32_t) * max_num_seqs_);
}

std::vector<RankInfo> ModelRunner::rank_infos() const {
  std::vector<RankInfo> infos{{backend_->name(), static_cast<int64_t>(model_->weight_bytes()), kv_.num_blocks}};
  if (group_)
    for (RankInfo& i : group_->worker_infos()) infos.push_back(std::move(i));
  return infos;
}

std::vector<int> ModelRunner::worker_pids() const {
  std::vector<int> pids;
  if (group_)
    for (pid_t p : group_->worker_pids()) pids.push_back(static_cast<int>(p));
  return pids;
}

int64_t ModelRunner::execute(const WorkerCommand& cmd, const void* payload) {
  switch (cmd.op) {
    case WorkerOp::profile_kv:
      return decide_num_blocks();
    case WorkerOp::allocate_kv:
      allocate_blocks(static_cast<int>(cmd.value));
      backend_->synchronize();
      return 0;
    case WorkerOp::calibrate_kv:
      set_kv_scales();
      return 0;
    case WorkerOp::capture:
      capture_cudagraph();
      return 0;
    case WorkerOp::forward: {
      const BatchLayout layout(cmd.layout_tokens, cmd.layout_seqs, cmd.layout_rows, max_num_blocks_);
      backend_->synchronize();  // the previous step's copy from the staging buffer is done
      std::memcpy(staging_buffer_.get(), payload, layout.total);
      const ForwardInputs in = inputs_at(layout, cmd.num_tokens, cmd.num_seqs, cmd.num_rows, cmd.is_prefill != 0,
                                         cmd.max_seqlen_q, cmd.max_seqlen_k);
      if (cmd.graph_batch > 0 && !graphs_.count(cmd.graph_batch))
        throw std::logic_error("tensor-parallel worker: no decode graph for batch " + std::to_string(cmd.graph_batch));
      forward_staged(layout, in, cmd.graph_batch, Tensor());
      return 0;
    }
    case WorkerOp::logits_of: {
      const int R = static_cast<int>(cmd.value);
      backend_->synchronize();
      std::memcpy(rows_host_.get(), payload, sizeof(int32_t) * R);
      logits_of_rows(R, Tensor());
      return 0;
    }
    case WorkerOp::none:
    case WorkerOp::shutdown:
      return 0;
  }
  throw std::logic_error("tensor-parallel worker: unknown command " + std::to_string(static_cast<int>(cmd.op)));
}

void ModelRunner::forward_staged(const BatchLayout& layout, const ForwardInputs& in, int graph_batch, Tensor logits) {
  if (group_) {
    WorkerCommand cmd;
    cmd.op = WorkerOp::forward;
    cmd.layout_tokens = static_cast<int32_t>(layout.num_tokens);
    cmd.layout_seqs = static_cast<int32_t>(layout.num_seqs);
    cmd.layout_rows = static_cast<int32_t>(layout.num_rows);
    cmd.num_tokens = static_cast<int32_t>(in.input_ids.numel());
    cmd.num_seqs = in.meta.num_seqs;
    cmd.num_rows = static_cast<int32_t>(in.last_token_indices.numel());
    cmd.max_seqlen_q = in.meta.max_seqlen_q;
    cmd.max_seqlen_k = in.meta.max_seqlen_k;
    cmd.is_prefill = in.meta.is_prefill;
    cmd.graph_batch = graph_batch;
    group_->send(cmd, staging_buffer_.get(), layout.total);
  }
  copy_staging(layout);
  if (graph_batch > 0) backend_->replay_graph(graphs_.at(graph_batch));
  else model_->forward(in, kv_, logits);
}

void ModelRunner::allocate_kv_cache() {
  // An FP8 cache's scales first: calibrating runs a forward with a small cache of its own, freed
  // before this one is sized (CUDA: before the profiling run measures free memory).
  if (is_fp8(kv_dtype_)) {
    if (group_) group_->send(WorkerCommand{.op = WorkerOp::calibrate_kv});  // each rank, its own heads
    set_kv_scales();
    if (group_) group_->wait_done();
  }
  if (!group_) {
    allocate_blocks(decide_num_blocks());
    backend_->synchronize();
    std::fprintf(stderr, "nanovllm: KV cache %s, %d blocks (%.1f MiB): %s\n", dtype_name(kv_dtype_), kv_.num_blocks,
                 kvcache_bytes_ / (1024.0 * 1024.0), kv_cache_reason_.c_str());
    if (is_fp8(kv_dtype_)) std::fprintf(stderr, "nanovllm: %s\n", kv_cache_summary().c_str());
    return;
  }
  // Every rank sizes its own cache (CUDA: its own profiling forward, together); all take the least.
  group_->send(WorkerCommand{.op = WorkerOp::profile_kv});
  int64_t num_blocks = decide_num_blocks();
  for (int64_t n : group_->wait_done()) num_blocks = std::min(num_blocks, n);
  group_->send(WorkerCommand{.op = WorkerOp::allocate_kv, .value = num_blocks});
  allocate_blocks(static_cast<int>(num_blocks));
  backend_->synchronize();
  group_->wait_done();
  std::fprintf(stderr, "nanovllm: KV cache %s, %d blocks a rank (%.1f MiB each; the least the ranks could hold): %s\n",
               dtype_name(kv_dtype_), kv_.num_blocks, kvcache_bytes_ / (1024.0 * 1024.0), kv_cache_reason_.c_str());
  if (is_fp8(kv_dtype_)) std::fprintf(stderr, "nanovllm: %s (rank 0's scales)\n", kv_cache_summary().c_str());
}

std::string ModelRunner::kv_cache_summary() const {
  // Counts with thousands separators, as the start-up line reads them.
  auto count = [](int64_t n) {
    std::string d = std::to_string(n), out;
    for (size_t i = 0; i < d.size(); ++i) {
      if (i > 0 && (d.size() - i) % 3 == 0) out += ',';
      out += d[i];
    }
    return out;
  };
  auto range = [](const std::vector<float>& v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.3g..%.3g", *std::min_element(v.begin(), v.end()),
                  *std::max_element(v.begin(), v.end()));
    return std::string(buf);
  };
  std::string s = "KV cache: " + kv_dtype_label(kv_dtype_) + ", " + count(kv_.num_blocks) + " blocks";
  if (dtype_size(kv_dtype_) != dtype_size(DType::bf16)) {  // what the same bytes would hold in bf16
    char mib[32];
    std::snprintf(mib, sizeof mib, "%.1f MiB", kvcache_bytes_ / (1024.0 * 1024.0));
    s += " (" + count(kvcache_bytes_ / kv_block_bytes(DType::bf16)) + " in bf16 in the same " + mib + ")";
  }
  if (!k_scales_.empty())
    s += ", scales " + kv_scales_source_ + ": k " + range(k_scales_) + ", v " + range(v_scales_);
  return s;
}

bool ModelRunner::read_checkpoint_kv_scales(const Checkpoint& checkpoint) {
  // vLLM's convention: k_scale is the dequantization multiplier (k ~= q * k_scale), a scalar.
  auto scalar = [&](const std::string& name, float* out) {
    if (!checkpoint.contains(name)) return false;
    const Tensor t = checkpoint.get(name);
    if (t.numel() != 1 || !(t.dtype == DType::f32 || t.dtype == DType::bf16 || t.dtype == DType::f16))
      throw std::runtime_error("checkpoint tensor " + name + " is " + dtype_name(t.dtype) + " " + t.shape_str() +
                               "; a KV scale is one F32, BF16 or F16 value");
    *out = load_as_f32(t.data, t.dtype, 0);
    if (!(std::isfinite(*out) && *out > 0))
      throw std::runtime_error("checkpoint tensor " + name + " is " + std::to_string(*out) +
                               "; a KV scale must be positive and finite");
    return true;
  };
  const int L = model_config_.num_hidden_layers;
  std::vector<float> k(L), v(L);
  int found = 0;
  std::string missing;
  for (int l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".self_attn.";
    const bool has_k = scalar(p + "k_scale", &k[l]) || scalar(p + "k_proj.output_scale", &k[l]);
    const bool has_v = scalar(p + "v_scale", &v[l]) || scalar(p + "v_proj.output_scale", &v[l]);
    found += has_k + has_v;
    if (missing.empty() && !has_k) missing = p + "k_scale";
    if (missing.empty() && !has_v) missing = p + "v_scale";
  }
  if (found == 0) return false;
  if (!missing.empty())
    throw std::runtime_error("the checkpoint has KV scales for some layers but not " + missing +
                             " (self_attn.k_scale / v_scale, or k_proj / v_proj.output_scale)");
  k_scales_ = std::move(k);
  v_scales_ = std::move(v);
  kv_scales_source_ = "from the checkpoint";
  return true;
}

void ModelRunner::set_kv_scales() {
  if (checkpoint_kv_scales_) return;
  if (config_.calculate_kv_scales) {
    calibrate_kv_scales();
    return;
  }
  k_scales_.assign(model_config_.num_hidden_layers, 1.0f);
  v_scales_.assign(model_config_.num_hidden_layers, 1.0f);
  kv_scales_source_ = "1.0 (--no-calculate-kv-scales, none in the checkpoint)";
}

void ModelRunner::calibrate_kv_scales() {
  // vLLM's calculate_kv_scales, once: a prefill of seeded random token ids through the model with
  // a small cache of the compute dtype, then each layer's amax of the K and V it stored.
  const ModelConfig& mc = model_config_;
  const int L = mc.num_hidden_layers, bs = config_.kvcache_block_size;
  const int num_seqs = std::max(1, std::min({kKvCalibrationSeqs, max_num_seqs_, max_num_tokens_}));
  const int len =
      std::max(1, std::min({kKvCalibrationTokens / num_seqs, config_.max_model_len, max_num_tokens_ / num_seqs}));
  const int seq_blocks = (len + bs - 1) / bs, num_blocks = num_seqs * seq_blocks;
  const DType dtype = backend_->compute_dtype();
  const int64_t per_tensor = static_cast<int64_t>(num_blocks) * bs * model_->dims().kv_heads * mc.head_dim *
                             static_cast<int64_t>(dtype_size(dtype));
  DeviceBuffer buffer = backend_->alloc(static_cast<size_t>(per_tensor) * 2 * L);
  backend_->fill_zero(buffer.get(), buffer.bytes());
  KVCache kv;
  for (int l = 0; l < 2 * L; ++l)
    (l < L ? kv.k : kv.v)
        .push_back(Tensor(static_cast<char*>(buffer.get()) + per_tensor * l, dtype,
                          {num_blocks, bs, model_->dims().kv_heads, mc.head_dim}, backend_->device()));
  kv.num_blocks = num_blocks;
  kv.block_size = bs;

  backend_->synchronize();  // an earlier staging copy may still read the buffer
  const BatchLayout layout(num_seqs * len, num_seqs, num_seqs, max_num_blocks_);
  auto [ids, pos, slots, cu, lens, last, tables] = layout.arrays(staging_buffer_.get());
  const std::vector<int32_t> random_ids = kv_calibration_ids(mc.vocab_size, num_seqs * len);
  cu[0] = 0;
  for (int s = 0; s < num_seqs; ++s) {
    for (int j = 0; j < len; ++j) {
      const int t = s * len + j;
      ids[t] = random_ids[t];
      pos[t] = j;
      slots[t] = (s * seq_blocks + j / bs) * bs + j % bs;
    }
    cu[s + 1] = (s + 1) * len;
    lens[s] = len;
    last[s] = (s + 1) * len - 1;
    int32_t* row = tables + static_cast<size_t>(s) * max_num_blocks_;
    for (int b = 0; b < max_num_blocks_; ++b) row[b] = b < seq_blocks ? s * seq_blocks + b : -1;
  }
  copy_staging(layout);
  const ForwardInputs in = inputs_at(layout, num_seqs * len, num_seqs, num_seqs, true, len, len);
  Tensor logits = rank_ == 0 ? logits_.rows(0, num_seqs) : Tensor();
  model_->forward(in, kv, logits);
  backend_->synchronize();

  std::vector<char> host(static_cast<size_t>(per_tensor));
  auto amax = [&](const Tensor& t, const char* what, int l) {
    backend_->copy_to_host(host.data(), t.data, host.size());
    float m = 0;
    for (int64_t i = 0, n = t.numel(); i < n; ++i) m = std::max(m, std::fabs(load_as_f32(host.data(), dtype, i)));
    if (!std::isfinite(m))
      throw std::runtime_error(std::string("KV scale calibration: layer ") + std::to_string(l) + "'s " + what +
                               " is not finite");
    return m;
  };
  k_scales_.resize(L);
  v_scales_.resize(L);
  for (int l = 0; l < L; ++l) {
    k_scales_[l] = fp8_kv_scale(amax(kv.k[l], "K", l), kv_dtype_);
    v_scales_[l] = fp8_kv_scale(amax(kv.v[l], "V", l), kv_dtype_);
  }
  kv_scales_source_ = "calibrated over " + std::to_string(num_seqs * len) + " random tokens";
}

ModelRunner::~ModelRunner() = default;

int64_t ModelRunner::kv_block_bytes() const { return kv_block_bytes(kv_dtype_); }

int64_t ModelRunner::kv_block_bytes(DType dtype) const {
  return 2LL * model_config_.num_hidden_layers * config_.kvcache_block_size * model_->dims().kv_heads *
         model_config_.head_dim * static_cast<int64_t>(dtype_size(dtype));
}

int ModelRunner::decide_num_blocks() {
  const int64_t block_bytes = kv_block_bytes();
  const int64_t needed = block_bytes * max_num_blocks_;  // one sequence of max_model_len
  // More blocks than every sequence at full length can never be used.
  const int64_t useful = static_cast<int64_t>(max_num_seqs_) * max_num_blocks_ + 1;
  int64_t num_blocks = 0;
  std::string available;
  if (config_.num_kvcache_blocks > 0) {
    num_blocks = config_.num_kvcache_blocks;
    available = "num_kvcache_blocks " + std::to_string(num_blocks) + " = " + std::to_string(num_blocks * block_bytes) +
                " bytes";
  } else if (backend_->device() == DeviceKind::cpu) {
    num_blocks = cpu_num_blocks(block_bytes, useful, &available);
  } else {
    // nano-vLLM's rule: run the largest batch once (with a throw-away cache for one sequence) so
    // every workspace exists, then give the cache what is left of total x utilization.
    {
      allocate_blocks(max_num_blocks_);
      int len = std::min(config_.max_model_len, max_num_tokens_);
      int num_seqs = std::min(max_num_seqs_, std::max(1, max_num_tokens_ / len));
      BatchLayout layout(num_seqs * len, num_seqs, num_seqs, max_num_blocks_);
      ForwardInputs in = prepare_dummy(num_seqs, len, layout, len);
      in.meta.is_prefill = true;
      in.meta.max_seqlen_q = len;
      Tensor logits = logits_.rows(0, num_seqs);
      model_->forward(in, kv_, logits);
      backend_->synchronize();
      kv_ = KVCache{};
      kv_buffer_ = DeviceBuffer{};
    }
    size_t free_bytes = 0, total_bytes = 0;
    backend_->memory_info(&free_bytes, &total_bytes);
    double budget = static_cast<double>(total_bytes) * config_.gpu_memory_utilization -
                    static_cast<double>(total_bytes - free_bytes);
    num_blocks = budget > 0 ? std::min<int64_t>(static_cast<int64_t>(budget / block_bytes), useful) : 0;
    available = std::to_string(static_cast<int64_t>(std::max(budget, 0.0))) + " bytes available (" +
                std::to_string(free_bytes) + " free of " + std::to_string(total_bytes) +
                ", gpu_memory_utilization " + std::to_string(config_.gpu_memory_utilization) + ")";
  }
  if (num_blocks < max_num_blocks_)
    throw std::runtime_error("KV cache too small for one sequence of max_model_len " +
                             std::to_string(config_.max_model_len) + ": needs " + std::to_string(needed) +
                             " bytes (" + std::to_string(max_num_blocks_) + " blocks of " +
                             std::to_string(block_bytes) + " bytes), has " + available +
                             "; lower --max-model-len or give the cache more memory");
  if (num_blocks > (1LL << 30)) throw std::runtime_error("KV cache: too many blocks " + std::to_string(num_blocks));
  if (kv_cache_reason_.empty()) kv_cache_reason_ = available;
  return static_cast<int>(num_blocks);
}

int64_t ModelRunner::cpu_num_blocks(int64_t block_bytes, int64_t useful, std::string* available) {
  // Sized to the job (every sequence at max_model_len: more can never be used), capped by
  // cpu_kvcache_space_gb and by 90% of the memory available now (the weights loaded). Pages are
  // committed as blocks fill (CpuBackend::fill_zero), so a cache sized for the whole job costs
  // only what the running sequences hold.
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  const double space_gb = config_.cpu_kvcache_space_gb > 0 ? config_.cpu_kvcache_space_gb : kDefaultCpuKvcacheSpaceGb;
  size_t free_bytes = 0, total_bytes = 0;
  backend_->memory_info(&free_bytes, &total_bytes);
  const int64_t by_space = static_cast<int64_t>(space_gb * kGiB / block_bytes);
  const int64_t by_memory = static_cast<int64_t>(0.9 * static_cast<double>(free_bytes) / block_bytes);
  const int64_t num_blocks = std::min({useful, by_space, by_memory});
  char why[512];
  const char* space_from = config_.cpu_kvcache_space_gb > 0 ? "--cpu-kvcache-space" : "the default --cpu-kvcache-space";
  if (num_blocks == useful)
    std::snprintf(why, sizeof why, "sized to the job, max_num_seqs %d x max_model_len %d (under %s %.2f GiB and 90%% of %.1f GiB available)",
                  max_num_seqs_, config_.max_model_len, space_from, space_gb, free_bytes / kGiB);
  else if (num_blocks == by_space)
    std::snprintf(why, sizeof why, "capped by %s %.2f GiB (the job, max_num_seqs %d x max_model_len %d, would take %.2f GiB)",
                  space_from, space_gb, max_num_seqs_, config_.max_model_len, useful * static_cast<double>(block_bytes) / kGiB);
  else
    std::snprintf(why, sizeof why, "capped by 90%% of the %.2f GiB available (the job, max_num_seqs %d x max_model_len %d, would take %.2f GiB)",
                  free_bytes / kGiB, max_num_seqs_, config_.max_model_len, useful * static_cast<double>(block_bytes) / kGiB);
  kv_cache_reason_ = why;
  *available = why;
  return num_blocks;
}

void ModelRunner::allocate_blocks(int num_blocks) {
  const ModelConfig& mc = model_config_;
  const int L = mc.num_hidden_layers, bs = config_.kvcache_block_size;
  const int64_t per_tensor = kv_block_bytes() / (2LL * L) * num_blocks;
  kv_ = KVCache{};
  kv_buffer_ = DeviceBuffer{};
  kv_buffer_ = backend_->alloc(static_cast<size_t>(per_tensor) * 2 * L);
  backend_->fill_zero(kv_buffer_.get(), kv_buffer_.bytes());
  char* base = static_cast<char*>(kv_buffer_.get());
  for (int l = 0; l < 2 * L; ++l) {
    Tensor t(base + per_tensor * l, kv_dtype_, {num_blocks, bs, model_->dims().kv_heads, mc.head_dim},
             backend_->device());
    (l < L ? kv_.k : kv_.v).push_back(t);
  }
  if (is_fp8(kv_dtype_)) {  // set_kv_scales ran first
    kv_.k_scale = k_scales_;
    kv_.v_scale = v_scales_;
  }
  kv_.num_blocks = num_blocks;
  kv_.block_size = bs;
  kvcache_bytes_ = per_tensor * 2 * L;
}

ForwardInputs ModelRunner::inputs_at(const BatchLayout& layout, int num_tokens, int num_seqs, int num_rows,
                                     bool is_prefill, int max_seqlen_q, int max_seqlen_k) {
  const BatchLayout::Arrays dev = layout.arrays(static_cast<char*>(inputs_device_.get()));
  const DeviceKind d = backend_->device();
  ForwardInputs in;
  in.input_ids = Tensor(dev.input_ids, DType::i32, {num_tokens}, d);
  in.positions = Tensor(dev.positions, DType::i32, {num_tokens}, d);
  in.last_token_indices = Tensor(dev.last_token_indices, DType::i32, {num_rows}, d);
  AttentionMetadata& m = in.meta;
  m.is_prefill = is_prefill;
  m.num_seqs = num_seqs;
  m.num_tokens = num_tokens;
  m.max_seqlen_q = max_seqlen_q;
  m.max_seqlen_k = max_seqlen_k;
  m.cu_seqlens_q = dev.cu_seqlens_q;
  m.seqlens_k = dev.seqlens_k;
  m.slot_mapping = dev.slot_mapping;
  m.block_tables = dev.block_tables;
  m.max_num_blocks = max_num_blocks_;
  return in;
}

void ModelRunner::copy_staging(const BatchLayout& layout) {
  backend_->copy_to_device(inputs_device_.get(), staging_buffer_.get(), layout.total);
}

ForwardInputs ModelRunner::prepare_dummy(int num_seqs, int len, const BatchLayout& layout, int max_seqlen_k) {
  // The previous staging copy may still be in flight on the device's stream (steps end with a
  // synchronizing copy back; warm-up and capture do not): wait before overwriting the buffer.
  backend_->synchronize();
  auto [ids, pos, slots, cu, lens, last, tables] = layout.arrays(staging_buffer_.get());
  const int blocks_used = (len + config_.kvcache_block_size - 1) / config_.kvcache_block_size;
  cu[0] = 0;
  for (int s = 0; s < num_seqs; ++s) {
    for (int j = 0; j < len; ++j) {
      int t = s * len + j;
      ids[t] = 0;
      pos[t] = j;
      slots[t] = -1;  // store nothing: the zeroed blocks keep every read finite
    }
    cu[s + 1] = (s + 1) * len;
    lens[s] = len;
    last[s] = (s + 1) * len - 1;
    int32_t* row = tables + static_cast<size_t>(s) * max_num_blocks_;
    for (int b = 0; b < max_num_blocks_; ++b) row[b] = b < blocks_used ? b : -1;
  }
  copy_staging(layout);
  return inputs_at(layout, num_seqs * len, num_seqs, num_seqs, false, len, max_seqlen_k);
}

void ModelRunner::capture_cudagraph() {
  if (!backend_->supports_graphs() || config_.enforce_eager) return;
  if (group_) group_->send(WorkerCommand{.op = WorkerOp::capture});  // the ranks capture together
  const int max_bs = std::min(max_num_seqs_, max_num_tokens_);
  std::vector<int> sizes = graph_batch_sizes(max_bs);
  // Largest first, as nano-vLLM does, so smaller graphs reuse the largest one's memory.
  for (auto it = sizes.rbegin(); it != sizes.rend(); ++it) {
    const int bs = *it;
    BatchLayout layout(bs, bs, bs, max_num_blocks_);
    GraphIO& io = graph_io_[bs];
    io.in = prepare_dummy(bs, 1, layout, config_.max_model_len);
    io.logits = logits_.rows(0, bs);
    model_->forward(io.in, kv_, io.logits);  // warm-up outside the graph
    graphs_[bs] = backend_->capture_graph([this, &io] { model_->forward(io.in, kv_, io.logits); });
  }
  backend_->synchronize();
  if (group_) group_->wait_done();
  if (rank_ == 0)
    std::fprintf(stderr, "nanovllm: captured %zu decode CUDA graphs (batch sizes 1..%d)\n", sizes.size(), max_bs);
}

ForwardInputs ModelRunner::prepare(const ScheduledBatch& batch, const BatchLayout& layout, int num_rows) {
  auto [ids, pos, slots, cu, lens, last, tables] = layout.arrays(staging_buffer_.get());
  const int bs = config_.kvcache_block_size;
  const std::vector<Sequence*>& seqs = batch.seqs;

  int t = 0, rows = 0, max_q = 0, max_k = 0;
  size_t next_sampled = 0;  // batch.sampled is in batch order
  cu[0] = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const Sequence& s = *seqs[i];
    const int begin = s.num_computed_tokens, end = begin + s.num_scheduled_tokens;
    for (int p = begin; p < end; ++p, ++t) {
      ids[t] = s.token_ids[p];
      pos[t] = p;
      slots[t] = s.block_table[p / bs] * bs + p % bs;
    }
    cu[i + 1] = t;
    lens[i] = end;
    max_q = std::max(max_q, s.num_scheduled_tokens);
    max_k = std::max(max_k, end);
    int32_t* row = tables + i * max_num_blocks_;
    const int nb = static_cast<int>(s.block_table.size());
    std::copy(s.block_table.begin(), s.block_table.end(), row);
    std::fill(row + nb, row + max_num_blocks_, -1);
    if (next_sampled < batch.sampled.size() && batch.sampled[next_sampled] == &s) {
      ++next_sampled;
      last[rows++] = t - 1;
    }
  }
  const int num_seqs = static_cast<int>(seqs.size());
  if (rows == 0) last[rows++] = t - 1;  // a lone partial chunk: one row of logits, not sampled
  // Decode padding up to a captured graph's batch size: one dummy token per row that stores
  // nothing and reads block 0 (zeroed) for one position.
  for (int i = num_seqs; i < num_rows; ++i, ++t) {
    ids[t] = 0;
    pos[t] = 0;
    slots[t] = -1;
    cu[i + 1] = t + 1;
    lens[i] = 1;
    last[rows++] = t;
    int32_t* row = tables + static_cast<size_t>(i) * max_num_blocks_;
    row[0] = 0;
    std::fill(row + 1, row + max_num_blocks_, -1);
  }
  const int padded_seqs = std::max(num_seqs, num_rows);
  return inputs_at(layout, t, batch.is_prefill ? num_seqs : padded_seqs, rows, batch.is_prefill, max_q, max_k);
}

StepResult ModelRunner::run(const ScheduledBatch& batch, StepTiming* timing) {
  StepResult result;
  const int num_seqs = static_cast<int>(batch.seqs.size());
  if (num_seqs == 0) return result;
  if (num_seqs > max_num_seqs_) throw std::logic_error("ModelRunner: batch larger than max_num_seqs");
  if (batch.num_tokens > max_num_tokens_)
    throw std::logic_error("ModelRunner: batch larger than max_num_batched_tokens");
  const int num_sampled = static_cast<int>(batch.sampled.size());
  // Decode replays the smallest captured graph that fits, padding the batch up to its size.
  auto graph = batch.is_prefill ? graphs_.end() : graphs_.lower_bound(num_seqs);
  const bool use_graph = graph != graphs_.end();
  const int padded = use_graph ? graph->first : num_seqs;
  const BatchLayout layout = batch.is_prefill
                                 ? BatchLayout(batch.num_tokens, num_seqs, std::max(num_sampled, 1), max_num_blocks_)
                                 : BatchLayout(padded, padded, padded, max_num_blocks_);
  ForwardInputs in = prepare(batch, layout, batch.is_prefill ? 0 : padded);
  if (timing) *timing = StepTiming{steady_seconds(), 0, padded};
  forward_staged(layout, in, use_graph ? graph->first : 0, logits_.rows(0, in.last_token_indices.size(0)));
  if (num_sampled > 0) sampler_->sample(batch.sampled, logits_.rows(0, num_sampled), result.tokens, result.logprobs);
  if (batch.is_prefill) prompt_logprobs(batch, result);  // after sampling: it reuses the logits rows
  if (num_sampled == 0) backend_->synchronize();  // only a partial prefill chunk ran
  if (timing) timing->done = steady_seconds();
  return result;
}

void ModelRunner::prompt_logprobs(const ScheduledBatch& batch, StepResult& result) {
  // (sequence, hidden-state row, target token) for every prompt position this step owes.
  struct Want {
    Sequence* seq;
    int32_t row, target;
  };
  std::vector<Want> wants;
  int t0 = 0;
  for (Sequence* s : batch.seqs) {
    const int begin = s->num_computed_tokens, end = begin + s->num_scheduled_tokens;
    if (s->wants_prompt_logprobs()) {
      // Position p's logits give the logprob of prompt token p + 1; positions up to `done` are done.
      const int done = static_cast<int>(s->prompt_logprobs.size());
      for (int p = std::max(begin, done); p < std::min(end, s->num_prompt_tokens - 1); ++p)
        wants.push_back({s, t0 + (p - begin), s->token_ids[p + 1]});
    }
    t0 += s->num_scheduled_tokens;
  }
  for (size_t at = 0; at < wants.size(); at += max_num_seqs_) {
    const int R = static_cast<int>(std::min<size_t>(max_num_seqs_, wants.size() - at));
    std::vector<int32_t> targets(R);
    int num_top = 0;
    for (int i = 0; i < R; ++i) {
      rows_host_.get()[i] = wants[at + i].row;
      targets[i] = wants[at + i].target;
      num_top = std::max(num_top, *wants[at + i].seq->params.prompt_logprobs);
    }
    Tensor logits = logits_.rows(0, R);
    logits_of_rows(R, logits);
    std::vector<PositionLogprobs> lps = sampler_->logprobs(logits, targets, num_top);
    for (int i = 0; i < R; ++i) {
      Sequence* s = wants[at + i].seq;
      if (result.prompt_logprobs.empty() || result.prompt_logprobs.back().first != s)
        result.prompt_logprobs.push_back({s, {}});
      lps[i].top.resize(std::min<size_t>(lps[i].top.size(), static_cast<size_t>(*s->params.prompt_logprobs)));
      result.prompt_logprobs.back().second.push_back(std::move(lps[i]));
    }
  }
}

void ModelRunner::logits_of_rows(int R, Tensor logits) {
  if (group_) group_->send(WorkerCommand{.op = WorkerOp::logits_of, .value = R}, rows_host_.get(), sizeof(int32_t) * R);
  backend_->copy_to_device(rows_device_.get(), rows_host_.get(), sizeof(int32_t) * R);
  model_->logits_of(Tensor(rows_device_.get(), DType::i32, {R}, backend_->device()), logits);
}

std::vector<float> ModelRunner::last_logits(int rows) {
  if (rows < 0 || rows > max_num_seqs_) throw std::invalid_argument("last_logits: " + std::to_string(rows) + " rows");
  std::vector<float> out(static_cast<size_t>(rows) * model_config_.vocab_size);
  backend_->copy_to_host(out.data(), logits_.data, out.size() * sizeof(float));
  return out;
}

}  // namespace nanovllm
