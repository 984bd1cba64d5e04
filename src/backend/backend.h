// Backend: the op set the Qwen3 model is written over. The CPU backend (float32 math) and the
// CUDA backend (bf16 storage, fp32 accumulation) implement the same ops; tests hold CUDA to CPU.
// Ops are asynchronous on CUDA (one stream, in issue order) and synchronous on the CPU.
// Kernels know nothing of sequences: they take tensors, lengths and block tables.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/tensor.h"

namespace nanovllm {

// ---- The paged KV cache layout (one pair of tensors per layer) ------------------------------
// k_cache, v_cache: [num_blocks, block_size, num_kv_heads, head_dim] ("NHD"), in the backend's
// compute dtype. Token t of a sequence lives in block block_table[t / block_size] at row
// t % block_size. A cache slot is block_id * block_size + row; slot_mapping gives each new
// token's slot (or -1: do not store).
struct KVCache {
  std::vector<Tensor> k, v;  // per layer
  int num_blocks = 0;
  int block_size = 0;
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

// An RMSNorm folded into the projection that follows it. Qwen3Model multiplies each decoder
// norm's weight into the input columns of the projection after it, so that projection reads the
// residual stream itself and no kernel writes normalised rows; what the norm leaves over is one
// factor per row, rsqrt(mean(rows[t, :]^2) + eps), and the op that consumes the projection's
// output applies it to row t first. rows == nullptr: nothing folded.
struct FoldedNorm {
  const Tensor* rows = nullptr;  // [T, H]: the rows the norm would have normalised
  float eps = 0;
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

class Backend {
 public:
  virtual ~Backend() = default;

  virtual DeviceKind device() const = 0;
  virtual std::string name() const = 0;      // "cpu (N threads)" or the GPU's name
  virtual DType compute_dtype() const = 0;   // activations, weights and KV cache: f32 on CPU, bf16 on CUDA

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
  virtual void copy_to_device(void* dst, const void* host_src, size_t bytes) = 0;  // async w.r.t. host on CUDA when src is pinned
  virtual void copy_to_host(void* host_dst, const void* src, size_t bytes) = 0;    // waits for the copy
  virtual void copy_device(void* dst, const void* src, size_t bytes) = 0;
  virtual void fill_zero(void* dst, size_t bytes) = 0;
  virtual void synchronize() = 0;
  // Memory the KV cache may take: (free, total) bytes on the device.
  virtual void memory_info(size_t* free_bytes, size_t* total_bytes) = 0;
  virtual size_t peak_allocated_bytes() const = 0;
  // Host memory the CPU can hand to the device quickly (pinned on CUDA; plain on CPU).
  virtual void* host_alloc(size_t bytes) = 0;
  virtual void host_free(void* p) = 0;

  // Converts a host tensor (f32/bf16/f16, e.g. a mmap'd checkpoint tensor) to `dtype` in device memory.
  virtual void upload_convert(const Tensor& host_src, Tensor& dst) = 0;
  // w[n, k] *= scale[k]                    w [N, K] (compute dtype), scale f32 [K]: at load, folds an
  // RMSNorm's weight into the projection after it (FoldedNorm).
  virtual void scale_columns(Tensor& w, const Tensor& scale) = 0;
  // Throws std::invalid_argument when this backend's kernels cannot use this block size / head_dim.
  virtual void check_attention_shape(int block_size, int head_dim) const = 0;

  // ---- ops (all tensors in this backend's memory; `out` pre-allocated) ----
  // out[t, :] = table[ids[t], :]           ids i32 [T], table [V, H], out [T, H]
  virtual void embedding(const Tensor& ids, const Tensor& table, Tensor& out) = 0;
  // out = x / rms(x) * w                    x, out [T, H], w [H]
  virtual void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) = 0;
  // out = x @ w^T                           x [T, K], w [N, K], out [T, N]; out may be f32 on any backend
  virtual void linear(const Tensor& x, const Tensor& w, Tensor& out) = 0;
  // out += x @ w^T                          (a projection that adds into the residual stream)
  virtual void linear_add(const Tensor& x, const Tensor& w, Tensor& out) = 0;
  // From the fused projection qkv [T, (Hq + 2*Hkv) * D] (q heads, then k heads, then v heads),
  // its row t first scaled by `folded`'s factor for row t (when folded.rows is set):
  // RMS-norm each q and k head over D (weights q_norm_w, k_norm_w [D]), apply rotary embedding
  // (rotate-half / neox style) at positions[t] using cos_sin [max_pos, D] (cos in the first D/2
  // columns, sin in the last D/2; f32), write q to q_out [T, Hq, D], and store k and v into the
  // cache at slot_mapping[t] (skipped when -1).
  virtual void qk_norm_rope_store(const Tensor& qkv, const FoldedNorm& folded, const Tensor& q_norm_w,
                                  const Tensor& k_norm_w, const Tensor& positions, const Tensor& cos_sin, float eps,
                                  int num_q_heads, int num_kv_heads, const int32_t* slot_mapping,
                                  Tensor& k_cache, Tensor& v_cache, Tensor& q_out) = 0;
  // Paged attention for the batch described by `meta` (see AttentionMetadata): q [T, Hq, D],
  // out [T, Hq, D]; GQA: query head h reads kv head h / (Hq / Hkv). softmax(scale * q.k) v.
  virtual void attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                         const AttentionMetadata& meta, float scale, Tensor& out) = 0;
  // out = silu(x[:, :I]) * x[:, I:]         x [T, 2I], out [T, I]; row t of x first scaled by
  // `folded`'s factor for row t (when folded.rows is set)
  virtual void silu_mul(const Tensor& x, const FoldedNorm& folded, Tensor& out) = 0;
  // out[b, :] = x[idx[b], :]                x [T, H], idx i32 [B], out [B, H]
  virtual void gather_rows(const Tensor& x, const Tensor& idx, Tensor& out) = 0;
  // Samples one token per row of logits [B, V] (f32): temperature[b] == 0 takes the argmax (lowest
  // index on ties); otherwise argmax over v of logits/T - log(-log(uniform01(keys[b], counters[b], v))).
  // temperatures f32 [B], keys and counters i64 [B], out i32 [B].
  virtual void sample(const Tensor& logits, const Tensor& temperatures, const Tensor& keys,
                      const Tensor& counters, Tensor& out) = 0;

  // Seconds this backend has spent choosing kernels by timing them (the CUDA GEMM tuning).
  virtual double tuning_seconds() const { return 0; }

  // ---- CUDA graphs (the CPU backend has none) ----
  virtual bool supports_graphs() const { return false; }
  // Records the ops `fn` issues into a graph and returns its handle; replay_graph reissues them.
  virtual int capture_graph(const std::function<void()>& fn) { (void)fn; return -1; }
  virtual void replay_graph(int handle) { (void)handle; }
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
};

// "cpu" or "cuda" ("auto" is resolved by the caller with cuda_available()).
std::unique_ptr<Backend> make_backend(const std::string& device, const BackendOptions& opts = {});
// True when the CUDA backend is built in and a usable GPU is present; `why` says why not.
bool cuda_available(std::string* why = nullptr);

}  // namespace nanovllm
