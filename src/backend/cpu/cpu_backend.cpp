// CpuBackend: the Backend interface on the host, float32 math over weights kept in their
// checkpoint's dtype (f32, bf16, f16) or quantized to int8, and a KV cache in f32, bf16 or f16.
// Its ops get arguments the op contract (op_contract.cpp) has checked, values included, and hand
// the math to cpu_ops.
#include "backend/cpu/cpu_backend.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cpu/cpu_convert.h"
#include "backend/cpu/cpu_math.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/shm_group.h"
#include "backend/allocation_tracker.h"
#include "backend/fp8_host.h"
#include "backend/half.h"

namespace nanovllm {
namespace {

// (MemAvailable, MemTotal) in bytes from /proc/meminfo.
void read_meminfo(size_t* avail, size_t* total) {
  *avail = *total = 0;
  std::ifstream in("/proc/meminfo");
  std::string key;
  size_t kb;
  std::string unit;
  while (in >> key >> kb) {
    std::getline(in, unit);
    if (key == "MemAvailable:") *avail = kb * 1024;
    if (key == "MemTotal:") *total = kb * 1024;
  }
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const BackendOptions& opts)
      : threads_(opts.num_threads > 0 ? opts.num_threads : std::max(1, static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)))),
        isa_(cpu::resolve_isa(opts.cpu_isa)),
        int8_weights_(opts.int8_weights),
        fp8_weights_(opts.fp8_weights),
        blas_core_(cpu::pick_blas_kernels()),
        pool_(threads_) {}
  ~CpuBackend() override {
    for (auto& [p, bytes] : mapped_) munmap(p, bytes);
  }

  DeviceKind device() const override { return DeviceKind::cpu; }
  std::string name() const override {
    return "cpu (" + std::to_string(threads_) + " threads, " + cpu::isa_name(isa_) + ", OpenBLAS " + blas_core_ + ")";
  }
  DType compute_dtype() const override { return DType::f32; }
  // An FP8 checkpoint's matrices are dequantized into the dtype DecoderModel asks for (the
  // checkpoint's other tensors', as transformers does); under --quantization fp8 the quantized
  // weights are kept dequantized in f32 (q * scale rounded once to f32, the dequantized weight's
  // definition), so this engine is the FP8 model's exact reference.
  DType weight_dtype(DType checkpoint) const override {
    return int8_weights_ ? DType::i8 : fp8_weights_ ? DType::f32 : checkpoint;
  }
  bool quantizes_fp8() const override { return fp8_weights_; }
  bool takes_mixed_weight(DType t) const override { return t == DType::bf16 || t == DType::f16 || t == DType::i8; }
  bool takes_kv(DType t) const override {
    return t == DType::f32 || t == DType::bf16 || t == DType::f16 || t == DType::f8e4m3 || t == DType::f8e5m2;
  }
  bool weights_in_place() const override { return true; }

  // ---- memory ----
  void* raw_alloc(size_t bytes) override {
    // Big buffers (weights, KV cache, activations) are anonymous mappings of their own: pages the
    // kernel hands out zeroed on first touch, so memory is committed only where written (a KV
    // cache sized for the whole job costs what the running sequences fill), and freed buffers go
    // back to the system. Those of 32 MiB and more (weights, activations) ask for transparent
    // huge pages (a hint: THP is often "madvise"-only; failure only costs speed); the KV cache is
    // left on 4 KiB pages (see fill_zero).
    if (bytes >= kMappedBytes) {
      const size_t rounded = (bytes + kPage - 1) / kPage * kPage;
      void* p = mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) throw_no_memory(bytes);
      if (rounded >= kHugeBytes) madvise(p, rounded, MADV_HUGEPAGE);
      {
        std::lock_guard<std::mutex> lock(mapped_mu_);
        mapped_[p] = rounded;
      }
      allocations_.add(p, rounded);
      return p;
    }
    void* p = std::aligned_alloc(64, (std::max<size_t>(bytes, 1) + 63) / 64 * 64);
    if (!p) throw_no_memory(bytes);
    allocations_.add(p, bytes);
    return p;
  }
  void raw_free(void* p) override {
    if (!p) return;
    allocations_.remove(p);
    {
      std::lock_guard<std::mutex> lock(mapped_mu_);
      auto it = mapped_.find(p);
      if (it != mapped_.end()) {
        munmap(p, it->second);
        mapped_.erase(it);
        return;
      }
    }
    std::free(p);
  }
  // (No bytes may come with null pointers, e.g. an empty vector's data(): memcpy must not see those.)
  void copy_to_device(void* dst, const void* src, size_t bytes) override { if (bytes) std::memcpy(dst, src, bytes); }
  void copy_to_host(void* dst, const void* src, size_t bytes) override { if (bytes) std::memcpy(dst, src, bytes); }
  // Whole pages of a mapped buffer are dropped instead of written (MADV_DONTNEED: the next touch
  // maps a zero page), so zeroing a KV cache commits none of it; the ends are written. Huge pages
  // are taken back from such a buffer first: a cache filled a block at a time should commit
  // 4 KiB at a time, not 2 MiB.
  void fill_zero(void* dst, size_t bytes) override {
    char* p = static_cast<char*>(dst);
    if (bytes >= kMappedBytes && in_mapping(p, bytes)) {
      char* begin = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(p) + kPage - 1) / kPage * kPage);
      char* end = reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(p + bytes) / kPage * kPage);
      if (begin < end && madvise(begin, end - begin, MADV_NOHUGEPAGE) == 0 &&
          madvise(begin, end - begin, MADV_DONTNEED) == 0) {
        std::memset(p, 0, begin - p);
        std::memset(end, 0, p + bytes - end);
        return;
      }
    }
    std::memset(dst, 0, bytes);
  }
  void synchronize() override {}
  void memory_info(size_t* free_bytes, size_t* total_bytes) override { read_meminfo(free_bytes, total_bytes); }
  size_t peak_allocated_bytes() const override { return allocations_.peak(); }
  void* host_alloc(size_t bytes) override {
    void* p = std::malloc(std::max<size_t>(bytes, 1));
    if (!p) throw std::runtime_error("cpu backend: cannot allocate " + std::to_string(bytes) + " host bytes");
    return p;
  }
  void host_free(void* p) override { std::free(p); }

  void do_upload_convert(const Tensor& src, Tensor& dst) override {
    if (is_fp8(src.dtype) || is_fp8(dst.dtype)) {
      upload_fp8(src, dst);
      return;
    }
    if (dst.dtype == DType::i8 && src.dtype != DType::i8) {
      cpu::quantize_rows_int8(src.data, src.dtype, rows_of(src), cols_of(src), dst.ptr<int8_t>(), pool_);
      return;
    }
    if (src.dtype == dst.dtype) {
      std::memcpy(dst.data, src.data, src.nbytes());
      return;
    }
    const int64_t n = src.numel();
    const DType st = src.dtype, dt = dst.dtype;
    const void* s = src.data;
    void* d = dst.data;
    pool_.parallel_for(n, 65536, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) store_from_f32(d, dt, i, load_as_f32(s, st, i));
    });
  }

  // FP8 weights (backend.h, upload_convert): a copy with scales, float rows quantized to f8e4m3
  // with per-row scales, or scaled FP8 dequantized (fp8_host.h), rows split over the pool.
  void upload_fp8(const Tensor& src, Tensor& dst) {
    const int64_t R = rows_of(src), K = cols_of(src);
    if (is_fp8(src.dtype) && is_fp8(dst.dtype)) {
      std::memcpy(dst.data, src.data, src.nbytes());
      if (dst.scale) std::memcpy(dst.scale, src.scale, scale_count(src) * sizeof(float));
      return;
    }
    if (is_fp8(dst.dtype)) {
      pool_.parallel_for(R, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, K)), [&](int64_t b, int64_t e) {
        std::vector<float> row(static_cast<size_t>(K));
        for (int64_t r = b; r < e; ++r) {
          for (int64_t k = 0; k < K; ++k) row[k] = load_as_f32(src.data, src.dtype, r * K + k);
          quantize_row_fp8_e4m3(row.data(), K, dst.ptr<uint8_t>() + r * K, dst.scale + r);
        }
      });
      return;
    }
    const size_t es = dtype_size(dst.dtype);
    pool_.parallel_for(R, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, K)), [&](int64_t b, int64_t e) {
      dequantize_fp8_rows(src, b, e, static_cast<char*>(dst.data) + b * K * es, dst.dtype);
    });
  }

  void do_scale_columns(Tensor& w, const Tensor& scale) override {
    const int64_t K = cols_of(w), N = rows_of(w);
    float* p = w.ptr<float>();
    const float* s = scale.ptr<float>();
    pool_.parallel_for(N, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, K)), [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; ++n)
        for (int64_t k = 0; k < K; ++k) p[n * K + k] *= s[k];
    });
  }

  // ---- ops ----
  void do_embedding(const Tensor& ids, const Tensor& table, int64_t vocab_start, Tensor& out, float scale) override {
    const int64_t T = ids.numel(), H = weight_cols(table), S = rows_of(table);
    const int32_t* id = ids.ptr<int32_t>();
    const cpu::WeightView w = cpu::weight_view(table);
    float* o = out.ptr<float>();
    for (int64_t t = 0; t < T; ++t) {
      const int64_t r = id[t] - vocab_start;
      if (r < 0 || r >= S) {  // another rank's shard of the vocabulary
        std::memset(o + t * H, 0, H * sizeof(float));
        continue;
      }
      cpu::weight_rows_to_f32(w, r, r + 1, o + t * H);
      if (scale != 1.0f)
        for (int64_t h = 0; h < H; ++h) o[t * H + h] *= scale;
    }
  }

  void do_rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override {
    norm_rows(x.ptr<float>(), w.ptr<float>(), eps, out.ptr<float>(), rows_of(x), cols_of(x));
  }

  void do_rms_norm_add(const Tensor& x, const Tensor& w, float eps, Tensor& residual) override {
    const int64_t T = rows_of(x), H = cols_of(x);
    const float *xp = x.ptr<float>(), *wp = w.ptr<float>();
    float* r = residual.ptr<float>();
    pool_.parallel_for(T, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, H)), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const float inv = inv_rms(xp + t * H, H, eps);
        for (int64_t i = 0; i < H; ++i) r[t * H + i] += xp[t * H + i] * inv * wp[i];
      }
    });
  }

  void do_add_bias(Tensor& x, const Tensor& bias) override {
    const int64_t T = rows_of(x), N = cols_of(x);
    float* p = x.ptr<float>();
    const float* b = bias.ptr<float>();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t n = 0; n < N; ++n) p[t * N + n] += b[n];
  }

  void do_softcap(Tensor& x, float cap) override {
    float* p = x.ptr<float>();
    const float inv = 1.0f / cap;
    const int64_t n = x.numel();
    pool_.parallel_for(n, 65536, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) p[i] = cap * std::tanh(p[i] * inv);
    });
  }

  void do_linear(const Tensor& x, const Tensor& w, Tensor& out, bool accumulate) override {
    cpu::gemm(x.ptr<float>(), cpu::weight_view(w), out.ptr<float>(), rows_of(x), pool_, isa_, accumulate);
  }

  void do_qk_norm_rope_store(const RopeStore& in, const PagedKV& cache, Tensor& q_out) override {
    cpu::qk_norm_rope_store(in, folded_scales(in.folded, rows_of(in.qkv)), cache, q_out, pool_);
  }

  void do_attention(const Tensor& q, const PagedKV& cache, const AttentionMetadata& meta, const AttentionOptions& opts,
                    Tensor& out) override {
    cpu::paged_attention(q, cache, meta, opts, out, pool_);
  }

  void do_act_mul(const Tensor& x, const FoldedNorm& folded, Activation act, Tensor& out) override {
    const int64_t T = rows_of(x), I = cols_of(out);
    const float* scale = folded_scales(folded, T);
    const float* xp = x.ptr<float>();
    float* o = out.ptr<float>();
    pool_.parallel_for(T, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, I)), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const float* g = xp + t * 2 * I;
        const float* u = g + I;
        const float f = scale ? scale[t] : 1.0f;
        float* r = o + t * I;
        if (act == Activation::silu) {  // g f / (1 + e^(-g f)) * (u f), 8 at a time
          const __m256 fv = _mm256_set1_ps(f), one = _mm256_set1_ps(1.0f);
          auto silu_mul = [&](__m256 gv, __m256 uv) {
            gv = _mm256_mul_ps(gv, fv);
            const __m256 e = cpu::exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv));
            return _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, e)), _mm256_mul_ps(uv, fv));
          };
          int64_t i = 0;
          for (; i + 8 <= I; i += 8) _mm256_storeu_ps(r + i, silu_mul(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
          if (i < I) {
            const int n = static_cast<int>(I - i);
            cpu::store_partial(r + i, silu_mul(cpu::load_partial(g + i, n, 0.f), cpu::load_partial(u + i, n, 0.f)), n);
          }
        } else {  // gelu_tanh, as torch's gelu(approximate="tanh")
          constexpr float kSqrt2OverPi = 0.7978845608028654f;
          for (int64_t i = 0; i < I; ++i) {
            const float gi = g[i] * f;
            r[i] = 0.5f * gi * (1.0f + std::tanh(kSqrt2OverPi * (gi + 0.044715f * gi * gi * gi))) * (u[i] * f);
          }
        }
      }
    });
  }

  void do_gather_rows(const Tensor& x, const Tensor& idx, Tensor& out) override {
    const int64_t row = cols_of(x) * static_cast<int64_t>(dtype_size(x.dtype));
    const int32_t* id = idx.ptr<int32_t>();
    for (int64_t b = 0; b < idx.numel(); ++b)
      std::memcpy(static_cast<char*>(out.data) + b * row, static_cast<const char*>(x.data) + id[b] * row, row);
  }

  void do_sample(const Tensor& logits, const SampleBatch& batch, Tensor& out) override {
    cpu::sample(logits.ptr<float>(), rows_of(logits), cols_of(logits), batch, out.ptr<int32_t>(), pool_);
  }

  void do_logprobs(const Tensor& logits, const Tensor& rows, const Tensor& ids, int num_top,
                   LogprobsOut& out) override {
    cpu::logprobs(logits.ptr<float>(), cols_of(logits), rows.ptr<int32_t>(), rows.numel(), ids.ptr<int32_t>(), num_top,
                  out, pool_);
  }

  void do_reset_token_counts(const TokenCounts& counts, int row, const Tensor& prompt_ids,
                             const Tensor& output_ids) override {
    cpu::reset_token_counts(counts, row, prompt_ids.ptr<int32_t>(), prompt_ids.numel(), output_ids.ptr<int32_t>(),
                            output_ids.numel());
  }

  // ---- tensor parallelism: ranks are processes on this host, collectives through shared memory ----
  std::string new_group_id(int world) override {
    group_ = std::make_unique<ShmGroup>(ShmGroup::create(world));
    return group_->id();
  }
  void join_group(const std::string& id, int rank, int world) override {
    if (!group_ || group_->id() != id) group_ = std::make_unique<ShmGroup>(ShmGroup::open(id));
    group_->join(rank, world);
    group_rank_ = rank;
    group_size_ = world;
  }
  void abort_group(const std::string& reason) override {
    if (group_) group_->abort(reason);
  }
  void do_all_reduce(Tensor& x) override { group_->all_reduce(x); }
  void do_gather(const Tensor& x, Tensor& out) override { group_->gather(x.data, out.data, x.nbytes()); }
  void do_copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t width) override {
    const size_t es = dtype_size(src.dtype);
    for (int64_t r = 0; r < src.size(0); ++r)
      std::memcpy(static_cast<char*>(dst.data) + (r * dst.size(1) + dst_col) * es,
                  static_cast<const char*>(src.data) + (r * src.size(1) + src_col) * es, width * es);
  }

 private:
  // A folded norm's factor per row (inv_rms of rows[t]), in scale_; nullptr when nothing is folded.
  const float* folded_scales(const FoldedNorm& f, int64_t T) {
    if (!f.rows) return nullptr;
    const int64_t H = cols_of(*f.rows);
    const float* rows = f.rows->ptr<float>();
    scale_.resize(static_cast<size_t>(T));
    pool_.parallel_for(T, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, H)), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) scale_[static_cast<size_t>(t)] = inv_rms(rows + t * H, H, f.eps);
    });
    return scale_.data();
  }

  // 1 / sqrt(mean(row^2) + eps), the sum of squares in double.
  static float inv_rms(const float* row, int64_t H, float eps) {
    double ss = 0;
    for (int64_t i = 0; i < H; ++i) ss += static_cast<double>(row[i]) * row[i];
    return static_cast<float>(1.0 / std::sqrt(ss / H + eps));
  }

  // out = x / rms * w, row by row.
  void norm_rows(const float* x, const float* w, float eps, float* out, int64_t T, int64_t H) {
    pool_.parallel_for(T, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, H)), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const float* src = x + t * H;
        const float inv = inv_rms(src, H, eps);
        float* o = out + t * H;
        for (int64_t i = 0; i < H; ++i) o[i] = src[i] * inv * w[i];
      }
    });
  }

  [[noreturn]] static void throw_no_memory(size_t bytes) {
    size_t avail, total;
    read_meminfo(&avail, &total);
    throw std::runtime_error("cpu backend: cannot allocate " + std::to_string(bytes) + " bytes (" +
                             std::to_string(avail) + " bytes available)");
  }
  // True when [p, p + bytes) lies inside one of raw_alloc's mappings.
  bool in_mapping(const char* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mapped_mu_);
    auto it = mapped_.upper_bound(const_cast<char*>(p));
    if (it == mapped_.begin()) return false;
    --it;
    const char* base = static_cast<const char*>(it->first);
    return p >= base && p + bytes <= base + it->second;
  }

  static constexpr size_t kPage = 4096;
  static constexpr size_t kMappedBytes = 1u << 20;   // buffers from here up are mappings of their own
  static constexpr size_t kHugeBytes = 32u << 20;    // and from here up ask for huge pages
  const int threads_;
  const cpu::Isa isa_;
  const bool int8_weights_;
  const bool fp8_weights_;  // --quantization fp8: projections quantized, then kept dequantized in f32
  const std::string blas_core_;
  cpu::ThreadPool pool_;
  std::unique_ptr<ShmGroup> group_;
  AllocationTracker allocations_;
  std::mutex mapped_mu_;
  std::map<void*, size_t> mapped_;  // raw_alloc's mappings and their lengths
  std::vector<float> scale_;  // folded_scales' result
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& opts) { return std::make_unique<CpuBackend>(opts); }

}  // namespace nanovllm
