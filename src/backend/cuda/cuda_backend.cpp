// CudaBackend: the Backend op set on one GPU. One non-blocking stream carries every op in issue
// order (and is what CUDA graphs capture); memory is plain cudaMalloc, counted for the peak;
// GEMMs go to cuBLASLt, everything else to our kernels (kernels.h).
#include "backend/cuda/cuda_backend.h"

#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/fp8_gemm.h"
#include "backend/cuda/gemm.h"
#include "backend/allocation_tracker.h"
#include "backend/fp8_host.h"
#include "backend/half.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/nccl_group.h"

namespace nanovllm {
namespace {

using cuda::check;

bool is_pow2(int x) { return x > 0 && (x & (x - 1)) == 0; }

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const BackendOptions& opts)
      : device_id_(opts.device_id), sync_each_op_(opts.cuda_sync), gemm_(opts.gemm_tune_all),
        nccl_library_(opts.nccl_library), fp8_weights_(opts.fp8_weights), fuse_rope_(opts.fuse_rope) {
    if (opts.decode_partition) {
      const int v = opts.decode_partition;
      if (v < kMinPartition || v > kMaxPartition || v % 32 != 0)
        throw std::invalid_argument("decode partition (NANOVLLM_DECODE_PARTITION) " + std::to_string(v) +
                                    ": expected a multiple of 32 in [" + std::to_string(kMinPartition) + ", " +
                                    std::to_string(kMaxPartition) + "]");
      max_partition_ = v;
      partition_set_ = true;
    }
    cuda::set_pdl_enabled(opts.pdl);
    fp8_gemm_.set_mma(opts.fp8_mma);
    check(cudaSetDevice(device_id_), "init", "cudaSetDevice");
    check(cudaGetDeviceProperties(&props_, device_id_), "init", "cudaGetDeviceProperties");
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "init", "cudaStreamCreate");
    gemm_ws_ = raw_alloc(kGemmWorkspace);
    gemm_.set_workspace(gemm_ws_, kGemmWorkspace);
    fp8_gemm_.set_workspace(gemm_ws_, kGemmWorkspace);  // the same stream: never both at once
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
  // The KV cache: bf16, or FP8 (e4m3, e5m2) with per-layer scales, widened in the attention kernels.
  bool takes_kv(DType t) const override { return t == DType::bf16 || is_fp8(t); }
  // FP8 weight matrices with block scales (fp8_gemm.h): e4m3, under bf16 activations.
  bool takes_scaled_weight(DType t) const override { return t == DType::f8e4m3; }
  // --quantization fp8: a float checkpoint's projections in f8e4m3 with per-channel scales; an
  // FP8 checkpoint's stay FP8 where the GEMMs take them (takes_scaled_weight).
  DType weight_dtype(DType checkpoint) const override {
    if (is_fp8(checkpoint)) return takes_scaled_weight(checkpoint) ? checkpoint : compute_dtype();
    return fp8_weights_ ? DType::f8e4m3 : compute_dtype();
  }
  bool quantizes_fp8() const override { return fp8_weights_; }

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
  void fill_zero(void* dst, size_t bytes) override {
    if (bytes) check(cudaMemsetAsync(dst, 0, bytes, stream_), "fill_zero", "cudaMemsetAsync");
  }
  void synchronize() override { check(cudaStreamSynchronize(stream_), "synchronize", "cudaStreamSynchronize"); }
  void profile(bool on) override {
    synchronize();  // the range holds only what is issued inside it
    if (on) check(cudaProfilerStart(), "profile", "cudaProfilerStart");
    else check(cudaProfilerStop(), "profile", "cudaProfilerStop");
  }
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
  void do_upload_convert(const Tensor& src, Tensor& dst) override {
    const char* op = "upload_convert";
    if (is_fp8(src.dtype) || is_fp8(dst.dtype)) {
      upload_fp8(src, dst);
      return;
    }
    if (src.dtype == dst.dtype) {
      check(cudaMemcpyAsync(dst.data, src.data, src.nbytes(), cudaMemcpyHostToDevice, stream_), op,
            "cudaMemcpyAsync");
      check(cudaStreamSynchronize(stream_), op, "cudaStreamSynchronize");
      return;
    }
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

  // FP8 weights (backend.h, upload_convert), staged on the host (fp8_host.h): a copy with scales,
  // float rows quantized to f8e4m3 with per-row scales, or scaled FP8 dequantized a chunk of rows
  // at a time into dst's dtype.
  void upload_fp8(const Tensor& src, Tensor& dst) {
    const char* op = "upload_convert";
    auto copy = [&](void* d, const void* h, size_t bytes) {
      check(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, stream_), op, "cudaMemcpyAsync");
      check(cudaStreamSynchronize(stream_), op, "cudaStreamSynchronize");  // the staging memory may go
    };
    const int64_t R = rows_of(src), K = cols_of(src);
    if (is_fp8(src.dtype) && is_fp8(dst.dtype)) {
      copy(dst.data, src.data, src.nbytes());
      if (dst.scale) copy(dst.scale, src.scale, scale_count(src) * sizeof(float));
      return;
    }
    if (is_fp8(dst.dtype)) {
      std::vector<uint8_t> q(static_cast<size_t>(R * K));
      std::vector<float> row(static_cast<size_t>(K)), scales(static_cast<size_t>(R));
      for (int64_t r = 0; r < R; ++r) {
        for (int64_t k = 0; k < K; ++k) row[k] = load_as_f32(src.data, src.dtype, r * K + k);
        quantize_row_fp8_e4m3(row.data(), K, q.data() + r * K, &scales[r]);
      }
      copy(dst.data, q.data(), q.size());
      copy(dst.scale, scales.data(), scales.size() * sizeof(float));
      return;
    }
    const size_t es = dtype_size(dst.dtype);
    const int64_t chunk_rows = std::max<int64_t>(1, (int64_t{1} << 22) / std::max<int64_t>(1, K));
    std::vector<uint8_t> stage(static_cast<size_t>(std::min(R, chunk_rows) * K) * es);
    for (int64_t b = 0; b < R; b += chunk_rows) {
      const int64_t e = std::min(R, b + chunk_rows);
      dequantize_fp8_rows(src, b, e, stage.data(), dst.dtype);
      copy(static_cast<char*>(dst.data) + b * K * es, stage.data(), static_cast<size_t>((e - b) * K) * es);
    }
  }

  void do_scale_columns(Tensor& w, const Tensor& scale) override {
    cuda::launch_scale_columns(w.data, w.dtype, scale.ptr<float>(), rows_of(w), (int)cols_of(w), stream_);
    debug_sync("scale_columns");
  }

  void do_check_attention_shape(int block_size, int head_dim, int q_heads_per_kv_head) const override {
    if (!is_pow2(block_size) || block_size > 1024)
      throw std::invalid_argument("CUDA attention: block_size " + std::to_string(block_size) +
                                  " not supported (a power of two from 1 to 1024)");
    if (head_dim != 64 && head_dim != 128 && head_dim != 256)
      throw std::invalid_argument("CUDA attention: head_dim " + std::to_string(head_dim) +
                                  " not supported (64, 128 or 256)");
    if (q_heads_per_kv_head > 8)
      throw std::invalid_argument("CUDA attention: " + std::to_string(q_heads_per_kv_head) +
                                  " query heads per kv head (CUDA takes up to 8)");
  }

  // ---- ops ----
  void do_embedding(const Tensor& ids, const Tensor& table, int64_t vocab_start, Tensor& out, float scale) override {
    cuda::launch_gather_rows(table.data, table.dtype, ids.ptr<int32_t>(), out.data, out.dtype, (int)out.size(0),
                             (int)out.size(1), (int)table.size(0), stream_, scale, (int)vocab_start);
    debug_sync("embedding");
  }

  void do_gather_rows(const Tensor& x, const Tensor& idx, Tensor& out) override {
    cuda::launch_gather_rows(x.data, x.dtype, idx.ptr<int32_t>(), out.data, out.dtype, (int)out.size(0),
                             (int)out.size(1), (int)x.size(0), stream_);
    debug_sync("gather_rows");
  }

  void do_rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override {
    cuda::launch_rms_norm(x.data, w.data, out.data, x.dtype, w.dtype, (int)rows_of(x), (int)cols_of(x), eps, stream_);
    debug_sync("rms_norm");
  }

  void do_rms_norm_add(const Tensor& x, const Tensor& w, float eps, Tensor& residual) override {
    cuda::launch_rms_norm_add(x.data, w.data, residual.data, x.dtype, w.dtype, (int)rows_of(x), (int)cols_of(x), eps,
                              stream_);
    debug_sync("rms_norm_add");
  }

  void do_add_bias(Tensor& x, const Tensor& bias) override {
    cuda::launch_add_bias(x.data, x.dtype, bias.data, bias.dtype, rows_of(x), (int)cols_of(x), stream_);
    debug_sync("add_bias");
  }

  void do_softcap(Tensor& x, float cap) override {
    cuda::launch_softcap(x.ptr<float>(), x.numel(), cap, stream_);
    debug_sync("softcap");
  }

  void do_linear(const Tensor& x, const Tensor& w, Tensor& out, bool accumulate) override {
    if (w.dtype == DType::f8e4m3) {
      fp8_gemm_.linear(x.data, fp8_weight(w), out.data, rows_of(x), w.size(0), w.size(1), out.dtype, accumulate,
                       stream_);
      debug_sync(accumulate ? "linear_add (FP8)" : "linear (FP8)");
      return;
    }
    gemm_.linear(x.data, w.data, out.data, rows_of(x), w.size(0), w.size(1), x.dtype, out.dtype, accumulate, stream_);
    debug_sync(accumulate ? "linear_add" : "linear");
  }

  // Whether the skinny GEMM's norm variants (norm_linear, norm_linear_act) take these operands:
  // a bf16 norm weight and output, and FP8 weights at up to 8 rows of x (any shape: gemv_fp8.cu has
  // a per-element path) or up to 16 where the tensor-core form takes them (n_out: the output's
  // columns), or bf16 weights gemv_supported takes (up to 8 rows; these an f32 output too: the
  // final norm and lm_head). Beyond, rms_norm into `normed`, then the linear (cuBLASLt, or the FP8
  // GEMM).
  bool skinny_norm(const Tensor& x, const Tensor& norm_w, const Tensor& w, const Tensor& out) const {
    const int64_t M = rows_of(x);
    if (norm_w.dtype != DType::bf16 || M < 1) return false;
    if (out.dtype != DType::bf16 && !(out.dtype == DType::f32 && w.dtype == DType::bf16)) return false;
    if (w.dtype == DType::f8e4m3) return fp8_gemm_.exact(x.data, fp8_weight(w), out.data, M, cols_of(out), cols_of(x));
    return w.dtype == DType::bf16 && cuda::gemv_supported(x.data, w.data, x.dtype, out.dtype, M, cols_of(x));
  }

  void do_norm_linear(const Tensor& x, const Tensor& norm_w, float eps, const Tensor& w, Tensor& out,
                      Tensor& normed) override {
    if (!skinny_norm(x, norm_w, w, out)) return Backend::do_norm_linear(x, norm_w, eps, w, out, normed);
    const int M = (int)rows_of(x), N = (int)w.size(0), K = (int)cols_of(x);
    if (w.dtype == DType::f8e4m3 && fp8_gemm_.mma(x.data, fp8_weight(w), out.data, M, N, K)) {
      cuda::launch_fp8_mma_norm(x.data, norm_w.data, eps, fp8_weight(w), out.data, M, N, K, stream_);
      debug_sync("norm_linear (FP8 mma)");
    } else if (w.dtype == DType::f8e4m3) {
      cuda::launch_gemv_fp8_norm(x.data, norm_w.data, eps, fp8_weight(w), out.data, M, N, K, stream_);
      debug_sync("norm_linear (FP8)");
    } else {
      cuda::launch_gemv_norm(x.data, norm_w.data, eps, w.data, out.data, out.dtype, M, N, K, stream_);
      debug_sync("norm_linear");
    }
  }

  // The skinny path: one kernel, each block's warps pairing gate and up columns; beyond, the base
  // class's norm_linear then act_mul.
  void do_norm_linear_act(const Tensor& x, const Tensor& norm_w, float eps, const Tensor& w, Activation act,
                          Tensor& out, Tensor& gate_up, Tensor& normed) override {
    if (out.dtype != DType::bf16 || !skinny_norm(x, norm_w, w, out))
      return Backend::do_norm_linear_act(x, norm_w, eps, w, act, out, gate_up, normed);
    const int M = (int)rows_of(x), N = (int)w.size(0), K = (int)cols_of(x);
    const cuda::Act a = act == Activation::gelu_tanh ? cuda::Act::gelu_tanh : cuda::Act::silu;
    if (w.dtype == DType::f8e4m3 && fp8_gemm_.mma(x.data, fp8_weight(w), out.data, M, N / 2, K)) {
      cuda::launch_fp8_mma_norm_act(x.data, norm_w.data, eps, fp8_weight(w), out.data, M, N, K, a, stream_);
      debug_sync("norm_linear_act (FP8 mma)");
    } else if (w.dtype == DType::f8e4m3) {
      cuda::launch_gemv_fp8_norm_act(x.data, norm_w.data, eps, fp8_weight(w), out.data, M, N, K, a, stream_);
      debug_sync("norm_linear_act (FP8)");
    } else {
      cuda::launch_gemv_norm_act(x.data, norm_w.data, eps, w.data, out.data, M, N, K, a, stream_);
      debug_sync("norm_linear_act");
    }
  }

  static cuda::RopeStoreArgs rope_args(const RopeStore& in, const PagedKV& cache, Tensor& q_out) {
    return {.qkv = in.qkv.data, .rms = row_rms(in.folded), .qkv_bias = in.qkv_bias.data, .bias_t = in.qkv_bias.dtype,
            .q_norm_w = in.q_norm_w.data, .k_norm_w = in.k_norm_w.data, .wt = in.q_norm_w.dtype,
            .positions = in.positions.ptr<int32_t>(), .cos_sin = in.cos_sin.ptr<float>(),
            .eps = in.eps, .tokens = (int)rows_of(in.qkv), .num_q_heads = in.num_q_heads,
            .num_kv_heads = in.num_kv_heads, .head_dim = cache.head_dim(), .slot_mapping = in.slot_mapping,
            .k_cache = cache.k.data, .v_cache = cache.v.data, .q_out = q_out.data, .cache_t = cache.k.dtype,
            .k_scale = cache.k_scale, .v_scale = cache.v_scale};
  }
  static cuda::PagedKVArgs kv_args(const Tensor& q, const PagedKV& cache, const AttentionMetadata& meta,
                                   const AttentionOptions& opts) {
    return {cache.k.data, cache.v.data, cache.k.dtype, cache.k_scale, cache.v_scale,
            meta.block_tables, meta.max_num_blocks, meta.seqlens_k,
            meta.num_seqs,
            {(int)q.size(1), cache.num_kv_heads(), cache.head_dim(), cache.block_size(), opts.scale,
             opts.window, opts.softcap}};
  }

  void do_qk_norm_rope_store(const RopeStore& in, const PagedKV& cache, Tensor& q_out) override {
    cuda::launch_qk_norm_rope_store(rope_args(in, cache, q_out), stream_);
    debug_sync("qk_norm_rope_store");
  }

  // A decode step's RoPE/KV store runs in the attention's blocks (attention_decode.cu) when the
  // kernel takes it (bf16 norm weights and bias); otherwise, and for prefill, the two ops.
  void do_rope_attention(const RopeStore& in, const PagedKV& cache, const AttentionMetadata& meta,
                         const AttentionOptions& opts, Tensor& q, Tensor& out) override {
    if (fuse_rope_ && !meta.is_prefill && meta.num_seqs > 0) {
      const cuda::RopeStoreArgs r = rope_args(in, cache, q);
      const cuda::PagedKVArgs kv = kv_args(q, cache, meta, opts);
      if (cuda::decode_rope_fusable(r, kv)) {
        cuda::launch_attention_decode(nullptr, kv, decode_splits(kv.sh, meta, cache.k.dtype), out.data, stream_, &r);
        debug_sync("attention (decode, with the RoPE/KV store)");
        return;
      }
    }
    Backend::do_rope_attention(in, cache, meta, opts, q, out);
  }

  void do_attention(const Tensor& q, const PagedKV& cache, const AttentionMetadata& meta, const AttentionOptions& opts,
                    Tensor& out) override {
    if (meta.num_seqs == 0) return;
    const cuda::PagedKVArgs kv = kv_args(q, cache, meta, opts);
    if (meta.is_prefill) {
      cuda::launch_attention_prefill(q.data, kv, meta.cu_seqlens_q, meta.max_seqlen_q, out.data, stream_);
      debug_sync("attention (prefill)");
      return;
    }
    cuda::launch_attention_decode(q.data, kv, decode_splits(kv.sh, meta, cache.k.dtype), out.data, stream_);
    debug_sync("attention (decode)");
  }

  void do_act_mul(const Tensor& x, const FoldedNorm& folded, Activation act, Tensor& out) override {
    cuda::launch_act_mul(x.data, row_rms(folded), act == Activation::gelu_tanh ? cuda::Act::gelu_tanh : cuda::Act::silu,
                         out.data, x.dtype, (int)rows_of(x), (int)cols_of(out), stream_);
    debug_sync("act_mul");
  }

  void do_sample(const Tensor& logits, const SampleBatch& batch, Tensor& out) override {
    const int B = (int)rows_of(logits), V = (int)cols_of(logits);
    const cuda::SampleArgs args{batch.rows,
                                batch.add_ids,
                                batch.add_values,
                                batch.counts.defined() ? batch.counts.counts.ptr<int32_t>() : nullptr,
                                batch.counts.defined() ? batch.counts.prompt_mask.ptr<uint32_t>() : nullptr,
                                batch.counts.defined() ? batch.counts.counts.ptr<int32_t>() : nullptr,
                                batch.filtered_rows,
                                batch.num_filtered,
                                batch.max_filtered_top_k};
    cuda::launch_sample(logits.ptr<float>(), args, B, V, sample_ws_.get(cuda::sample_scratch_bytes(B, V)),
                        out.ptr<int32_t>(), stream_);
    debug_sync("sample");
  }

  void do_logprobs(const Tensor& logits, const Tensor& rows, const Tensor& ids, int num_top,
                   LogprobsOut& out) override {
    if (num_top > cuda::logprobs_max_top())
      throw std::invalid_argument("logprobs: num_top " + std::to_string(num_top) + " is more than the CUDA backend's " +
                                  std::to_string(cuda::logprobs_max_top()));
    const int R = (int)rows.numel(), V = (int)cols_of(logits);
    void* scratch = logprobs_ws_.get(cuda::logprobs_scratch_bytes(R, V, num_top));
    cuda::launch_logprobs(logits.ptr<float>(), rows.ptr<int32_t>(), ids.ptr<int32_t>(), R, V, num_top, scratch,
                          out.token_logprobs.ptr<float>(), out.ranks.ptr<int32_t>(), out.top_ids.ptr<int32_t>(),
                          out.top_logprobs.ptr<float>(), stream_);
    debug_sync("logprobs");
  }

  void do_reset_token_counts(const TokenCounts& counts, int row, const Tensor& prompt_ids,
                             const Tensor& output_ids) override {
    const int V = (int)counts.counts.size(1);
    cuda::launch_reset_token_counts(counts.counts.ptr<int32_t>() + (size_t)row * V,
                                    counts.prompt_mask.ptr<int32_t>() + (size_t)row * ((V + 31) / 32), V,
                                    prompt_ids.ptr<int32_t>(), (int)prompt_ids.numel(), output_ids.ptr<int32_t>(),
                                    (int)output_ids.numel(), stream_);
    debug_sync("reset_token_counts");
  }

  // ---- tensor parallelism: one process per GPU, NCCL on this stream (captured with the kernels) ----
  std::string new_group_id(int world) override {
    (void)world;
    return cuda::NcclGroup::new_id(nccl_library_);
  }
  void join_group(const std::string& id, int rank, int world) override {
    check(cudaSetDevice(device_id_), "join_group", "cudaSetDevice");
    group_ = std::make_unique<cuda::NcclGroup>(nccl_library_, id, rank, world);
    group_rank_ = rank;
    group_size_ = world;
  }
  void abort_group(const std::string& reason) override {
    (void)reason;
    if (group_) group_->abort();
  }
  void do_all_reduce(Tensor& x) override {
    group_->all_reduce(x.data, static_cast<size_t>(x.numel()), x.dtype, stream_);
    debug_sync("all_reduce");
  }
  void do_gather(const Tensor& x, Tensor& out) override {
    group_->gather(x.data, out.data, static_cast<size_t>(x.numel()), x.dtype, stream_);
    debug_sync("gather");
  }
  void do_copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t width) override {
    const size_t es = dtype_size(src.dtype);
    check(cudaMemcpy2DAsync(static_cast<char*>(dst.data) + dst_col * es, dst.size(1) * es,
                            static_cast<const char*>(src.data) + src_col * es, src.size(1) * es, width * es,
                            src.size(0), cudaMemcpyDeviceToDevice, stream_),
          "copy_columns", "cudaMemcpy2DAsync");
    debug_sync("copy_columns");
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
  // long splits running alone at the end of the wave (the sizes measured: docs/cuda.md).
  // BackendOptions::decode_partition sets it instead, for measurements.
  int max_partition_ = 256;
  bool partition_set_ = false;  // by BackendOptions::decode_partition: the split size at any batch, FP8 too
  static constexpr int kSplitCounters = 1 << 16;  // (sequence, kv head) pairs a decode step may have

  // Splits the context so that the grid fills the GPU (8 blocks per SM) even for few sequences;
  // at most max_partition_ tokens a split. Splits past a sequence's real length (the bound is
  // max_model_len under a graph) leave at once. Splits that walk the context in chunks, or equal
  // chunks of the whole batch's tokens, measured slower (docs/cuda.md, tried and not kept). With a
  // sliding window the splits tile the window (the kernel lays them from its start), so the keys
  // to cover are at most the window: the grid shrinks with it and every split has work.
  // An FP8 cache's splits hold up to twice the tokens (the same bytes a split as bf16's): on the
  // workload 3% faster on the H100, the ramp of each split's loads amortised over more tiles.
  cuda::DecodeSplits decode_splits(const cuda::AttnShape& sh, const AttentionMetadata& meta, DType cache_t) {
    const int max_partition = is_fp8(cache_t) && !partition_set_ ? 2 * max_partition_ : max_partition_;
    const int maxk = std::max(1, sh.window > 0 ? std::min(meta.max_seqlen_k, sh.window) : meta.max_seqlen_k);
    const int ctas = meta.num_seqs * sh.num_kv_heads;
    const int want = (8 * props_.multiProcessorCount + ctas - 1) / ctas;
    int splits = (maxk + max_partition - 1) / max_partition;  // set by decode_partition: exactly these
    if (!partition_set_) splits = std::max({std::min(want, (maxk + kMinPartition - 1) / kMinPartition), splits, 1});
    int partition = (maxk + splits - 1) / splits;
    partition = (partition + 31) / 32 * 32;
    splits = (maxk + partition - 1) / partition;
    float* ws = nullptr;
    if (splits > 1)
      ws = static_cast<float*>(
          attn_ws_.get((size_t)meta.num_seqs * sh.num_q_heads * splits * (sh.head_dim + 2) * sizeof(float)));
    int* counters = meta.num_seqs * sh.num_kv_heads <= kSplitCounters ? split_counters_ : nullptr;
    return {splits, partition, ws, counters};
  }

  // A scaled FP8 weight matrix for the kernels (Tensor::scale, scale_block).
  static cuda::Fp8Weight fp8_weight(const Tensor& w) {
    return {static_cast<const uint8_t*>(w.data), w.scale, w.scale_block[0], w.scale_block[1],
            static_cast<int>(w.scale_cols())};
  }

  // A folded norm's rows for a kernel.
  static cuda::RowRms row_rms(const FoldedNorm& f) {
    if (!f.rows) return {nullptr, 0, 0.f};
    return {f.rows->data, (int)cols_of(*f.rows), f.eps};
  }

  // With BackendOptions::cuda_sync (NANOVLLM_CUDA_SYNC=1) every op waits for its kernels, so a fault inside one is reported
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
  std::string nccl_library_;
  bool fp8_weights_ = false;  // --quantization fp8 (weight_dtype)
  bool fuse_rope_ = true;     // BackendOptions::fuse_rope
  std::unique_ptr<cuda::NcclGroup> group_;  // tensor parallelism: joined group (more than one rank)
  AllocationTracker allocations_;  // before the scratch buffers: they report to it when they go
  Scratch attn_ws_{&allocations_}, sample_ws_{&allocations_}, logprobs_ws_{&allocations_};
  cuda::Fp8Gemm fp8_gemm_{gemm_, &allocations_};  // after allocations_: reports to it when it goes
};

}  // namespace

int cuda_visible_devices() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

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
