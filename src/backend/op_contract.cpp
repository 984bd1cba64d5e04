// The op contract: Backend's public ops check their arguments here, once for every backend, then
// call the backend's do_ op. Errors are std::invalid_argument "op: what", naming the tensor and
// what was expected. Messages are built only when a check fails: these run for every op of an
// eager step. Values an op indexes with are checked where the host can read them.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "backend/backend.h"

namespace nanovllm {
namespace {

const char* device_name(DeviceKind d) { return d == DeviceKind::cuda ? "CUDA" : "CPU"; }

// The checks of one op call on one backend.
class Check {
 public:
  Check(const Backend& b, const char* op) : b_(b), op_(op) {}

  [[noreturn]] void fail(const std::string& what) const { throw std::invalid_argument(std::string(op_) + ": " + what); }
  template <class F>
  void that(bool ok, F&& what) const {
    if (!ok) fail(what());
  }

  // In this backend's memory, with data (unless empty).
  void here(const Tensor& t, const char* name) const {
    if (t.device != b_.device())
      fail(std::string(name) + " is a " + device_name(t.device) + " tensor, expected a " + device_name(b_.device()) +
           " tensor");
    if (!t.data && t.numel() > 0) fail(std::string(name) + " has no data");
  }
  void dtype(const Tensor& t, const char* name, DType want) const {
    here(t, name);
    that(t.dtype == want, [&] {
      return std::string(name) + " has dtype " + dtype_name(t.dtype) + ", expected " + dtype_name(want);
    });
  }
  // A floating tensor of a dtype this backend's row-wise ops take (Backend::takes_float).
  void floating(const Tensor& t, const char* name) const {
    here(t, name);
    that(b_.takes_float(t.dtype), [&] {
      std::string want = dtype_name(DType::f32);
      if (b_.compute_dtype() != DType::f32) want += std::string(" or ") + dtype_name(b_.compute_dtype());
      return std::string(name) + " has dtype " + dtype_name(t.dtype) + ", expected " + want;
    });
  }
  void same_dtype(const Tensor& a, const char* an, const Tensor& b, const char* bn) const {
    that(a.dtype == b.dtype, [&] {
      return std::string(an) + " and " + bn + " differ in dtype: " + dtype_name(a.dtype) + " vs " + dtype_name(b.dtype);
    });
  }
  void shape(const Tensor& t, const char* name, std::initializer_list<int64_t> want) const {
    const Tensor w(nullptr, t.dtype, want);
    bool same = w.ndim == t.ndim;
    for (int i = 0; same && i < t.ndim; ++i) same = w.shape[i] == t.shape[i];
    that(same, [&] { return std::string(name) + " has shape " + t.shape_str() + ", expected " + w.shape_str(); });
  }
  // A row-wise op's output: `rows` rows of `cols`.
  void matrix(const Tensor& t, const char* name, int64_t rows, int64_t cols) const {
    that(rows_of(t) == rows && cols_of(t) == cols, [&] {
      return std::string(name) + " has shape " + t.shape_str() + ", expected " + std::to_string(rows) + " rows of " +
             std::to_string(cols);
    });
  }
  // A weight matrix (or embedding table) for activations x: a float dtype of this backend's, the
  // same as x's, or a mixed weight dtype the backend takes under f32 activations.
  void weight(const Tensor& w, const char* name, const Tensor& x) const {
    here(w, name);
    if (w.dtype == x.dtype && b_.takes_float(w.dtype)) return;
    if (is_fp8(w.dtype) && x.dtype == b_.compute_dtype() && b_.takes_scaled_weight(w.dtype)) {
      that(w.scale && w.scale_block[0] > 0 && w.scale_block[1] > 0, [&] {
        return std::string(name) + " is an FP8 matrix without its scales";
      });
      return;
    }
    that(x.dtype == DType::f32 && b_.takes_mixed_weight(w.dtype), [&] {
      return std::string(name) + " has dtype " + dtype_name(w.dtype) + " under " + dtype_name(x.dtype) +
             " activations; expected " + dtype_name(x.dtype) + " (this backend takes no other weight dtype there)";
    });
  }
  // A cache pair in a dtype this backend's KV cache may have, [blocks, block_size, Hkv, D] both.
  void cache(const PagedKV& c, int64_t Hkv, int64_t D) const {
    here(c.k, "k_cache");
    here(c.v, "v_cache");
    that(b_.takes_kv(c.k.dtype), [&] {
      return std::string("k_cache has dtype ") + dtype_name(c.k.dtype) + ", which this backend's KV cache cannot have";
    });
    same_dtype(c.k, "k_cache", c.v, "v_cache");
    that(std::isfinite(c.k_scale) && c.k_scale > 0 && std::isfinite(c.v_scale) && c.v_scale > 0, [&] {
      return "the cache's scales (k " + std::to_string(c.k_scale) + ", v " + std::to_string(c.v_scale) +
             ") must be positive and finite";
    });
    that(c.k.ndim == 4 && c.k.size(2) == Hkv && c.k.size(3) == D, [&] {
      return "k_cache has shape " + c.k.shape_str() + ", expected [num_blocks, block_size, " + std::to_string(Hkv) +
             ", " + std::to_string(D) + "]";
    });
    shape(c.v, "v_cache", {c.k.size(0), c.k.size(1), c.k.size(2), c.k.size(3)});
  }
  // A folded norm's rows for the op's input x: x's dtype and rows, a non-empty last dim.
  void folded(const FoldedNorm& f, const Tensor& x) const {
    if (!f.rows) return;
    here(*f.rows, "folded.rows");
    same_dtype(*f.rows, "folded.rows", x, "the input");
    that(rows_of(*f.rows) == rows_of(x) && cols_of(*f.rows) > 0, [&] {
      return "folded.rows has shape " + f.rows->shape_str() + ", expected " + std::to_string(rows_of(x)) +
             " non-empty rows (the input is " + x.shape_str() + ")";
    });
  }
  bool host_visible() const { return b_.device() == DeviceKind::cpu; }

 private:
  const Backend& b_;
  const char* op_;
};

bool is_floating(DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f16; }

// ---- Values an op indexes with or divides by (token ids, slots, block tables, temperatures).
// They read the data, so they run only where the host can (Check::host_visible: the CPU
// backend): there a bad value is an error message rather than a wild read.

// Every entry of idx (i32) in [0, limit); `what` names an entry ("token id"), `of` the range's owner.
void check_row_indices(const Check& c, const char* what, const Tensor& idx, int64_t limit, const char* of) {
  const int32_t* id = idx.ptr<int32_t>();
  for (int64_t t = 0; t < idx.numel(); ++t)
    if (id[t] < 0 || id[t] >= limit)
      c.fail(std::string(what) + " " + std::to_string(id[t]) + " at row " + std::to_string(t) + " is outside " + of +
             " [0, " + std::to_string(limit) + ")");
}

// Positions inside the rope table, slots inside the cache.
void check_rope_store_values(const Check& c, const RopeStore& in, const PagedKV& cache) {
  const int64_t max_pos = in.cos_sin.size(0), slots = cache.k.size(0) * cache.k.size(1);
  const int32_t* pos = in.positions.ptr<int32_t>();
  for (int64_t t = 0; t < in.positions.numel(); ++t) {
    if (pos[t] < 0 || pos[t] >= max_pos)
      c.fail("position " + std::to_string(pos[t]) + " outside the rope table [0, " + std::to_string(max_pos) + ")");
    if (in.slot_mapping[t] >= slots)
      c.fail("slot " + std::to_string(in.slot_mapping[t]) + " outside the cache (" + std::to_string(slots) + " slots)");
  }
}

// Lengths that add up, and block-table entries inside the cache for every block a context needs.
void check_attention_values(const Check& c, const AttentionMetadata& m, const PagedKV& cache) {
  const int bs = cache.block_size(), nb = cache.num_blocks();
  if (m.cu_seqlens_q[0] != 0 || m.cu_seqlens_q[m.num_seqs] != m.num_tokens)
    c.fail("cu_seqlens_q must run from 0 to num_tokens = " + std::to_string(m.num_tokens));
  for (int i = 0; i < m.num_seqs; ++i) {
    const int q_len = m.cu_seqlens_q[i + 1] - m.cu_seqlens_q[i], k_len = m.seqlens_k[i];
    if (q_len < 0 || k_len < q_len)
      c.fail("sequence " + std::to_string(i) + " has " + std::to_string(q_len) + " new tokens but seqlens_k " +
             std::to_string(k_len));
    const int need = (k_len + bs - 1) / bs;
    if (need > m.max_num_blocks)
      c.fail("sequence " + std::to_string(i) + " needs " + std::to_string(need) + " blocks, the block table has " +
             std::to_string(m.max_num_blocks));
    for (int b = 0; b < need; ++b) {
      const int id = m.block_tables[static_cast<int64_t>(i) * m.max_num_blocks + b];
      if (id < 0 || id >= nb)
        c.fail("sequence " + std::to_string(i) + " block " + std::to_string(b) + " is " + std::to_string(id) +
               ", outside the cache's " + std::to_string(nb) + " blocks");
    }
  }
}

// Every temperature finite and >= 0.
// Each row's settings in range, its sparse adds inside the batch's list and the vocabulary, its
// counts row inside the counts (the engine's SamplingParams checks give the user-facing messages;
// these keep a kernel from reading out of bounds).
void check_sampling_rows(const Check& c, const SampleBatch& batch, int64_t B, int64_t V) {
  for (int64_t b = 0; b < B; ++b) {
    const SamplingRow& r = batch.rows[b];
    const std::string row = " in row " + std::to_string(b);
    if (!(r.temperature >= 0.0f) || std::isinf(r.temperature)) c.fail("temperature " + std::to_string(r.temperature) + row);
    if (!(r.top_p > 0.0f && r.top_p <= 1.0f)) c.fail("top_p " + std::to_string(r.top_p) + row + ", expected (0, 1]");
    if (!(r.min_p >= 0.0f && r.min_p <= 1.0f)) c.fail("min_p " + std::to_string(r.min_p) + row + ", expected [0, 1]");
    if (r.top_k < 0) c.fail("top_k " + std::to_string(r.top_k) + row + ", expected >= 0 (0 = off)");
    if (!(r.repetition_penalty > 0.0f) || !std::isfinite(r.repetition_penalty) || !std::isfinite(r.presence_penalty) ||
        !std::isfinite(r.frequency_penalty))
      c.fail("penalties" + row + " must be finite, the repetition penalty > 0");
    if (r.adds_begin < 0 || r.adds_begin > r.adds_end || r.adds_end > batch.num_adds)
      c.fail("sparse adds [" + std::to_string(r.adds_begin) + ", " + std::to_string(r.adds_end) + ")" + row +
             " outside the batch's " + std::to_string(batch.num_adds));
    if (r.counts_row >= 0 && (!batch.counts.defined() || r.counts_row >= batch.counts.rows()))
      c.fail("counts row " + std::to_string(r.counts_row) + row + " outside the token counts");
    if (r.counts_row < 0 && r.has_penalties()) c.fail("penalties" + row + " without a counts row");
  }
  int next = 0;  // filtered_rows: exactly the rows with filters, ascending
  for (int64_t b = 0; b < B; ++b) {
    if (!batch.rows[b].has_filters()) continue;
    if (next >= batch.num_filtered || batch.filtered_rows[next] != b)
      c.fail("filtered_rows does not list row " + std::to_string(b) + ", which has min_p, top_k or top_p");
    ++next;
  }
  if (next != batch.num_filtered) c.fail("filtered_rows lists rows without min_p, top_k or top_p");
  for (int i = 0; i < batch.num_adds; ++i)
    if (batch.add_ids[i] < 0 || batch.add_ids[i] >= V)
      c.fail("sparse add id " + std::to_string(batch.add_ids[i]) + " outside the vocabulary [0, " + std::to_string(V) + ")");
}

// linear and linear_add: out (+)= x @ w^T.
void check_linear(const Check& c, const Tensor& x, const Tensor& w, const Tensor& out) {
  c.floating(x, "x");
  c.weight(w, "w", x);
  c.floating(out, "out");
  c.that(w.ndim == 2 && weight_cols(w) == cols_of(x), [&] {
    return "w has shape " + w.shape_str() + ", expected [N, " + std::to_string(cols_of(x)) + "]" +
           (w.dtype == DType::i8 ? " plus the int8 row tail" : "");
  });
  c.matrix(out, "out", rows_of(x), w.size(0));
}

// norm_linear's arguments (norm_linear_act's, `out` its gate_up).
void check_norm_linear(const Check& c, const Tensor& x, const Tensor& norm_w, const Tensor& w, const Tensor& out,
                       const Tensor& normed) {
  check_linear(c, x, w, out);
  c.floating(norm_w, "norm_w");
  c.shape(norm_w, "norm_w", {cols_of(x)});
  c.same_dtype(x, "x", normed, "normed");
  c.matrix(normed, "normed", rows_of(x), cols_of(x));
}

// qk_norm_rope_store's checks (rope_attention's too).
void check_rope_store(const Check& c, const Backend& b, const RopeStore& in, const PagedKV& cache,
                      const Tensor& q_out) {
  const int Hq = in.num_q_heads, Hkv = in.num_kv_heads;
  c.that(Hq >= 1 && Hkv >= 1 && Hq % Hkv == 0, [&] {
    return "num_q_heads " + std::to_string(Hq) + " must be a positive multiple of num_kv_heads " + std::to_string(Hkv);
  });
  c.dtype(in.qkv, "qkv", b.compute_dtype());
  c.dtype(q_out, "q_out", b.compute_dtype());
  c.dtype(in.positions, "positions", DType::i32);
  c.dtype(in.cos_sin, "cos_sin", DType::f32);
  c.that(in.q_norm_w.defined() == in.k_norm_w.defined(),
         [&] { return std::string("q_norm_w and k_norm_w must be both given or both left out"); });
  c.that(in.cos_sin.ndim == 2,
         [&] { return "cos_sin has shape " + in.cos_sin.shape_str() + ", expected [max_pos, D]"; });
  const int64_t T = rows_of(in.qkv), D = in.cos_sin.size(1);
  c.shape(in.qkv, "qkv", {T, (Hq + 2 * Hkv) * D});
  if (in.q_norm_w.defined()) {
    c.floating(in.q_norm_w, "q_norm_w");
    c.floating(in.k_norm_w, "k_norm_w");
    c.same_dtype(in.q_norm_w, "q_norm_w", in.k_norm_w, "k_norm_w");
    c.shape(in.q_norm_w, "q_norm_w", {D});
    c.shape(in.k_norm_w, "k_norm_w", {D});
  }
  if (in.qkv_bias.defined()) {
    c.floating(in.qkv_bias, "qkv_bias");
    c.shape(in.qkv_bias, "qkv_bias", {(Hq + 2 * Hkv) * D});
  }
  c.shape(in.positions, "positions", {T});
  c.shape(q_out, "q_out", {T, Hq, D});
  c.folded(in.folded, in.qkv);
  c.cache(cache, Hkv, D);
  c.that(in.slot_mapping != nullptr, [&] { return std::string("slot_mapping is missing"); });
  if (c.host_visible()) check_rope_store_values(c, in, cache);
}

// attention's checks (rope_attention's too).
void check_attention(const Check& c, const Backend& b, const Tensor& q, const PagedKV& cache,
                     const AttentionMetadata& meta, const AttentionOptions& opts, const Tensor& out) {
  c.dtype(q, "q", b.compute_dtype());
  c.dtype(out, "out", b.compute_dtype());
  c.that(q.ndim == 3, [&] { return "q has shape " + q.shape_str() + ", expected [T, Hq, D]"; });
  const int64_t T = q.size(0), Hq = q.size(1), D = q.size(2);
  c.shape(out, "out", {T, Hq, D});
  const int Hkv = cache.k.ndim == 4 ? cache.num_kv_heads() : 0;
  c.cache(cache, Hkv, D);
  c.that(Hkv >= 1 && Hq % Hkv == 0, [&] {
    return "q's " + std::to_string(Hq) + " heads are not a multiple of the cache's " + std::to_string(Hkv) +
           " kv heads";
  });
  b.check_attention_shape(cache.block_size(), static_cast<int>(D), static_cast<int>(Hq / Hkv));
  c.that(meta.num_tokens == T, [&] {
    return "meta.num_tokens " + std::to_string(meta.num_tokens) + " != q rows " + std::to_string(T);
  });
  c.that(meta.num_seqs >= 0 && meta.cu_seqlens_q && meta.seqlens_k && (meta.num_seqs == 0 || meta.block_tables),
         [&] { return std::string("metadata is missing cu_seqlens_q, seqlens_k or block_tables"); });
  c.that(meta.is_prefill || meta.num_tokens >= meta.num_seqs,
         [&] { return std::string("decode needs one query row per sequence"); });
  c.that(opts.window >= 0 && opts.softcap >= 0 && std::isfinite(opts.softcap) && std::isfinite(opts.scale), [&] {
    return "window " + std::to_string(opts.window) + ", softcap " + std::to_string(opts.softcap) + ", scale " +
           std::to_string(opts.scale) + ": expected a window >= 0 and finite softcap >= 0 and scale";
  });
  if (c.host_visible()) check_attention_values(c, meta, cache);
}

}  // namespace

void Backend::upload_convert(const Tensor& src, Tensor& dst) {
  const Check c(*this, "upload_convert");
  c.that(src.device == DeviceKind::cpu, [&] { return std::string("the source must be a host tensor"); });
  c.here(dst, "dst");
  if (dst.dtype == DType::i8 && src.dtype != DType::i8) {  // quantizing rows into int8 weights
    c.that(is_floating(src.dtype) && takes_mixed_weight(DType::i8), [&] {
      return std::string("cannot quantize ") + dtype_name(src.dtype) + " to I8 on this backend";
    });
    c.that(rows_of(src) == rows_of(dst) && cols_of(src) == weight_cols(dst) && weight_cols(dst) >= 0, [&] {
      return "source " + src.shape_str() + " does not fit the int8 rows " + dst.shape_str();
    });
    do_upload_convert(src, dst);
    return;
  }
  c.that(src.numel() == dst.numel(), [&] {
    return "source " + src.shape_str() + " and destination " + dst.shape_str() + " differ in size";
  });
  if (is_fp8(src.dtype) || is_fp8(dst.dtype)) {  // FP8 weights: quantize, dequantize or copy with scales
    const bool src_scaled = is_fp8(src.dtype) && src.scale, dst_scaled = is_fp8(dst.dtype) && dst.scale;
    if (is_fp8(src.dtype) && is_fp8(dst.dtype)) {
      c.that(src.dtype == dst.dtype && src.scale_block[0] == dst.scale_block[0] &&
                 src.scale_block[1] == dst.scale_block[1] && src.ndim == dst.ndim &&
                 rows_of(src) == rows_of(dst),
             [&] { return std::string("FP8 source and destination differ in dtype, shape or scale blocks"); });
    } else if (is_fp8(dst.dtype)) {
      c.that(is_floating(src.dtype) && dst_scaled && dst.dtype == DType::f8e4m3 && dst.scale_block[0] == 1 &&
                 dst.scale_block[1] == cols_of(dst),
             [&] {
               return std::string("quantizing ") + dtype_name(src.dtype) + " to " + dtype_name(dst.dtype) +
                      " needs a float source and an F8_E4M3 destination with per-row scales";
             });
    } else {
      c.that(is_floating(dst.dtype), [&] {
        return std::string("cannot convert ") + dtype_name(src.dtype) + " to " + dtype_name(dst.dtype);
      });
    }
    c.that(!is_fp8(src.dtype) || (src_scaled && src.scale_block[0] > 0 && src.scale_block[1] > 0), [&] {
      return std::string("the FP8 source has no scales");
    });
    do_upload_convert(src, dst);
    return;
  }
  c.that(src.dtype == dst.dtype || (is_floating(src.dtype) && is_floating(dst.dtype)), [&] {
    return std::string("cannot convert ") + dtype_name(src.dtype) + " to " + dtype_name(dst.dtype);
  });
  do_upload_convert(src, dst);
}

void Backend::scale_columns(Tensor& w, const Tensor& scale) {
  const Check c(*this, "scale_columns");
  c.floating(w, "w");
  c.dtype(scale, "scale", DType::f32);
  c.that(w.ndim >= 1, [&] { return "w has shape " + w.shape_str() + ", expected a matrix"; });
  c.shape(scale, "scale", {cols_of(w)});
  do_scale_columns(w, scale);
}

void Backend::check_attention_shape(int block_size, int head_dim, int q_heads_per_kv_head) const {
  const Check c(*this, "attention");
  c.that(block_size >= 1, [&] { return "block size " + std::to_string(block_size) + " must be >= 1"; });
  c.that(head_dim >= 2 && head_dim % 2 == 0,  // RoPE rotates halves
         [&] { return "head_dim " + std::to_string(head_dim) + " must be even and >= 2"; });
  c.that(q_heads_per_kv_head >= 1,
         [&] { return std::to_string(q_heads_per_kv_head) + " query heads per kv head, expected >= 1"; });
  do_check_attention_shape(block_size, head_dim, q_heads_per_kv_head);
}

void Backend::embedding(const Tensor& ids, const Tensor& table, Tensor& out, float scale) {
  const Check c(*this, "embedding");
  c.dtype(ids, "ids", DType::i32);
  c.floating(out, "out");
  if (takes_float(table.dtype)) c.floating(table, "table");
  else c.weight(table, "table", out);
  c.that(table.ndim == 2, [&] { return "table has shape " + table.shape_str() + ", expected [V, H]"; });
  c.shape(out, "out", {ids.numel(), weight_cols(table)});
  c.that(std::isfinite(scale), [&] { return "scale " + std::to_string(scale) + " is not finite"; });
  if (c.host_visible()) check_row_indices(c, "token id", ids, table.size(0), "the vocabulary");
  do_embedding(ids, table, 0, out, scale);
}

void Backend::embedding_shard(const Tensor& ids, const Tensor& table, int64_t vocab_start, int64_t vocab_size,
                              Tensor& out, float scale) {
  const Check c(*this, "embedding_shard");
  c.dtype(ids, "ids", DType::i32);
  c.floating(out, "out");
  if (takes_float(table.dtype)) c.floating(table, "table");
  else c.weight(table, "table", out);  // as embedding(): a table in a weight dtype (CPU: bf16, f16, int8)
  c.that(table.ndim == 2, [&] { return "table has shape " + table.shape_str() + ", expected [S, H]"; });
  c.that(vocab_start >= 0 && vocab_start < std::max<int64_t>(vocab_size, 1) && vocab_start <= INT32_MAX, [&] {
    return "vocab_start " + std::to_string(vocab_start) + " is outside the vocabulary [0, " +
           std::to_string(vocab_size) + ")";
  });
  c.shape(out, "out", {ids.numel(), weight_cols(table)});
  c.that(std::isfinite(scale), [&] { return "scale " + std::to_string(scale) + " is not finite"; });
  if (c.host_visible()) check_row_indices(c, "token id", ids, vocab_size, "the vocabulary");
  do_embedding(ids, table, vocab_start, out, scale);
}

std::string Backend::new_group_id(int world) {
  (void)world;
  throw std::invalid_argument("the " + name() + " backend has no tensor parallelism");
}

void Backend::join_group(const std::string& id, int rank, int world) {
  (void)id, (void)rank, (void)world;
  throw std::invalid_argument("the " + name() + " backend has no tensor parallelism");
}

void Backend::all_reduce(Tensor& x) {
  const Check c(*this, "all_reduce");
  c.floating(x, "x");
  if (group_size_ > 1) do_all_reduce(x);
}

void Backend::gather(const Tensor& x, Tensor& out) {
  const Check c(*this, "gather");
  c.floating(x, "x");
  if (group_rank_ == 0) {
    c.same_dtype(x, "x", out, "out");
    c.here(out, "out");
    c.matrix(out, "out", group_size_ * rows_of(x), cols_of(x));
  }
  if (group_size_ > 1) {
    do_gather(x, out);
  } else if (x.data != out.data) {
    Tensor o = out.view({rows_of(out), cols_of(out)});
    do_copy_columns(x.view({rows_of(x), cols_of(x)}), 0, o, 0, cols_of(x));
  }
}

void Backend::copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t width) {
  const Check c(*this, "copy_columns");
  c.here(src, "src");
  c.here(dst, "dst");
  c.same_dtype(src, "src", dst, "dst");
  c.that(src.ndim == 2 && dst.ndim == 2 && src.size(0) == dst.size(0), [&] {
    return "src " + src.shape_str() + " and dst " + dst.shape_str() + " must be matrices of the same rows";
  });
  c.that(width >= 0 && src_col >= 0 && dst_col >= 0 && src_col + width <= src.size(1) &&
             dst_col + width <= dst.size(1),
         [&] {
           return std::to_string(width) + " columns from " + std::to_string(src_col) + " of src " + src.shape_str() +
                  " to " + std::to_string(dst_col) + " of dst " + dst.shape_str() + " do not fit";
         });
  if (width > 0 && src.size(0) > 0) do_copy_columns(src, src_col, dst, dst_col, width);
}

void Backend::rms_norm_add(const Tensor& x, const Tensor& w, float eps, Tensor& residual) {
  const Check c(*this, "rms_norm_add");
  c.floating(x, "x");
  c.floating(w, "w");
  c.floating(residual, "residual");
  c.same_dtype(x, "x", residual, "residual");
  c.shape(w, "w", {cols_of(x)});
  c.matrix(residual, "residual", rows_of(x), cols_of(x));
  do_rms_norm_add(x, w, eps, residual);
}

void Backend::add_bias(Tensor& x, const Tensor& bias) {
  const Check c(*this, "add_bias");
  c.floating(x, "x");
  c.floating(bias, "bias");
  c.shape(bias, "bias", {cols_of(x)});
  do_add_bias(x, bias);
}

void Backend::softcap(Tensor& x, float cap) {
  const Check c(*this, "softcap");
  c.dtype(x, "x", DType::f32);
  c.that(cap > 0 && std::isfinite(cap), [&] { return "cap " + std::to_string(cap) + " must be a positive number"; });
  do_softcap(x, cap);
}

void Backend::rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) {
  const Check c(*this, "rms_norm");
  c.floating(x, "x");
  c.floating(w, "w");
  c.floating(out, "out");
  c.same_dtype(x, "x", out, "out");
  c.shape(w, "w", {cols_of(x)});
  c.matrix(out, "out", rows_of(x), cols_of(x));
  do_rms_norm(x, w, eps, out);
}

void Backend::linear(const Tensor& x, const Tensor& w, Tensor& out) {
  check_linear(Check(*this, "linear"), x, w, out);
  do_linear(x, w, out, false);
}

void Backend::linear_add(const Tensor& x, const Tensor& w, Tensor& out) {
  check_linear(Check(*this, "linear_add"), x, w, out);
  do_linear(x, w, out, true);
}

void Backend::norm_linear(const Tensor& x, const Tensor& norm_w, float eps, const Tensor& w, Tensor& out,
                          Tensor& normed) {
  const Check c(*this, "norm_linear");
  check_norm_linear(c, x, norm_w, w, out, normed);
  do_norm_linear(x, norm_w, eps, w, out, normed);
}

void Backend::norm_linear_act(const Tensor& x, const Tensor& norm_w, float eps, const Tensor& w, Activation act,
                              Tensor& out, Tensor& gate_up, Tensor& normed) {
  const Check c(*this, "norm_linear_act");
  check_norm_linear(c, x, norm_w, w, gate_up, normed);
  c.that(w.size(0) % 2 == 0,
         [&] { return "w has " + std::to_string(w.size(0)) + " rows, expected an even number (gate, then up)"; });
  c.same_dtype(gate_up, "gate_up", out, "out");
  c.matrix(out, "out", rows_of(x), w.size(0) / 2);
  do_norm_linear_act(x, norm_w, eps, w, act, out, gate_up, normed);
}

void Backend::qk_norm_rope_store(const RopeStore& in, const PagedKV& cache, Tensor& q_out) {
  const Check c(*this, "qk_norm_rope_store");
  check_rope_store(c, *this, in, cache, q_out);
  do_qk_norm_rope_store(in, cache, q_out);
}

void Backend::attention(const Tensor& q, const PagedKV& cache, const AttentionMetadata& meta,
                        const AttentionOptions& opts, Tensor& out) {
  const Check c(*this, "attention");
  check_attention(c, *this, q, cache, meta, opts, out);
  do_attention(q, cache, meta, opts, out);
}

void Backend::rope_attention(const RopeStore& in, const PagedKV& cache, const AttentionMetadata& meta,
                             const AttentionOptions& opts, Tensor& q, Tensor& out) {
  const Check c(*this, "rope_attention");
  check_rope_store(c, *this, in, cache, q);
  check_attention(c, *this, q, cache, meta, opts, out);
  c.that(in.slot_mapping == meta.slot_mapping,
         [&] { return std::string("the RoPE's slot_mapping is not the metadata's"); });
  do_rope_attention(in, cache, meta, opts, q, out);
}

void Backend::act_mul(const Tensor& x, const FoldedNorm& folded, Activation act, Tensor& out) {
  const Check c(*this, "act_mul");
  c.floating(x, "x");
  c.floating(out, "out");
  c.same_dtype(x, "x", out, "out");
  c.that(cols_of(x) % 2 == 0, [&] { return "x has shape " + x.shape_str() + ", expected an even last dimension"; });
  c.matrix(out, "out", rows_of(x), cols_of(x) / 2);
  c.folded(folded, x);
  do_act_mul(x, folded, act, out);
}

void Backend::gather_rows(const Tensor& x, const Tensor& idx, Tensor& out) {
  const Check c(*this, "gather_rows");
  c.floating(x, "x");
  c.floating(out, "out");
  c.dtype(idx, "idx", DType::i32);
  c.same_dtype(x, "x", out, "out");
  c.that(x.ndim == 2, [&] { return "x has shape " + x.shape_str() + ", expected [T, H]"; });
  c.shape(out, "out", {idx.numel(), x.size(1)});
  if (c.host_visible()) check_row_indices(c, "index", idx, x.size(0), "x's rows");
  do_gather_rows(x, idx, out);
}

void Backend::sample(const Tensor& logits, const SampleBatch& batch, Tensor& out) {
  const Check c(*this, "sample");
  c.dtype(logits, "logits", DType::f32);
  c.dtype(out, "out", DType::i32);
  c.that(logits.ndim == 2, [&] { return "logits has shape " + logits.shape_str() + ", expected [B, V]"; });
  const int64_t B = logits.size(0), V = logits.size(1);
  c.that(out.numel() == B, [&] { return "out must have " + std::to_string(B) + " entries, has " + std::to_string(out.numel()); });
  c.that(B == 0 || batch.rows, [&] { return std::string("batch.rows is missing"); });
  c.that(batch.num_adds >= 0 && (batch.num_adds == 0 || (batch.add_ids && batch.add_values)),
         [&] { return std::string("batch's sparse adds are missing"); });
  c.that(batch.num_filtered >= 0 && batch.num_filtered <= B && (batch.num_filtered == 0 || batch.filtered_rows),
         [&] { return "num_filtered " + std::to_string(batch.num_filtered) + " for " + std::to_string(B) + " rows"; });
  if (batch.counts.defined()) {
    c.dtype(batch.counts.counts, "counts", DType::i32);
    c.dtype(batch.counts.prompt_mask, "prompt_mask", DType::i32);
    c.shape(batch.counts.counts, "counts", {batch.counts.counts.size(0), V});
    c.shape(batch.counts.prompt_mask, "prompt_mask", {batch.counts.counts.size(0), (V + 31) / 32});
  }
  if (c.host_visible()) check_sampling_rows(c, batch, B, V);
  do_sample(logits, batch, out);
}

void Backend::logprobs(const Tensor& logits, const Tensor& rows, const Tensor& ids, int num_top, LogprobsOut& out) {
  const Check c(*this, "logprobs");
  c.dtype(logits, "logits", DType::f32);
  c.that(logits.ndim == 2, [&] { return "logits has shape " + logits.shape_str() + ", expected [B, V]"; });
  const int64_t B = logits.size(0), V = logits.size(1), R = rows.numel();
  c.dtype(rows, "rows", DType::i32);
  c.dtype(ids, "ids", DType::i32);
  c.that(ids.numel() == B, [&] { return "ids has " + std::to_string(ids.numel()) + " entries, expected " + std::to_string(B); });
  c.that(num_top >= 0 && num_top <= V, [&] { return "num_top " + std::to_string(num_top) + " outside [0, " + std::to_string(V) + "]"; });
  c.dtype(out.token_logprobs, "token_logprobs", DType::f32);
  c.dtype(out.ranks, "ranks", DType::i32);
  c.dtype(out.top_ids, "top_ids", DType::i32);
  c.dtype(out.top_logprobs, "top_logprobs", DType::f32);
  c.shape(out.token_logprobs, "token_logprobs", {R});
  c.shape(out.ranks, "ranks", {R});
  c.shape(out.top_ids, "top_ids", {R, num_top});
  c.shape(out.top_logprobs, "top_logprobs", {R, num_top});
  if (c.host_visible()) {
    check_row_indices(c, "row", rows, B, "logits' rows");
    check_row_indices(c, "token id", ids, V, "the vocabulary");
  }
  do_logprobs(logits, rows, ids, num_top, out);
}

void Backend::reset_token_counts(const TokenCounts& counts, int row, const Tensor& prompt_ids,
                                 const Tensor& output_ids) {
  const Check c(*this, "reset_token_counts");
  c.that(counts.defined(), [&] { return std::string("counts is undefined"); });
  c.dtype(counts.counts, "counts", DType::i32);
  c.dtype(counts.prompt_mask, "prompt_mask", DType::i32);
  const int64_t V = counts.counts.size(1);
  c.shape(counts.prompt_mask, "prompt_mask", {counts.counts.size(0), (V + 31) / 32});
  c.that(row >= 0 && row < counts.rows(), [&] { return "row " + std::to_string(row) + " outside the counts' " + std::to_string(counts.rows()); });
  c.dtype(prompt_ids, "prompt_ids", DType::i32);
  c.dtype(output_ids, "output_ids", DType::i32);
  if (c.host_visible()) {
    check_row_indices(c, "prompt id", prompt_ids, V, "the vocabulary");
    check_row_indices(c, "output id", output_ids, V, "the vocabulary");
  }
  do_reset_token_counts(counts, row, prompt_ids, output_ids);
}

}  // namespace nanovllm
