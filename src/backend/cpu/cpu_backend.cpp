// CpuBackend: the Backend interface on the host in float32. It validates shapes and dtypes (a
// clear std::invalid_argument rather than a wild read) and hands the math to cpu_ops.
#include "backend/cpu/cpu_backend.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/allocation_tracker.h"
#include "backend/half.h"

namespace nanovllm {
namespace {

[[noreturn]] void bad(const char* op, const std::string& what) {
  throw std::invalid_argument(std::string("cpu backend: ") + op + ": " + what);
}

void need_dtype(const char* op, const char* name, const Tensor& t, DType want) {
  if (t.dtype != want)
    bad(op, std::string(name) + " has dtype " + dtype_name(t.dtype) + ", expected " + dtype_name(want));
}

void need_shape(const char* op, const char* name, const Tensor& t, std::initializer_list<int64_t> want) {
  Tensor w(nullptr, t.dtype, want);
  bool same = w.ndim == t.ndim;
  for (int i = 0; same && i < t.ndim; ++i) same = w.shape[i] == t.shape[i];
  if (!same) bad(op, std::string(name) + " has shape " + t.shape_str() + ", expected " + w.shape_str());
}

// Rows and columns of a tensor seen as a matrix [rows, last dim].
int64_t cols_of(const Tensor& t) { return t.ndim ? t.shape[t.ndim - 1] : 1; }
int64_t rows_of(const Tensor& t) { return t.ndim ? t.numel() / std::max<int64_t>(1, cols_of(t)) : 1; }

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
        pool_(threads_) {}

  DeviceKind device() const override { return DeviceKind::cpu; }
  std::string name() const override { return "cpu (" + std::to_string(threads_) + " threads)"; }
  DType compute_dtype() const override { return DType::f32; }

  // ---- memory ----
  void* raw_alloc(size_t bytes) override {
    // Big buffers (weights, KV cache) get 2 MiB alignment and transparent huge pages: attention
    // reads one 4 KiB-apart row per key from the NHD cache, and with 4 KiB pages that is a TLB
    // miss per key (docs/cpu-backend.md). THP is often "madvise"-only, hence the explicit ask.
    const bool huge = bytes >= (4u << 20);
    const size_t align = huge ? (2u << 20) : 64;
    const size_t rounded = (std::max<size_t>(bytes, 1) + align - 1) / align * align;
    void* p = std::aligned_alloc(align, rounded);
    if (p && huge) madvise(p, rounded, MADV_HUGEPAGE);  // a hint: failure only costs speed
    if (!p) {
      size_t avail, total;
      read_meminfo(&avail, &total);
      throw std::runtime_error("cpu backend: cannot allocate " + std::to_string(bytes) + " bytes (" +
                               std::to_string(avail) + " bytes available)");
    }
    allocations_.add(p, rounded);
    return p;
  }
  void raw_free(void* p) override {
    if (!p) return;
    allocations_.remove(p);
    std::free(p);
  }
  void copy_to_device(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy_to_host(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy_device(void* dst, const void* src, size_t bytes) override { std::memmove(dst, src, bytes); }
  void fill_zero(void* dst, size_t bytes) override { std::memset(dst, 0, bytes); }
  void synchronize() override {}
  void memory_info(size_t* free_bytes, size_t* total_bytes) override { read_meminfo(free_bytes, total_bytes); }
  size_t peak_allocated_bytes() const override { return allocations_.peak(); }
  void* host_alloc(size_t bytes) override {
    void* p = std::malloc(std::max<size_t>(bytes, 1));
    if (!p) throw std::runtime_error("cpu backend: cannot allocate " + std::to_string(bytes) + " host bytes");
    return p;
  }
  void host_free(void* p) override { std::free(p); }

  void upload_convert(const Tensor& src, Tensor& dst) override {
    auto floating = [](DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f16; };
    if (src.numel() != dst.numel())
      bad("upload_convert", "source " + src.shape_str() + " and destination " + dst.shape_str() + " differ in size");
    if (src.dtype == dst.dtype) {
      std::memcpy(dst.data, src.data, src.nbytes());
      return;
    }
    if (!floating(src.dtype) || !floating(dst.dtype))
      bad("upload_convert", std::string("cannot convert ") + dtype_name(src.dtype) + " to " + dtype_name(dst.dtype));
    const int64_t n = src.numel();
    const DType st = src.dtype, dt = dst.dtype;
    const void* s = src.data;
    void* d = dst.data;
    pool_.parallel_for(n, 65536, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) store_from_f32(d, dt, i, load_as_f32(s, st, i));
    });
  }

  void scale_columns(Tensor& w, const Tensor& scale) override {
    need_dtype("scale_columns", "w", w, DType::f32);
    need_dtype("scale_columns", "scale", scale, DType::f32);
    const int64_t K = cols_of(w), N = rows_of(w);
    need_shape("scale_columns", "scale", scale, {K});
    float* p = w.ptr<float>();
    const float* s = scale.ptr<float>();
    pool_.parallel_for(N, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, K)), [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; ++n)
        for (int64_t k = 0; k < K; ++k) p[n * K + k] *= s[k];
    });
  }

  void check_attention_shape(int block_size, int head_dim) const override {
    if (block_size < 1) throw std::invalid_argument("cpu backend: block size " + std::to_string(block_size) + " must be >= 1");
    if (head_dim < 2 || head_dim % 2)
      throw std::invalid_argument("cpu backend: head_dim " + std::to_string(head_dim) + " must be even and >= 2");
  }

  // ---- ops ----
  void embedding(const Tensor& ids, const Tensor& table, Tensor& out) override {
    need_dtype("embedding", "ids", ids, DType::i32);
    need_dtype("embedding", "table", table, DType::f32);
    need_dtype("embedding", "out", out, DType::f32);
    const int64_t T = ids.numel(), V = table.size(0), H = cols_of(table);
    need_shape("embedding", "out", out, {T, H});
    const int32_t* id = ids.ptr<int32_t>();
    for (int64_t t = 0; t < T; ++t)
      if (id[t] < 0 || id[t] >= V)
        bad("embedding", "token id " + std::to_string(id[t]) + " at row " + std::to_string(t) +
                             " is outside the vocabulary [0, " + std::to_string(V) + ")");
    const float* tab = table.ptr<float>();
    float* o = out.ptr<float>();
    for (int64_t t = 0; t < T; ++t) std::memcpy(o + t * H, tab + id[t] * H, H * sizeof(float));
  }

  void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override {
    check_norm("rms_norm", x, w, out);
    norm_rows(x.ptr<float>(), w.ptr<float>(), eps, out.ptr<float>(), rows_of(x), cols_of(x));
  }

  void linear(const Tensor& x, const Tensor& w, Tensor& out) override { gemm_op("linear", x, w, out, false); }
  void linear_add(const Tensor& x, const Tensor& w, Tensor& out) override { gemm_op("linear_add", x, w, out, true); }

  void qk_norm_rope_store(const Tensor& qkv, const FoldedNorm& folded, const Tensor& q_norm_w, const Tensor& k_norm_w,
                          const Tensor& positions, const Tensor& cos_sin, float eps, int num_q_heads, int num_kv_heads,
                          const int32_t* slot_mapping, Tensor& k_cache, Tensor& v_cache, Tensor& q_out) override {
    const char* op = "qk_norm_rope_store";
    for (auto [n, t] : {std::pair<const char*, const Tensor*>{"qkv", &qkv}, {"q_norm_w", &q_norm_w},
                        {"k_norm_w", &k_norm_w}, {"cos_sin", &cos_sin}, {"k_cache", &k_cache},
                        {"v_cache", &v_cache}, {"q_out", &q_out}})
      need_dtype(op, n, *t, DType::f32);
    need_dtype(op, "positions", positions, DType::i32);
    if (num_q_heads < 1 || num_kv_heads < 1 || num_q_heads % num_kv_heads)
      bad(op, "num_q_heads " + std::to_string(num_q_heads) + " / num_kv_heads " + std::to_string(num_kv_heads));
    const int64_t T = rows_of(qkv), D = cos_sin.size(1), max_pos = cos_sin.size(0);
    need_shape(op, "qkv", qkv, {T, (num_q_heads + 2 * num_kv_heads) * D});
    need_shape(op, "q_norm_w", q_norm_w, {D});
    need_shape(op, "k_norm_w", k_norm_w, {D});
    if (positions.numel() != T) bad(op, "positions " + positions.shape_str() + " for " + std::to_string(T) + " tokens");
    if (q_out.numel() != T * num_q_heads * D) bad(op, "q_out " + q_out.shape_str());
    check_cache(op, k_cache, v_cache, num_kv_heads, D);
    const int64_t slots = k_cache.size(0) * k_cache.size(1);
    const int32_t* pos = positions.ptr<int32_t>();
    for (int64_t t = 0; t < T; ++t) {
      if (pos[t] < 0 || pos[t] >= max_pos)
        bad(op, "position " + std::to_string(pos[t]) + " outside the rope table [0, " + std::to_string(max_pos) + ")");
      if (slot_mapping && slot_mapping[t] >= slots)
        bad(op, "slot " + std::to_string(slot_mapping[t]) + " outside the cache (" + std::to_string(slots) + " slots)");
    }
    const float* in_scale = folded_scales(op, folded, T);
    cpu::qk_norm_rope_store(qkv.ptr<float>(), in_scale, q_norm_w.ptr<float>(), k_norm_w.ptr<float>(), pos,
                            cos_sin.ptr<float>(), eps, T, num_q_heads, num_kv_heads, static_cast<int>(D), slot_mapping,
                            k_cache.ptr<float>(), v_cache.ptr<float>(), q_out.ptr<float>(), pool_);
  }

  void attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const AttentionMetadata& meta,
                 float scale, Tensor& out) override {
    const char* op = "attention";
    need_dtype(op, "q", q, DType::f32);
    need_dtype(op, "out", out, DType::f32);
    if (q.ndim != 3) bad(op, "q " + q.shape_str() + " must be [T, Hq, D]");
    const int64_t T = q.size(0), Hq = q.size(1), D = q.size(2);
    need_shape(op, "out", out, {T, Hq, D});
    const int Hkv = static_cast<int>(k_cache.ndim == 4 ? k_cache.size(2) : 0);
    check_cache(op, k_cache, v_cache, Hkv, D);
    if (Hkv < 1 || Hq % Hkv) bad(op, "Hq " + std::to_string(Hq) + " is not a multiple of Hkv " + std::to_string(Hkv));
    if (meta.num_tokens != T) bad(op, "meta.num_tokens " + std::to_string(meta.num_tokens) + " != q rows " + std::to_string(T));
    const int bs = static_cast<int>(k_cache.size(1)), nb = static_cast<int>(k_cache.size(0));
    check_meta(meta, bs, nb);
    cpu::paged_attention(q.ptr<float>(), k_cache.ptr<float>(), v_cache.ptr<float>(), meta,
                         cpu::AttentionShape{static_cast<int>(Hq), Hkv, static_cast<int>(D), bs, nb}, scale,
                         out.ptr<float>(), pool_);
  }

  void silu_mul(const Tensor& x, const FoldedNorm& folded, Tensor& out) override {
    need_dtype("silu_mul", "x", x, DType::f32);
    need_dtype("silu_mul", "out", out, DType::f32);
    const int64_t T = rows_of(x), I = cols_of(x) / 2;
    if (cols_of(x) % 2) bad("silu_mul", "x " + x.shape_str() + " has an odd last dimension");
    need_shape("silu_mul", "out", out, {T, I});
    const float* scale = folded_scales("silu_mul", folded, T);
    const float* xp = x.ptr<float>();
    float* o = out.ptr<float>();
    pool_.parallel_for(T, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, I)), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const float* g = xp + t * 2 * I;
        const float* u = g + I;
        const float f = scale ? scale[t] : 1.0f;
        float* r = o + t * I;
        for (int64_t i = 0; i < I; ++i) {
          const float gi = g[i] * f;
          r[i] = gi / (1.0f + std::exp(-gi)) * (u[i] * f);
        }
      }
    });
  }

  void gather_rows(const Tensor& x, const Tensor& idx, Tensor& out) override {
    need_dtype("gather_rows", "idx", idx, DType::i32);
    if (x.dtype != out.dtype) bad("gather_rows", "x and out differ in dtype");
    const int64_t T = x.size(0), B = idx.numel(), row = static_cast<int64_t>(x.nbytes() / std::max<int64_t>(1, T));
    if (static_cast<int64_t>(out.nbytes()) != B * row || out.size(0) != B)
      bad("gather_rows", "out " + out.shape_str() + " for " + std::to_string(B) + " rows of x " + x.shape_str());
    const int32_t* id = idx.ptr<int32_t>();
    for (int64_t b = 0; b < B; ++b) {
      if (id[b] < 0 || id[b] >= T)
        bad("gather_rows", "index " + std::to_string(id[b]) + " outside x's " + std::to_string(T) + " rows");
      std::memcpy(static_cast<char*>(out.data) + b * row, static_cast<const char*>(x.data) + id[b] * row, row);
    }
  }

  void sample(const Tensor& logits, const Tensor& temperatures, const Tensor& keys, const Tensor& counters,
              Tensor& out) override {
    need_dtype("sample", "logits", logits, DType::f32);
    need_dtype("sample", "temperatures", temperatures, DType::f32);
    need_dtype("sample", "keys", keys, DType::i64);
    need_dtype("sample", "counters", counters, DType::i64);
    need_dtype("sample", "out", out, DType::i32);
    const int64_t B = rows_of(logits), V = cols_of(logits);
    if (logits.ndim != 2) bad("sample", "logits " + logits.shape_str() + " must be [B, V]");
    if (temperatures.numel() != B || keys.numel() != B || counters.numel() != B || out.numel() != B)
      bad("sample", "temperatures, keys, counters and out must each have " + std::to_string(B) + " entries");
    const float* tp = temperatures.ptr<float>();
    for (int64_t b = 0; b < B; ++b)
      if (!(tp[b] >= 0.0f) || std::isinf(tp[b])) bad("sample", "temperature " + std::to_string(tp[b]) + " in row " + std::to_string(b));
    cpu::sample(logits.ptr<float>(), B, V, tp, keys.ptr<int64_t>(), counters.ptr<int64_t>(), out.ptr<int32_t>(),
                pool_);
  }

 private:
  void check_norm(const char* op, const Tensor& x, const Tensor& w, const Tensor& out) {
    need_dtype(op, "x", x, DType::f32);
    need_dtype(op, "w", w, DType::f32);
    need_dtype(op, "out", out, DType::f32);
    if (w.numel() != cols_of(x)) bad(op, "w " + w.shape_str() + " does not match x " + x.shape_str());
    if (out.numel() != x.numel()) bad(op, "out " + out.shape_str() + " does not match x " + x.shape_str());
  }

  void check_cache(const char* op, const Tensor& k, const Tensor& v, int64_t Hkv, int64_t D) {
    need_dtype(op, "k_cache", k, DType::f32);
    need_dtype(op, "v_cache", v, DType::f32);
    if (k.ndim != 4 || k.size(2) != Hkv || k.size(3) != D)
      bad(op, "k_cache " + k.shape_str() + " must be [num_blocks, block_size, " + std::to_string(Hkv) + ", " +
                  std::to_string(D) + "]");
    need_shape(op, "v_cache", v, {k.size(0), k.size(1), k.size(2), k.size(3)});
  }

  // Every sequence's lengths and the blocks its context needs must be valid before we read them.
  void check_meta(const AttentionMetadata& m, int bs, int nb) {
    const char* op = "attention";
    if (m.num_seqs < 0 || !m.cu_seqlens_q || !m.seqlens_k || (m.num_seqs && !m.block_tables))
      bad(op, "metadata is missing cu_seqlens_q, seqlens_k or block_tables");
    if (m.cu_seqlens_q[0] != 0 || m.cu_seqlens_q[m.num_seqs] != m.num_tokens)
      bad(op, "cu_seqlens_q must run from 0 to num_tokens = " + std::to_string(m.num_tokens));
    for (int i = 0; i < m.num_seqs; ++i) {
      const int q_len = m.cu_seqlens_q[i + 1] - m.cu_seqlens_q[i], k_len = m.seqlens_k[i];
      if (q_len < 0 || k_len < q_len)
        bad(op, "sequence " + std::to_string(i) + " has " + std::to_string(q_len) + " new tokens but seqlens_k " +
                    std::to_string(k_len));
      const int need = (k_len + bs - 1) / bs;
      if (need > m.max_num_blocks)
        bad(op, "sequence " + std::to_string(i) + " needs " + std::to_string(need) + " blocks, the block table has " +
                    std::to_string(m.max_num_blocks));
      for (int b = 0; b < need; ++b) {
        const int id = m.block_tables[static_cast<int64_t>(i) * m.max_num_blocks + b];
        if (id < 0 || id >= nb)
          bad(op, "sequence " + std::to_string(i) + " block " + std::to_string(b) + " is " + std::to_string(id) +
                      ", outside the cache's " + std::to_string(nb) + " blocks");
      }
    }
  }

  void gemm_op(const char* op, const Tensor& x, const Tensor& w, Tensor& out, bool accumulate) {
    need_dtype(op, "x", x, DType::f32);
    need_dtype(op, "w", w, DType::f32);
    need_dtype(op, "out", out, DType::f32);
    const int64_t M = rows_of(x), K = cols_of(x), N = w.size(0);
    if (w.ndim != 2 || w.size(1) != K) bad(op, "w " + w.shape_str() + " does not match x " + x.shape_str());
    if (out.numel() != M * N || cols_of(out) != N)
      bad(op, "out " + out.shape_str() + ", expected [" + std::to_string(M) + ", " + std::to_string(N) + "]");
    cpu::gemm(x.ptr<float>(), w.ptr<float>(), out.ptr<float>(), M, N, K, pool_, accumulate);
  }

  // A folded norm's factor per row (inv_rms of rows[t]), in scale_; nullptr when nothing is folded.
  const float* folded_scales(const char* op, const FoldedNorm& f, int64_t T) {
    if (!f.rows) return nullptr;
    need_dtype(op, "folded.rows", *f.rows, DType::f32);
    if (rows_of(*f.rows) != T)
      bad(op, "folded.rows " + f.rows->shape_str() + " for " + std::to_string(T) + " rows");
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

  const int threads_;
  cpu::ThreadPool pool_;
  AllocationTracker allocations_;
  std::vector<float> scale_;  // folded_scales' result
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& opts) { return std::make_unique<CpuBackend>(opts); }

}  // namespace nanovllm
