// CudaBackend: the Backend op set on one GPU. One non-blocking stream carries every op in issue
// order (and is what CUDA graphs capture); memory is plain cudaMalloc, counted for the peak;
// GEMMs go to cuBLASLt, everything else to our kernels (kernels.h).
#include "backend/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemm.h"
#include "backend/allocation_tracker.h"
#include "backend/half.h"
#include "backend/cuda/kernels.h"

namespace nanovllm {
namespace {

using cuda::check;

[[noreturn]] void fail(const char* op, const std::string& what) {
  throw std::invalid_argument(std::string(op) + ": " + what);
}
// Throws "op: what" when !ok. `what` is a string or a callable that builds one: these checks run
// for every op of an eager step, so messages are built only when one fails.
void require(bool ok, const char* op, const char* what) {
  if (!ok) fail(op, what);
}
template <class F>
void require(bool ok, const char* op, F&& what) {
  if (!ok) fail(op, what());
}
void require_cuda(const Tensor& t, const char* op, const char* name) {
  require(t.device == DeviceKind::cuda && t.data != nullptr, op, [&] {
    return std::string(name) + " must be a CUDA tensor (got " + (t.data ? "a CPU tensor" : "no data") + ")";
  });
}
void require_dtype(const Tensor& t, DType want, const char* op, const char* name) {
  require(t.dtype == want, op,
          [&] { return std::string(name) + " must be " + dtype_name(want) + ", got " + dtype_name(t.dtype); });
}
bool is_pow2(int x) { return x > 0 && (x & (x - 1)) == 0; }
// Rows of a tensor seen as [rows, last dim]: the product of every dim but the last (no division,
// so a zero-width last dim is fine).
int64_t rows_of(const Tensor& t) {
  if (t.ndim == 0) return 0;
  int64_t r = 1;
  for (int i = 0; i + 1 < t.ndim; ++i) r *= t.shape[i];
  return r;
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const BackendOptions& opts) : device_id_(opts.device_id) {
    const char* sync = std::getenv("NANOVLLM_CUDA_SYNC");
    sync_each_op_ = sync && *sync && std::string(sync) != "0";
    // Tokens per decode split at most; NANOVLLM_DECODE_PARTITION overrides it for measurements.
    if (const char* p = std::getenv("NANOVLLM_DECODE_PARTITION")) {
      const int v = std::atoi(p);
      if (v < kMinPartition || v > kMaxPartition || v % 32 != 0)
        throw std::invalid_argument("NANOVLLM_DECODE_PARTITION=" + std::string(p) + ": expected a multiple of 32 in [" +
                                    std::to_string(kMinPartition) + ", " + std::to_string(kMaxPartition) + "]");
      max_partition_ = v;
    }
    check(cudaSetDevice(device_id_), "init", "cudaSetDevice");
    check(cudaGetDeviceProperties(&props_, device_id_), "init", "cudaGetDeviceProperties");
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "init", "cudaStreamCreate");
    gemm_ws_ = raw_alloc(kGemmWorkspace);
    gemm_.set_workspace(gemm_ws_, kGemmWorkspace);
    split_counters_ = static_cast<int*>(raw_alloc(kSplitCounters * sizeof(int)));
    check(cudaMemset(split_counters_, 0, kSplitCounters * sizeof(int)), "init", "cudaMemset");
  }

  ~CudaBackend() override {
    cudaStreamSynchronize(stream_);
    for (cudaGraphExec_t g : graphs_) cudaGraphExecDestroy(g);
    cudaFree(gemm_ws_);
    cudaFree(split_counters_);
    cudaStreamDestroy(stream_);
  }

  DeviceKind device() const override { return DeviceKind::cuda; }
  std::string name() const override { return props_.name; }
  DType compute_dtype() const override { return DType::bf16; }

  // ---- memory ----
  void* raw_alloc(size_t bytes) override {
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free allocation error
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      throw std::runtime_error("CUDA backend: cannot allocate " + std::to_string(bytes) + " bytes on GPU " +
                               std::to_string(device_id_) + " (" + std::to_string(free_b) + " of " +
                               std::to_string(total_b) + " bytes free): " + cudaGetErrorString(e));
    }
    allocations_.add(p, bytes);
    return p;
  }
  void raw_free(void* p) override {
    if (!p) return;
    allocations_.remove(p);
    cudaFree(p);  // no throw: called from destructors
  }
  void copy_to_device(void* dst, const void* src, size_t bytes) override {
    if (bytes) check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_), "copy_to_device", "cudaMemcpyAsync");
  }
  void copy_to_host(void* dst, const void* src, size_t bytes) override {
    if (bytes) check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "copy_to_host", "cudaMemcpyAsync");
    check(cudaStreamSynchronize(stream_), "copy_to_host", "cudaStreamSynchronize");
  }
  void copy_device(void* dst, const void* src, size_t bytes) override {
    if (bytes) check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_), "copy_device", "cudaMemcpyAsync");
  }
  void fill_zero(void* dst, size_t bytes) override {
    if (bytes) check(cudaMemsetAsync(dst, 0, bytes, stream_), "fill_zero", "cudaMemsetAsync");
  }
  void synchronize() override { check(cudaStreamSynchronize(stream_), "synchronize", "cudaStreamSynchronize"); }
  void memory_info(size_t* free_bytes, size_t* total_bytes) override {
    check(cudaMemGetInfo(free_bytes, total_bytes), "memory_info", "cudaMemGetInfo");
  }
  size_t peak_allocated_bytes() const override { return allocations_.peak(); }
  void* host_alloc(size_t bytes) override {
    void* p = nullptr;
    cudaError_t e = cudaMallocHost(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw std::runtime_error("CUDA backend: cannot allocate " + std::to_string(bytes) +
                               " bytes of pinned host memory: " + cudaGetErrorString(e));
    }
    return p;
  }
  void host_free(void* p) override {
    if (p) cudaFreeHost(p);
  }

  // Copies on the backend's stream and waits: the tensor is in place (and ordered before any op
  // issued after, e.g. scale_columns) when this returns.
  void upload_convert(const Tensor& src, Tensor& dst) override {
    const char* op = "upload_convert";
    require(src.device == DeviceKind::cpu, op, "source must be a host tensor");
    require_cuda(dst, op, "dst");
    require(src.numel() == dst.numel(), op,
            [&] { return "element counts differ: source " + src.shape_str() + ", destination " + dst.shape_str(); });
    if (src.dtype == dst.dtype) {
      check(cudaMemcpyAsync(dst.data, src.data, src.nbytes(), cudaMemcpyHostToDevice, stream_), op,
            "cudaMemcpyAsync");
      check(cudaStreamSynchronize(stream_), op, "cudaStreamSynchronize");
      return;
    }
    auto in_ok = [](DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f16; };
    require(in_ok(src.dtype) && in_ok(dst.dtype), op,
            [&] { return std::string("cannot convert ") + dtype_name(src.dtype) + " to " + dtype_name(dst.dtype); });
    // Convert on the host a chunk at a time (bounded staging memory), then copy.
    constexpr int64_t kChunk = 1 << 22;
    std::vector<uint8_t> stage(static_cast<size_t>(std::min<int64_t>(kChunk, src.numel())) * dtype_size(dst.dtype));
    const int64_t n = src.numel();
    for (int64_t b = 0; b < n; b += kChunk) {
      const int64_t e = std::min(n, b + kChunk);
      for (int64_t i = b; i < e; ++i) store_from_f32(stage.data(), dst.dtype, i - b, load_as_f32(src.data, src.dtype, i));
      check(cudaMemcpyAsync(static_cast<char*>(dst.data) + b * dtype_size(dst.dtype), stage.data(),
                            (e - b) * dtype_size(dst.dtype), cudaMemcpyHostToDevice, stream_),
            op, "cudaMemcpyAsync");
      check(cudaStreamSynchronize(stream_), op, "cudaStreamSynchronize");  // the staging buffer is reused
    }
  }

  void scale_columns(Tensor& w, const Tensor& scale) override {
    const char* op = "scale_columns";
    require_cuda(w, op, "w"); require_cuda(scale, op, "scale");
    require_dtype(scale, DType::f32, op, "scale");
    require(w.ndim >= 1 && scale.numel() == w.size(-1), op,
            [&] { return "shapes w " + w.shape_str() + ", scale " + scale.shape_str(); });
    cuda::launch_scale_columns(w.data, w.dtype, scale.ptr<float>(), rows_of(w), (int)w.size(-1), stream_);
    debug_sync(op);
  }

  void check_attention_shape(int block_size, int head_dim) const override {
    if (!is_pow2(block_size) || block_size > 1024)
      throw std::invalid_argument("CUDA attention: block_size " + std::to_string(block_size) +
                                  " not supported (a power of two from 1 to 1024)");
    if (head_dim != 64 && head_dim != 128)
      throw std::invalid_argument("CUDA attention: head_dim " + std::to_string(head_dim) +
                                  " not supported (64 or 128)");
  }

  // ---- ops ----
  void embedding(const Tensor& ids, const Tensor& table, Tensor& out) override {
    const char* op = "embedding";
    require_cuda(ids, op, "ids"); require_cuda(table, op, "table"); require_cuda(out, op, "out");
    require_dtype(ids, DType::i32, op, "ids");
    require(table.ndim == 2 && out.ndim == 2 && out.size(1) == table.size(1) && out.size(0) == ids.numel(), op,
            [&] {
              return "shapes ids " + ids.shape_str() + ", table " + table.shape_str() + ", out " + out.shape_str();
            });
    cuda::launch_gather_rows(table.data, table.dtype, ids.ptr<int32_t>(), out.data, out.dtype, (int)out.size(0),
                             (int)out.size(1), (int)table.size(0), stream_);
    debug_sync("embedding");
  }

  void gather_rows(const Tensor& x, const Tensor& idx, Tensor& out) override {
    const char* op = "gather_rows";
    require_cuda(x, op, "x"); require_cuda(idx, op, "idx"); require_cuda(out, op, "out");
    require_dtype(idx, DType::i32, op, "idx");
    require(x.ndim == 2 && out.ndim == 2 && out.size(1) == x.size(1) && out.size(0) == idx.numel(), op,
            [&] { return "shapes x " + x.shape_str() + ", idx " + idx.shape_str() + ", out " + out.shape_str(); });
    cuda::launch_gather_rows(x.data, x.dtype, idx.ptr<int32_t>(), out.data, out.dtype, (int)out.size(0),
                             (int)out.size(1), (int)x.size(0), stream_);
    debug_sync("gather_rows");
  }

  void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override {
    const char* op = "rms_norm";
    require_cuda(x, op, "x"); require_cuda(w, op, "w"); require_cuda(out, op, "out");
    require(x.numel() == out.numel() && x.dtype == out.dtype && w.numel() == x.size(-1), op,
            [&] { return "shapes x " + x.shape_str() + ", w " + w.shape_str() + ", out " + out.shape_str(); });
    cuda::launch_rms_norm(x.data, w.data, out.data, x.dtype, w.dtype, (int)rows_of(x), (int)x.size(-1), eps,
                          stream_);
    debug_sync("rms_norm");
  }

  void linear(const Tensor& x, const Tensor& w, Tensor& out) override { gemm_op("linear", x, w, out, false); }
  void linear_add(const Tensor& x, const Tensor& w, Tensor& out) override { gemm_op("linear_add", x, w, out, true); }

  void qk_norm_rope_store(const Tensor& qkv, const FoldedNorm& folded, const Tensor& q_norm_w, const Tensor& k_norm_w,
                          const Tensor& positions, const Tensor& cos_sin, float eps, int num_q_heads, int num_kv_heads,
                          const int32_t* slot_mapping, Tensor& k_cache, Tensor& v_cache, Tensor& q_out) override {
    const char* op = "qk_norm_rope_store";
    require_cuda(qkv, op, "qkv"); require_cuda(q_norm_w, op, "q_norm_w"); require_cuda(k_norm_w, op, "k_norm_w");
    require_cuda(positions, op, "positions"); require_cuda(cos_sin, op, "cos_sin");
    require_cuda(k_cache, op, "k_cache"); require_cuda(v_cache, op, "v_cache"); require_cuda(q_out, op, "q_out");
    require_dtype(qkv, DType::bf16, op, "qkv"); require_dtype(q_out, DType::bf16, op, "q_out");
    require_dtype(k_cache, DType::bf16, op, "k_cache"); require_dtype(v_cache, DType::bf16, op, "v_cache");
    require_dtype(positions, DType::i32, op, "positions"); require_dtype(cos_sin, DType::f32, op, "cos_sin");
    require(q_norm_w.dtype == k_norm_w.dtype, op, "q_norm_w and k_norm_w dtypes differ");
    const int64_t T = rows_of(qkv);
    const int64_t D = cos_sin.size(-1);
    require(qkv.size(-1) == (num_q_heads + 2 * num_kv_heads) * D && q_out.numel() == T * num_q_heads * D &&
                positions.numel() == T && q_norm_w.numel() == D && k_norm_w.numel() == D,
            op, [&] {
              return "shapes qkv " + qkv.shape_str() + ", q_out " + q_out.shape_str() + ", cos_sin " +
                     cos_sin.shape_str() + ", positions " + positions.shape_str() + " for " +
                     std::to_string(num_q_heads) + " q heads, " + std::to_string(num_kv_heads) + " kv heads";
            });
    cuda::launch_qk_norm_rope_store(qkv.data, row_rms(op, folded, qkv), q_norm_w.data, k_norm_w.data, q_norm_w.dtype,
                                    positions.ptr<int32_t>(), cos_sin.ptr<float>(), eps, (int)T, num_q_heads,
                                    num_kv_heads, (int)D, slot_mapping, k_cache.data, v_cache.data, q_out.data,
                                    stream_);
    debug_sync("qk_norm_rope_store");
  }

  void attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const AttentionMetadata& meta,
                 float scale, Tensor& out) override {
    const char* op = "attention";
    require_cuda(q, op, "q"); require_cuda(k_cache, op, "k_cache"); require_cuda(v_cache, op, "v_cache");
    require_cuda(out, op, "out");
    require_dtype(q, DType::bf16, op, "q"); require_dtype(out, DType::bf16, op, "out");
    require_dtype(k_cache, DType::bf16, op, "k_cache"); require_dtype(v_cache, DType::bf16, op, "v_cache");
    require(q.ndim == 3 && k_cache.ndim == 4 && out.numel() == q.numel(), op,
            [&] {
              return "q must be [T, Hq, D] and the caches [blocks, block_size, Hkv, D]; got q " + q.shape_str() +
                     ", k_cache " + k_cache.shape_str();
            });
    cuda::AttnShape sh{(int)q.size(1), (int)k_cache.size(2), (int)q.size(2), (int)k_cache.size(1), scale};
    check_attention_shape(sh.block_size, sh.head_dim);
    require(k_cache.size(3) == sh.head_dim && sh.num_kv_heads > 0 && sh.num_q_heads % sh.num_kv_heads == 0, op,
            [&] { return "q " + q.shape_str() + " does not match k_cache " + k_cache.shape_str(); });
    require(sh.num_q_heads / sh.num_kv_heads <= 8, op,
            [&] {
              return std::to_string(sh.num_q_heads / sh.num_kv_heads) + " query heads per kv head (CUDA takes up to 8)";
            });
    if (meta.num_seqs == 0) return;
    if (meta.is_prefill) {
      cuda::launch_attention_prefill(q.data, k_cache.data, v_cache.data, meta.cu_seqlens_q, meta.seqlens_k,
                                     meta.block_tables, meta.max_num_blocks, meta.num_seqs, meta.max_seqlen_q, sh,
                                     out.data, stream_);
      debug_sync("attention (prefill)");
      return;
    }
    require(q.size(0) >= meta.num_seqs, op, "decode needs one query row per sequence");
    // Split the context so that the grid fills the GPU (8 blocks per SM) even for few sequences;
    // at most max_partition_ tokens a split. Splits past a sequence's real length (the bound is
    // max_model_len under a graph) leave at once. A version whose splits walked the context in
    // chunks measured 12% less bandwidth at batch 256 (72 instead of 56 registers), and one that
    // cut the whole batch's tokens into equal chunks 7% less end to end (docs/cuda.md).
    const int maxk = std::max(1, meta.max_seqlen_k);
    const int ctas = meta.num_seqs * sh.num_kv_heads;
    const int want = (8 * props_.multiProcessorCount + ctas - 1) / ctas;
    int splits = std::min(want, (maxk + kMinPartition - 1) / kMinPartition);
    splits = std::max({splits, (maxk + max_partition_ - 1) / max_partition_, 1});
    int partition = (maxk + splits - 1) / splits;
    partition = (partition + 31) / 32 * 32;
    splits = (maxk + partition - 1) / partition;
    float* ws = nullptr;
    if (splits > 1)
      ws = static_cast<float*>(
          attn_ws_.get((size_t)meta.num_seqs * sh.num_q_heads * splits * (sh.head_dim + 2) * sizeof(float)));
    int* counters = meta.num_seqs * sh.num_kv_heads <= kSplitCounters ? split_counters_ : nullptr;
    cuda::launch_attention_decode(q.data, k_cache.data, v_cache.data, meta.seqlens_k, meta.block_tables,
                                  meta.max_num_blocks, meta.num_seqs, sh, splits, partition, ws, counters, out.data,
                                  stream_);
    debug_sync("attention (decode)");
  }

  void silu_mul(const Tensor& x, const FoldedNorm& folded, Tensor& out) override {
    const char* op = "silu_mul";
    require_cuda(x, op, "x"); require_cuda(out, op, "out");
    require(x.dtype == out.dtype && x.size(-1) == 2 * out.size(-1) && rows_of(x) == rows_of(out), op,
            [&] { return "shapes x " + x.shape_str() + ", out " + out.shape_str(); });
    cuda::launch_silu_mul(x.data, row_rms(op, folded, x), out.data, x.dtype, (int)rows_of(x), (int)out.size(-1),
                          stream_);
    debug_sync("silu_mul");
  }

  void sample(const Tensor& logits, const Tensor& temperatures, const Tensor& keys, const Tensor& counters,
              Tensor& out) override {
    const char* op = "sample";
    require_cuda(logits, op, "logits"); require_cuda(temperatures, op, "temperatures"); require_cuda(keys, op, "keys");
    require_cuda(counters, op, "counters"); require_cuda(out, op, "out");
    require_dtype(logits, DType::f32, op, "logits"); require_dtype(temperatures, DType::f32, op, "temperatures");
    require_dtype(keys, DType::i64, op, "keys"); require_dtype(counters, DType::i64, op, "counters");
    require_dtype(out, DType::i32, op, "out");
    const int64_t B = rows_of(logits);
    require(temperatures.numel() >= B && keys.numel() >= B && counters.numel() >= B && out.numel() >= B, op,
            [&] { return "one temperature, key, counter and output per logits row " + logits.shape_str(); });
    void* scratch = sample_ws_.get(cuda::sample_scratch_bytes((int)B, (int)logits.size(-1)));
    cuda::launch_sample(logits.ptr<float>(), temperatures.ptr<float>(), keys.ptr<int64_t>(), counters.ptr<int64_t>(),
                        out.ptr<int32_t>(), (int)B, (int)logits.size(-1), scratch, stream_);
    debug_sync("sample");
  }

  double tuning_seconds() const override { return gemm_.tuning_seconds(); }

  // ---- CUDA graphs ----
  bool supports_graphs() const override { return true; }
  int capture_graph(const std::function<void()>& fn) override {
    // Relaxed mode: a workspace that must grow mid-capture may still be cudaMalloc'ed.
    check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed), "capture_graph", "cudaStreamBeginCapture");
    cudaGraph_t graph = nullptr;
    try {
      fn();
    } catch (...) {
      cudaStreamEndCapture(stream_, &graph);
      if (graph) cudaGraphDestroy(graph);
      cudaGetLastError();
      throw;
    }
    check(cudaStreamEndCapture(stream_, &graph), "capture_graph", "cudaStreamEndCapture");
    cudaGraphExec_t exec = nullptr;
    cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    check(e, "capture_graph", "cudaGraphInstantiate");
    graphs_.push_back(exec);
    return static_cast<int>(graphs_.size()) - 1;
  }
  void replay_graph(int handle) override {
    if (handle < 0 || handle >= static_cast<int>(graphs_.size()))
      throw std::invalid_argument("replay_graph: no graph with handle " + std::to_string(handle));
    check(cudaGraphLaunch(graphs_[handle], stream_), "replay_graph", "cudaGraphLaunch");
  }

 private:
  static constexpr size_t kGemmWorkspace = 32u << 20;
  // Tokens per split at least: 32 is one round of loads a block (batch 1, where latency counts).
  static constexpr int kMinPartition = 32;
  static constexpr int kMaxPartition = 1024;  // scores of a split's tokens fit in shared memory
  // 256, not 1024: under a graph the bound is max_model_len, and contexts of uneven length leave
  // long 1024-token splits running alone at the end of the wave. bench.py workload on the H100:
  // 17,420 tok/s at 1024, 18,580 at 512, 18,800 at 256 (docs/cuda.md).
  int max_partition_ = 256;
  static constexpr int kSplitCounters = 1 << 16;  // (sequence, kv head) pairs a decode step may have

  void gemm_op(const char* op, const Tensor& x, const Tensor& w, Tensor& out, bool accumulate) {
    require_cuda(x, op, "x"); require_cuda(w, op, "w"); require_cuda(out, op, "out");
    require(w.ndim == 2 && x.size(-1) == w.size(1) && out.size(-1) == w.size(0) && rows_of(x) == rows_of(out), op,
            [&] { return "shapes x " + x.shape_str() + ", w " + w.shape_str() + ", out " + out.shape_str(); });
    require(x.dtype == w.dtype, op, [&] {
      return std::string("x and w dtypes differ: ") + dtype_name(x.dtype) + " vs " + dtype_name(w.dtype);
    });
    gemm_.linear(x.data, w.data, out.data, rows_of(x), w.size(0), w.size(1), x.dtype, out.dtype, accumulate, stream_);
    debug_sync(op);
  }

  // A folded norm's rows for a kernel, checked against the op's input `x` (same rows and dtype).
  static cuda::RowRms row_rms(const char* op, const FoldedNorm& f, const Tensor& x) {
    if (!f.rows) return {nullptr, 0, 0.f};
    require_cuda(*f.rows, op, "folded.rows");
    require(f.rows->dtype == x.dtype && rows_of(*f.rows) == rows_of(x) && f.rows->size(-1) > 0, op, [&] {
      return "folded.rows " + f.rows->shape_str() + " (" + dtype_name(f.rows->dtype) + ") for input " + x.shape_str() +
             " (" + dtype_name(x.dtype) + ")";
    });
    return {f.rows->data, (int)f.rows->size(-1), f.eps};
  }

  // With NANOVLLM_CUDA_SYNC=1 every op waits for its kernels, so a fault inside one is reported
  // with that op's name (otherwise it surfaces at the next synchronizing call). Not while capturing.
  void debug_sync(const char* op) {
    if (!sync_each_op_) return;
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    check(cudaStreamIsCapturing(stream_, &st), op, "cudaStreamIsCapturing");
    if (st == cudaStreamCaptureStatusNone) check(cudaStreamSynchronize(stream_), op, "kernel execution");
  }

  // Scratch memory for an op (split-KV partials, sampling picks). Grows, never shrinks: a
  // captured graph may hold the old pointer, so old buffers live until the backend does. Counted
  // in the backend's peak like every other allocation.
  struct Scratch {
    AllocationTracker* tracker;
    std::vector<void*> all;
    void* cur = nullptr;
    size_t bytes = 0;
    explicit Scratch(AllocationTracker* t) : tracker(t) {}
    void* get(size_t want) {
      if (want > bytes) {
        void* p = nullptr;
        const size_t n = std::max(want, bytes * 2);
        check(cudaMalloc(&p, n), "scratch", "cudaMalloc");
        tracker->add(p, n);
        all.push_back(p);
        cur = p;
        bytes = n;
      }
      return cur;
    }
    ~Scratch() {
      for (void* p : all) {
        tracker->remove(p);
        cudaFree(p);
      }
    }
  };

  int device_id_;
  bool sync_each_op_ = false;
  cudaDeviceProp props_{};
  cudaStream_t stream_ = nullptr;
  cuda::Gemm gemm_;
  void* gemm_ws_ = nullptr;
  int* split_counters_ = nullptr;
  std::vector<cudaGraphExec_t> graphs_;
  AllocationTracker allocations_;  // before the scratch buffers: they report to it when they go
  Scratch attn_ws_{&allocations_}, sample_ws_{&allocations_};
};

}  // namespace

bool cuda_device_usable(std::string* why) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (why) *why = std::string("no CUDA device: ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
    return false;
  }
  if (n == 0) {
    if (why) *why = "no CUDA device found";
    return false;
  }
  cudaDeviceProp p{};
  e = cudaGetDeviceProperties(&p, 0);
  if (e != cudaSuccess) {
    if (why) *why = std::string("cudaGetDeviceProperties: ") + cudaGetErrorString(e);
    return false;
  }
  if (p.major < 9) {
    if (why)
      *why = std::string(p.name) + " is compute capability " + std::to_string(p.major) + "." +
             std::to_string(p.minor) + "; this build's kernels need 9.0 (Hopper) or newer";
    return false;
  }
  return true;
}

std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& opts) { return std::make_unique<CudaBackend>(opts); }

}  // namespace nanovllm
