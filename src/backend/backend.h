// Backend: the op set the decoder models are written over. The CPU backend (float32 math) and the
// CUDA backend (bf16 storage, fp32 accumulation) implement the same ops; tests hold CUDA to CPU.
// Ops are asynchronous on CUDA (one stream, in issue order) and synchronous on the CPU.
// Kernels know nothing of sequences: they take tensors, lengths and block tables.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/sampling.h"
#include "backend/tensor.h"
#include "util/env_options.h"

namespace nanovllm {

// ---- The paged KV cache layout (one pair of tensors per layer) ------------------------------
// k, v: [num_blocks, block_size, num_kv_heads, head_dim] ("NHD"), in a dtype the backend's
// takes_kv() accepts (the compute dtype or FP8 on CUDA; f32, bf16, f16 or FP8 on the CPU). Token t
// of a sequence lives in block block_table[t / block_size] at row t % block_size. A cache slot is
// block_id * block_size + row; slot_mapping gives each new token's slot (or -1: do not store).
// The block tables and lengths come with the batch (AttentionMetadata): they are the same for
// every layer. An FP8 cache (f8e4m3, f8e5m2) holds k / k_scale and v / v_scale (rounded to
// nearest even, saturated to the format's largest finite value): the writer divides, attention
// multiplies back in float32; the scales are per layer, positive and finite, 1 in other dtypes.
struct PagedKV {
  Tensor k, v;
  float k_scale = 1.0f, v_scale = 1.0f;
  int num_blocks() const { return static_cast<int>(k.size(0)); }
  int block_size() const { return static_cast<int>(k.size(1)); }
  int num_kv_heads() const { return static_cast<int>(k.size(2)); }
  int head_dim() const { return static_cast<int>(k.size(3)); }
};

// The whole cache: one PagedKV per layer.
struct KVCache {
  std::vector<Tensor> k, v;  // per layer
  std::vector<float> k_scale, v_scale;  // per layer (FP8 caches); empty: 1
  int num_blocks = 0;
  int block_size = 0;
  PagedKV layer(int l) const {
    return {k[l], v[l], k_scale.empty() ? 1.0f : k_scale[l], v_scale.empty() ? 1.0f : v_scale[l]};
  }
};

// ---- What attention needs to know about a batch ----------------------------------------------
// Every pointer is in the backend's memory. The batch has num_seqs sequences; sequence i brings
// q_len_i = cu_seqlens_q[i+1] - cu_seqlens_q[i] new tokens (a prefill chunk, or 1 when decoding)
// and has seqlens_k[i] tokens of context in the cache *including* the new ones (their K/V are
// stored before attention runs). New token j of sequence i sits at position
// seqlens_k[i] - q_len_i + j and attends causally to cache positions [0, that position].
// Under CUDA-graph capture the host-side maxima are upper bounds fixed at capture time:
// kernels must take the real lengths from the device arrays.
struct AttentionMetadata {
  bool is_prefill = false;       // false: every q_len_i is 1 (decode)
  int num_seqs = 0;
  int num_tokens = 0;            // cu_seqlens_q[num_seqs]
  int max_seqlen_q = 0;          // upper bound of q_len_i
  int max_seqlen_k = 0;          // upper bound of seqlens_k[i]
  const int32_t* cu_seqlens_q = nullptr;  // [num_seqs + 1]
  const int32_t* seqlens_k = nullptr;     // [num_seqs]
  const int32_t* slot_mapping = nullptr;  // [num_tokens]
  const int32_t* block_tables = nullptr;  // [num_seqs, max_num_blocks], unused entries -1
  int max_num_blocks = 0;                 // row stride of block_tables
};

// An RMSNorm folded into the projection that follows it. DecoderModel multiplies each decoder
// norm's weight into the input columns of the projection after it, so that projection reads the
// residual stream itself and no kernel writes normalised rows; what the norm leaves over is one
// factor per row, rsqrt(mean(rows[t, :]^2) + eps), and the op that consumes the projection's
// output applies it to row t first. rows == nullptr: nothing folded.
struct FoldedNorm {
  const Tensor* rows = nullptr;  // [T, H]: the rows the norm would have normalised (the input's dtype)
  float eps = 0;
};

// The inputs of qk_norm_rope_store: the fused projection qkv [T, (Hq + 2*Hkv) * D] (q heads,
// then k heads, then v heads), its row t first scaled by `folded`'s factor for row t (when
// folded.rows is set), then qkv_bias added (when defined: [(Hq + 2*Hkv) * D]); each q and k
// head RMS-normed over D (weights q_norm_w, k_norm_w [D], with eps; both undefined: no norm),
// then rotated (rotate-half / neox style) at positions[t] using cos_sin [max_pos, D] (cos in the
// first D/2 columns, sin in the last D/2; f32).
struct RopeStore {
  Tensor qkv;
  FoldedNorm folded;
  Tensor qkv_bias;
  Tensor q_norm_w, k_norm_w;
  Tensor positions;  // i32 [T]
  Tensor cos_sin;
  float eps = 0;
  int num_q_heads = 0, num_kv_heads = 0;
  const int32_t* slot_mapping = nullptr;  // [T], in the backend's memory: where k and v go (-1: nowhere)
};

// How one layer's attention reads the cache, beyond the batch's metadata.
struct AttentionOptions {
  float scale = 1.0f;  // on q.k
  int window = 0;      // > 0: the query at position i sees the keys at (i - window, i] only (HF's sliding window)
  float softcap = 0;   // > 0: scores become softcap * tanh(score / softcap) before the softmax (Gemma)
};

// The gate's activation in a gated MLP: down(act(gate) * up).
enum class Activation : uint8_t {
  silu,       // x * sigmoid(x): Llama, Qwen, Mistral
  gelu_tanh,  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): Gemma's gelu_pytorch_tanh
};

// An allocation in a backend's memory, freed when it goes out of scope.
class Backend;
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Backend* owner, void* ptr, size_t bytes) : owner_(owner), ptr_(ptr), bytes_(bytes) {}
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  Backend* owner_ = nullptr;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// The op set, in two parts. The ops (public, not virtual) check their arguments once, here for
// every backend (op_contract.cpp: devices, dtypes, shapes, head counts; on the CPU also the values
// an op indexes with, so a bad id is an error rather than a wild read), then call the backend's
// do_ version. The device part (memory, copies, synchronisation, graphs) is virtual as it is.
// Adding an op: a public op and its check in op_contract.cpp, a do_ op in each backend.
class Backend {
 public:
  virtual ~Backend() = default;

  virtual DeviceKind device() const = 0;
  virtual std::string name() const = 0;      // "cpu (N threads)" or the GPU's name
  virtual DType compute_dtype() const = 0;   // activations: f32 on CPU, bf16 on CUDA (weights, KV: below)
  // The floating dtypes the row-wise ops (embedding, rms_norm, linear, act_mul, gather_rows,
  // scale_columns, add_bias) take: the compute dtype and f32. The KV cache and attention: compute dtype only.
  bool takes_float(DType t) const { return t == compute_dtype() || t == DType::f32; }

  // ---- how weights and the KV cache are kept (CUDA: the compute dtype throughout) ----
  // The dtype a weight matrix (projection, embedding, lm-head) from a checkpoint of dtype
  // `checkpoint` is kept in. The CPU keeps the checkpoint's (or i8 under --quantization int8).
  // An FP8 checkpoint's matrices (f8e4m3 with scales): f8e4m3 where takes_scaled_weight() says
  // so (CUDA), else a floating dtype they are dequantized into at load (the CPU).
  virtual DType weight_dtype(DType checkpoint) const { (void)checkpoint; return compute_dtype(); }
  // FP8 weight matrices with their scales (Tensor::scale) that linear, linear_add and
  // norm_linear take under compute-dtype activations (CUDA: f8e4m3).
  virtual bool takes_scaled_weight(DType t) const { (void)t; return false; }
  // --quantization fp8 (BackendOptions::fp8_weights): a float checkpoint's projections are quantized
  // to f8e4m3 per output channel at load (the model quantizes them on the host); a backend that
  // does not take scaled weights (the CPU) keeps them dequantized back in weight_dtype(), the FP8
  // model's weights exactly. Embeddings and the lm-head are not quantized (vLLM's rule).
  virtual bool quantizes_fp8() const { return false; }
  // Weight dtypes that linear, norm_linear and embedding take beside f32 activations, on top of
  // takes_float's (the CPU: bf16, f16, i8 weights converted in registers).
  virtual bool takes_mixed_weight(DType t) const { (void)t; return false; }
  // The dtypes a KV cache may have (qk_norm_rope_store writes it, attention reads it).
  virtual bool takes_kv(DType t) const { return t == compute_dtype(); }
  // True when a host tensor already in weight_dtype() may serve as a weight where it lies (a
  // memory-mapped checkpoint), with no copy: the CPU backend.
  virtual bool weights_in_place() const { return false; }

  // ---- memory ----
  virtual void* raw_alloc(size_t bytes) = 0;  // throws std::runtime_error naming the bytes wanted and free
  virtual void raw_free(void* p) = 0;
  DeviceBuffer alloc(size_t bytes) { return DeviceBuffer(this, raw_alloc(bytes), bytes); }
  // A tensor in a new buffer; the buffer is appended to `owner` so it lives as long as needed.
  Tensor alloc_tensor(DType t, std::initializer_list<int64_t> shape, std::vector<DeviceBuffer>& owner) {
    Tensor x(nullptr, t, shape, device());
    owner.push_back(alloc(x.nbytes() ? x.nbytes() : 1));
    x.data = owner.back().get();
    return x;
  }
  // An FP8 weight matrix [rows, cols] with scales in blocks of {block_rows, block_cols}, in one new
  // buffer: the f32 scales right after the data, 16-byte aligned (Tensor::scale).
  Tensor alloc_scaled_weight(DType t, int64_t rows, int64_t cols, int32_t block_rows, int32_t block_cols,
                             std::vector<DeviceBuffer>& owner) {
    Tensor x(nullptr, t, {rows, cols}, device());
    x.scale_block[0] = block_rows, x.scale_block[1] = block_cols;
    const size_t data_bytes = (x.nbytes() + 15) / 16 * 16;
    const int64_t scales = ((rows + block_rows - 1) / block_rows) * ((cols + block_cols - 1) / block_cols);
    owner.push_back(alloc(data_bytes + static_cast<size_t>(scales) * sizeof(float)));
    x.data = owner.back().get();
    x.scale = reinterpret_cast<float*>(static_cast<char*>(x.data) + data_bytes);
    return x;
  }
  virtual void copy_to_device(void* dst, const void* host_src, size_t bytes) = 0;  // async w.r.t. host on CUDA when src is pinned
  virtual void copy_to_host(void* host_dst, const void* src, size_t bytes) = 0;    // waits for the copy
  virtual void fill_zero(void* dst, size_t bytes) = 0;
  virtual void synchronize() = 0;
  // Memory the KV cache may take: (free, total) bytes on the device.
  virtual void memory_info(size_t* free_bytes, size_t* total_bytes) = 0;
  virtual size_t peak_allocated_bytes() const = 0;
  // Host memory the CPU can hand to the device quickly (pinned on CUDA; plain on CPU).
  virtual void* host_alloc(size_t bytes) = 0;
  virtual void host_free(void* p) = 0;
  // Seconds this backend has spent choosing kernels by timing them (the CUDA GEMM tuning).
  virtual double tuning_seconds() const { return 0; }
  // Opens (true) or closes the range a profiler started with collection off records (CUDA:
  // cudaProfilerStart/Stop after the stream's work, for `ncu --profile-from-start off` and
  // `nsys --capture-range=cudaProfilerApi`; the CPU backend has none).
  virtual void profile(bool on) { (void)on; }

  // ---- CUDA graphs (the CPU backend has none) ----
  virtual bool supports_graphs() const { return false; }
  // Records the ops `fn` issues into a graph and returns its handle; replay_graph reissues them.
  virtual int capture_graph(const std::function<void()>& fn) { (void)fn; return -1; }
  virtual void replay_graph(int handle) { (void)handle; }

  // ---- loading ----
  // Converts a host tensor (f32/bf16/f16, e.g. a mmap'd checkpoint tensor) to dst's dtype in device memory.
  // Into an i8 dst (a backend that takes i8 weights), each row [K] is quantized: symmetric,
  // scale = max |w| / 127, q = round(w / scale), with its scale and sum in the row's tail.
  // FP8 weights (scale set on the tensor): a floating source into a scaled f8e4m3 dst with
  // scale_block {1, K} is quantized row by row, scale = max |w| / 448 (1 for a row of zeros),
  // q = w / scale rounded to nearest even; a scaled FP8 source into a floating dst is
  // dequantized, q * scale formed in float32 and rounded to dst's dtype once; into a scaled FP8
  // dst of the same dtype and scale_block it is copied with its scales.
  void upload_convert(const Tensor& host_src, Tensor& dst);
  // w[n, k] *= scale[k]                    w [N, K], scale f32 [K]: at load, folds an RMSNorm's
  // weight into the projection after it (FoldedNorm).
  void scale_columns(Tensor& w, const Tensor& scale);
  // Throws std::invalid_argument when this backend's attention cannot take this block size,
  // head_dim or number of query heads per kv head.
  void check_attention_shape(int block_size, int head_dim, int q_heads_per_kv_head = 1) const;

  // ---- ops (all tensors in this backend's memory; `out` pre-allocated) ----
  // out[t, :] = table[ids[t], :] * scale   ids i32 [T], table [V, H], out [T, H] (Gemma scales by sqrt(H))
  void embedding(const Tensor& ids, const Tensor& table, Tensor& out, float scale = 1.0f);
  // The same over a shard of the vocabulary (tensor parallelism): table [S, H] holds rows
  // [vocab_start, vocab_start + S) of a [vocab_size, H] table; rows of ids outside it are zero.
  void embedding_shard(const Tensor& ids, const Tensor& table, int64_t vocab_start, int64_t vocab_size, Tensor& out,
                       float scale = 1.0f);
  // out = x / rms(x) * w                    x, out [T, H], w [H]
  void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out);
  // residual += x / rms(x) * w              x, residual [T, H], w [H]: a norm on a sublayer's output
  // before it joins the residual stream (Gemma's post-attention and post-feedforward norms)
  void rms_norm_add(const Tensor& x, const Tensor& w, float eps, Tensor& residual);
  // x[t, :] += bias                         x [T, N], bias [N] (a projection's bias)
  void add_bias(Tensor& x, const Tensor& bias);
  // x = cap * tanh(x / cap)                 x f32 (final logit soft-capping)
  void softcap(Tensor& x, float cap);
  // out = x @ w^T                           x [T, K], w [N, K], out [T, N]; out may be f32 on any backend;
  //                                         w may be a mixed weight (takes_mixed_weight) under f32 x
  void linear(const Tensor& x, const Tensor& w, Tensor& out);
  // out += x @ w^T                          (a projection that adds into the residual stream)
  void linear_add(const Tensor& x, const Tensor& w, Tensor& out);
  // out = rms_norm(x, norm_w) @ w^T         the projection after an RMSNorm (x [T, K], norm_w
  // [K], w [N, K], out [T, N]); `normed` [T, K] is scratch the backend may write the normalised
  // rows to. CUDA at T <= 8 normalises inside the skinny GEMM, in float32 (one kernel, no rounding
  // of the normalised rows); otherwise rms_norm into `normed`, then linear.
  void norm_linear(const Tensor& x, const Tensor& norm_w, float eps, const Tensor& w, Tensor& out, Tensor& normed);
  // out = act(y[:, :I]) * y[:, I:], y = rms_norm(x, norm_w) @ w^T    the gated MLP's input side
  // (w the fused gate/up weight [2I, K], out [T, I]); `gate_up` [T, 2I] and `normed` [T, K] are
  // scratch. CUDA at T <= 8 is one skinny-GEMM kernel whose warps pair gate and up columns (y
  // never rounded); otherwise norm_linear into gate_up, then act_mul.
  void norm_linear_act(const Tensor& x, const Tensor& norm_w, float eps, const Tensor& w, Activation act, Tensor& out,
                       Tensor& gate_up, Tensor& normed);
  // RopeStore's q and k, normed and rotated: q to q_out [T, Hq, D]; k and v into `cache` at
  // slot_mapping[t] (skipped when -1).
  void qk_norm_rope_store(const RopeStore& in, const PagedKV& cache, Tensor& q_out);
  // Paged attention for the batch described by `meta` (see AttentionMetadata): q [T, Hq, D],
  // out [T, Hq, D]; GQA: query head h reads kv head h / (Hq / Hkv). softmax(scale * q.k) v.
  // softmax(scale * q.k) v, with opts' window and soft-capping.
  void attention(const Tensor& q, const PagedKV& cache, const AttentionMetadata& meta, const AttentionOptions& opts,
                 Tensor& out);
  void attention(const Tensor& q, const PagedKV& cache, const AttentionMetadata& meta, float scale, Tensor& out) {
    attention(q, cache, meta, AttentionOptions{.scale = scale}, out);
  }
  // qk_norm_rope_store into q, then attention of q into out: one op, so that a backend may fuse
  // them (CUDA does for a decode step: the attention's blocks rotate their own query heads and
  // store the newest K/V, leaving q unwritten; the outputs and the cache are the same bits).
  // in.slot_mapping must be meta.slot_mapping.
  void rope_attention(const RopeStore& in, const PagedKV& cache, const AttentionMetadata& meta,
                      const AttentionOptions& opts, Tensor& q, Tensor& out);
  // out = act(x[:, :I]) * x[:, I:]          x [T, 2I], out [T, I]; row t of x first scaled by
  // `folded`'s factor for row t (when folded.rows is set)
  void act_mul(const Tensor& x, const FoldedNorm& folded, Activation act, Tensor& out);
  void silu_mul(const Tensor& x, const FoldedNorm& folded, Tensor& out) { act_mul(x, folded, Activation::silu, out); }
  // out[b, :] = x[idx[b], :]                x [T, H], idx i32 [B], out [B, H]
  void gather_rows(const Tensor& x, const Tensor& idx, Tensor& out);
  // Samples one token per row of logits [B, V] (f32) with batch.rows[b]'s settings, in the order
  // backend/sampling.h gives, into out i32 [B]; counts the token in the row's TokenCounts row.
  // The logits are left as they are.
  void sample(const Tensor& logits, const SampleBatch& batch, Tensor& out);
  // Log-probabilities of logits [B, V] (f32, unprocessed: vLLM's raw logprobs) for R rows: row r
  // of `out` (LogprobsOut) is logits row rows[r] (i32 [R]) and token ids[rows[r]] (ids i32 [B]),
  // with the num_top largest of that row (0 <= num_top <= V).
  void logprobs(const Tensor& logits, const Tensor& rows, const Tensor& ids, int num_top, LogprobsOut& out);
  // Starts row `row` of `counts` for a sequence: no id generated but output_ids (i32, may be
  // empty), the prompt's ids prompt_ids (i32) marked.
  void reset_token_counts(const TokenCounts& counts, int row, const Tensor& prompt_ids, const Tensor& output_ids);

  // ---- tensor parallelism: one backend per rank (each a process), joined in a group ----
  // Rank 0, before the other ranks start: a new group of `world` ranks, and the id every rank
  // (rank 0 too) joins it with. CPU: a shared-memory region's name; CUDA: an NCCL unique id.
  virtual std::string new_group_id(int world);
  // Joins the group `id` as `rank` of `world`; returns when every rank has joined.
  virtual void join_group(const std::string& id, int rank, int world);
  // From any thread: the group's collectives, waiting or to come, fail with `reason` (a rank
  // died) rather than wait for ever.
  virtual void abort_group(const std::string& reason) { (void)reason; }
  int group_rank() const { return group_rank_; }
  int group_size() const { return group_size_; }
  // x = the sum over the group's ranks of x (in place; every rank gets the same values). On one
  // rank, nothing. Graph-safe.
  void all_reduce(Tensor& x);
  // Rank 0's out [world * rows(x), cols(x)] gets every rank's x, in rank order; the other ranks
  // pass an undefined out. Graph-safe.
  void gather(const Tensor& x, Tensor& out);
  // dst[:, dst_col : dst_col + width] = src[:, src_col : src_col + width]   src [R, M], dst [R, N],
  // the same dtype (a shard's logits into the whole vocabulary's row)
  void copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t width);

 protected:
  // The ops with their arguments checked (op_contract.cpp).
  virtual void do_upload_convert(const Tensor& host_src, Tensor& dst) = 0;
  virtual void do_scale_columns(Tensor& w, const Tensor& scale) = 0;
  // Limits of this backend's attention kernels beyond the contract's (block_size >= 1, head_dim
  // even and >= 2); throws std::invalid_argument naming the one exceeded.
  virtual void do_check_attention_shape(int block_size, int head_dim, int q_heads_per_kv_head) const {}
  // Rows of ids outside [vocab_start, vocab_start + table rows) are zero.
  virtual void do_embedding(const Tensor& ids, const Tensor& table, int64_t vocab_start, Tensor& out,
                            float scale) = 0;
  virtual void do_rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) = 0;
  virtual void do_rms_norm_add(const Tensor& x, const Tensor& w, float eps, Tensor& residual) = 0;
  virtual void do_add_bias(Tensor& x, const Tensor& bias) = 0;
  virtual void do_softcap(Tensor& x, float cap) = 0;
  virtual void do_linear(const Tensor& x, const Tensor& w, Tensor& out, bool accumulate) = 0;
  virtual void do_norm_linear(const Tensor& x, const Tensor& norm_w, float eps, const Tensor& w, Tensor& out,
                              Tensor& normed) {
    do_rms_norm(x, norm_w, eps, normed);
    do_linear(normed, w, out, false);
  }
  virtual void do_norm_linear_act(const Tensor& x, const Tensor& norm_w, float eps, const Tensor& w, Activation act,
                                  Tensor& out, Tensor& gate_up, Tensor& normed) {
    do_norm_linear(x, norm_w, eps, w, gate_up, normed);
    do_act_mul(gate_up, FoldedNorm{}, act, out);
  }
  virtual void do_qk_norm_rope_store(const RopeStore& in, const PagedKV& cache, Tensor& q_out) = 0;
  virtual void do_attention(const Tensor& q, const PagedKV& cache, const AttentionMetadata& meta,
                            const AttentionOptions& opts, Tensor& out) = 0;
  virtual void do_rope_attention(const RopeStore& in, const PagedKV& cache, const AttentionMetadata& meta,
                                 const AttentionOptions& opts, Tensor& q, Tensor& out) {
    do_qk_norm_rope_store(in, cache, q);
    do_attention(q, cache, meta, opts, out);
  }
  virtual void do_act_mul(const Tensor& x, const FoldedNorm& folded, Activation act, Tensor& out) = 0;
  virtual void do_gather_rows(const Tensor& x, const Tensor& idx, Tensor& out) = 0;
  virtual void do_sample(const Tensor& logits, const SampleBatch& batch, Tensor& out) = 0;
  virtual void do_logprobs(const Tensor& logits, const Tensor& rows, const Tensor& ids, int num_top,
                           LogprobsOut& out) = 0;
  virtual void do_reset_token_counts(const TokenCounts& counts, int row, const Tensor& prompt_ids,
                                     const Tensor& output_ids) = 0;
  // Collectives over the joined group (called only when it has more than one rank).
  virtual void do_all_reduce(Tensor& x) = 0;
  virtual void do_gather(const Tensor& x, Tensor& out) = 0;
  virtual void do_copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t width) = 0;
  int group_rank_ = 0, group_size_ = 1;
};

inline DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (owner_ && ptr_) owner_->raw_free(ptr_);
    owner_ = o.owner_; ptr_ = o.ptr_; bytes_ = o.bytes_;
    o.owner_ = nullptr; o.ptr_ = nullptr; o.bytes_ = 0;
  }
  return *this;
}
inline DeviceBuffer::~DeviceBuffer() {
  if (owner_ && ptr_) owner_->raw_free(ptr_);
}

struct BackendOptions {
  int num_threads = 0;   // CPU: 0 = all cores
  int device_id = 0;     // CUDA
  // Measurement and debugging switches (EnvOptions has the variables that set them).
  bool cuda_sync = false;      // every op waits for its kernels, so a fault is reported by its op
  int decode_partition = 0;    // tokens per decode-attention split (at any batch); 0 = the backend's choice
  bool pdl = true;             // kernels may start while the one before them finishes
  bool fuse_rope = true;       // CUDA: a decode step's rope_attention is one kernel (false: two, for A/Bs)
  int fp8_mma = 2;             // CUDA: FP8 weights at fp8_mma..16 rows on tensor cores (0: never)
  bool gemm_tune_all = false;  // time GEMM candidates at every decode batch size, not powers of two only
  // CPU: weights quantized to int8 at load, per output channel (--quantization int8).
  bool int8_weights = false;
  // --quantization fp8: a float checkpoint's matrices quantized to f8e4m3 at load, per output
  // channel (CUDA keeps them so; the CPU dequantizes them back, the same weights in float32).
  bool fp8_weights = false;
  // CPU: the instruction set of the kernels: "" = the best this CPU has, or "avx2" (tests and
  // measurements of the AVX2 path on an AVX-512 machine).
  std::string cpu_isa;
  std::string nccl_library;    // CUDA tensor parallelism: libnccl.so.2's path; empty = the usual places
  // These options with the environment's switches.
  BackendOptions with_env(const EnvOptions& env) const;
};

// The backend for `device` ("auto" is resolved by the caller with cuda_available()).
std::unique_ptr<Backend> make_backend(DeviceKind device, const BackendOptions& opts = {});
// True when the CUDA backend is built in and a usable GPU is present; `why` says why not.
bool cuda_available(std::string* why = nullptr);
// GPUs the CUDA backend can see (0 without it).
int cuda_device_count();

}  // namespace nanovllm
