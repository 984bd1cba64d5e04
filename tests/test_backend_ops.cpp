// Every Backend op on CUDA held to the CPU backend (the oracle) on fresh random inputs, llama.cpp
// test-backend-ops style: a table of cases per op, each with its shapes and tolerance. Inputs are
// bf16-representable so both backends see the same numbers; outputs are poisoned with NaN first
// so an unwritten element fails. Skips visibly, naming the reason, where there is no usable GPU.
#include <gtest/gtest.h>

#include <cstdio>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/half.h"
#include "backend/rng.h"

namespace nanovllm {
namespace {

float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

// One value living on both backends: f32 on the CPU, `gpu_dtype` on the GPU.
struct Both {
  Tensor c, g;
};

class BackendOps : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda_available(&why)) GTEST_SKIP() << "CUDA op tests skipped: " << why;
    cpu_ = make_backend(DeviceKind::cpu);
    gpu_ = make_backend(DeviceKind::cuda, BackendOptions{}.with_env(env_options()));
    const uint64_t seed = std::random_device{}();
    rng_.seed(seed);
    RecordProperty("seed", std::to_string(seed));
    std::printf("[ seed     ] %llu\n", static_cast<unsigned long long>(seed));
  }
  void TearDown() override {
    cbufs_.clear();
    gbufs_.clear();
  }

  std::vector<float> randn(size_t n, float scale = 1.f) {
    std::normal_distribution<float> d(0.f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = round_bf16(d(rng_));
    return v;
  }

  // A tensor on both backends holding `vals`; the GPU copy is in gpu_dtype.
  Both make(std::initializer_list<int64_t> shape, const std::vector<float>& vals, DType gpu_dtype = DType::bf16) {
    Both b;
    b.c = cpu_->alloc_tensor(DType::f32, shape, cbufs_);
    b.g = gpu_->alloc_tensor(gpu_dtype, shape, gbufs_);
    EXPECT_EQ(static_cast<size_t>(b.c.numel()), vals.size());
    std::memcpy(b.c.data, vals.data(), vals.size() * 4);
    Tensor host(const_cast<float*>(vals.data()), DType::f32, shape);
    gpu_->upload_convert(host, b.g);
    return b;
  }
  // An output on both backends, poisoned with NaN (all-ones bytes are NaN in f32 and bf16).
  Both out(std::initializer_list<int64_t> shape, DType gpu_dtype = DType::bf16) {
    Both b;
    b.c = cpu_->alloc_tensor(DType::f32, shape, cbufs_);
    b.g = gpu_->alloc_tensor(gpu_dtype, shape, gbufs_);
    std::memset(b.c.data, 0xff, b.c.nbytes());
    std::vector<uint8_t> ff(b.g.nbytes(), 0xff);
    gpu_->copy_to_device(b.g.data, ff.data(), ff.size());
    return b;
  }
  template <class T>
  Both make_int(std::initializer_list<int64_t> shape, const std::vector<T>& vals, DType dt) {
    Both b;
    b.c = cpu_->alloc_tensor(dt, shape, cbufs_);
    b.g = gpu_->alloc_tensor(dt, shape, gbufs_);
    std::memcpy(b.c.data, vals.data(), vals.size() * sizeof(T));
    gpu_->copy_to_device(b.g.data, vals.data(), vals.size() * sizeof(T));
    return b;
  }
  const int32_t* dev_i32(const std::vector<int32_t>& v) {
    Tensor t = gpu_->alloc_tensor(DType::i32, {static_cast<int64_t>(std::max<size_t>(1, v.size()))}, gbufs_);
    gpu_->copy_to_device(t.data, v.data(), v.size() * 4);
    return t.ptr<int32_t>();
  }

  std::vector<float> download(const Tensor& g) {
    std::vector<float> v(static_cast<size_t>(g.numel()));
    if (g.dtype == DType::f32) {
      gpu_->copy_to_host(v.data(), g.data, g.nbytes());
    } else {
      std::vector<uint16_t> h(v.size());
      gpu_->copy_to_host(h.data(), g.data, g.nbytes());
      for (size_t i = 0; i < v.size(); ++i) v[i] = bf16_to_f32(h[i]);
    }
    return v;
  }
  static std::vector<float> host(const Tensor& c) { return {c.ptr<float>(), c.ptr<float>() + c.numel()}; }

  // ||got - ref|| / ||ref|| within tol, and no NaN/Inf where the reference is finite.
  static void expect_close(const std::vector<float>& ref, const std::vector<float>& got, double tol,
                           const std::string& what) {
    ASSERT_EQ(ref.size(), got.size()) << what;
    double num = 0, den = 0;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      if (std::isfinite(ref[i]) && !std::isfinite(got[i])) {
        if (!bad++) first_bad = i;
        continue;
      }
      const double d = static_cast<double>(got[i]) - ref[i];
      num += d * d;
      den += static_cast<double>(ref[i]) * ref[i];
    }
    EXPECT_EQ(bad, 0u) << what << ": " << bad << " non-finite outputs, first at " << first_bad;
    const double rel = std::sqrt(num / std::max(den, 1e-30));
    EXPECT_LE(rel, tol) << what << ": relative error " << rel;
    // What the kernels achieve, beside the tolerance: the figures to tighten the tolerances to.
    std::printf("[achieved] %-28s relative error %.3g (tolerance %.3g)\n", what.c_str(), rel, tol);
  }

  std::unique_ptr<Backend> cpu_, gpu_;
  std::vector<DeviceBuffer> cbufs_, gbufs_;
  std::mt19937_64 rng_;
};

// ---- embedding and gather_rows: exact copies ------------------------------------------------
TEST_F(BackendOps, EmbeddingAndGatherRows) {
  struct Case { int rows, cols, picks; };
  for (Case cs : {Case{1000, 1024, 7}, Case{50, 36, 1}, Case{300, 64, 64}, Case{17, 1000, 33}}) {
    SCOPED_TRACE("rows " + std::to_string(cs.rows) + " cols " + std::to_string(cs.cols));
    Both table = make({cs.rows, cs.cols}, randn(size_t(cs.rows) * cs.cols));
    std::vector<int32_t> ids(cs.picks);
    std::uniform_int_distribution<int> pick(0, cs.rows - 1);
    for (auto& i : ids) i = pick(rng_);
    ids.back() = cs.rows - 1;
    Both idx = make_int({cs.picks}, ids, DType::i32);
    Both o1 = out({cs.picks, cs.cols});
    cpu_->embedding(idx.c, table.c, o1.c);
    gpu_->embedding(idx.g, table.g, o1.g);
    expect_close(host(o1.c), download(o1.g), 0.0, "embedding");
    Both o2 = out({cs.picks, cs.cols});
    cpu_->gather_rows(table.c, idx.c, o2.c);
    gpu_->gather_rows(table.g, idx.g, o2.g);
    expect_close(host(o2.c), download(o2.g), 0.0, "gather_rows");
  }
}

// ---- rms_norm and scale_columns ---------------------------------------------------------------
TEST_F(BackendOps, RmsNorm) {
  struct Case { int rows, hidden; DType dt; };
  for (Case cs : {Case{1, 1024, DType::bf16}, Case{5, 4096, DType::bf16}, Case{33, 1024, DType::bf16},
                  Case{3, 100, DType::bf16}, Case{2, 8200, DType::bf16}, Case{4, 1024, DType::f32},
                  Case{3, 30, DType::f32}}) {
    SCOPED_TRACE("rows " + std::to_string(cs.rows) + " hidden " + std::to_string(cs.hidden) + " " + dtype_name(cs.dt));
    const size_t n = size_t(cs.rows) * cs.hidden;
    const double tol = cs.dt == DType::f32 ? 1e-5 : 1e-2;
    Both x = make({cs.rows, cs.hidden}, randn(n, 2.f), cs.dt);
    std::vector<float> wv = randn(cs.hidden, 0.3f);
    for (auto& w : wv) w = round_bf16(w + 1.f);
    Both w = make({cs.hidden}, wv, cs.dt);
    Both o = out({cs.rows, cs.hidden}, cs.dt);
    cpu_->rms_norm(x.c, w.c, 1e-6f, o.c);
    gpu_->rms_norm(x.g, w.g, 1e-6f, o.g);
    expect_close(host(o.c), download(o.g), tol, "rms_norm");

    // scale_columns (a norm's weight folded into a projection at load): x[r, c] *= g[c].
    Both g = make({cs.hidden}, randn(cs.hidden, 0.5f), DType::f32);
    cpu_->scale_columns(x.c, g.c);
    gpu_->scale_columns(x.g, g.g);
    expect_close(host(x.c), download(x.g), cs.dt == DType::f32 ? 1e-6 : 4e-3, "scale_columns");
  }
}

// ---- linear (cuBLASLt), bf16 and f32 outputs ------------------------------------------------------
TEST_F(BackendOps, Linear) {
  struct Case { int m, n, k; DType out; };
  for (Case cs : {Case{1, 4096, 1024, DType::bf16}, Case{7, 3072, 1024, DType::bf16}, Case{33, 1024, 2048, DType::bf16},
                  Case{256, 151, 64, DType::bf16}, Case{5, 1000, 128, DType::f32}, Case{1, 32000, 1024, DType::f32},
                  Case{130, 6144, 1024, DType::bf16}, Case{16, 1024, 3072, DType::bf16}}) {
    SCOPED_TRACE("m " + std::to_string(cs.m) + " n " + std::to_string(cs.n) + " k " + std::to_string(cs.k));
    Both x = make({cs.m, cs.k}, randn(size_t(cs.m) * cs.k));
    Both w = make({cs.n, cs.k}, randn(size_t(cs.n) * cs.k, 0.05f));
    Both o = out({cs.m, cs.n}, cs.out);
    cpu_->linear(x.c, w.c, o.c);
    gpu_->linear(x.g, w.g, o.g);
    const double tol = cs.out == DType::f32 ? 1e-4 : 1e-2;
    expect_close(host(o.c), download(o.g), tol, "linear");
    // out += x w^T onto earlier contents (beta = 1; the skinny GEMM's add at small m). The first
    // call at a decode size times its candidates on this very output: it must come out added to
    // once, not once per timed call.
    Both r = make({cs.m, cs.n}, randn(size_t(cs.m) * cs.n, 2.f), cs.out);
    cpu_->linear_add(x.c, w.c, r.c);
    gpu_->linear_add(x.g, w.g, r.g);
    expect_close(host(r.c), download(r.g), tol, "linear_add");
  }
}

// ---- norm_linear: the fused skinny GEMM (m <= 8) and rms_norm + linear beyond ------------------
TEST_F(BackendOps, NormLinear) {
  struct Case { int m, n, k; };
  for (Case cs : {Case{1, 4096, 1024}, Case{3, 6144, 1024}, Case{8, 4096, 1024}, Case{2, 512, 200},
                  Case{16, 4096, 1024}, Case{64, 1024, 2048}}) {
    SCOPED_TRACE("m " + std::to_string(cs.m) + " n " + std::to_string(cs.n) + " k " + std::to_string(cs.k));
    Both x = make({cs.m, cs.k}, randn(size_t(cs.m) * cs.k, 3.f));  // unnormalised, as the residual stream
    std::vector<float> gv = randn(cs.k, 0.3f);
    for (auto& g : gv) g = round_bf16(g + 1.f);
    Both g = make({cs.k}, gv);
    Both w = make({cs.n, cs.k}, randn(size_t(cs.n) * cs.k, 0.05f));
    Both o = out({cs.m, cs.n}, DType::bf16), normed = out({cs.m, cs.k}, DType::bf16);
    cpu_->norm_linear(x.c, g.c, 1e-6f, w.c, o.c, normed.c);
    gpu_->norm_linear(x.g, g.g, 1e-6f, w.g, o.g, normed.g);
    expect_close(host(o.c), download(o.g), 1e-2, "norm_linear");
  }
}

// ---- silu_mul ---------------------------------------------------------------------------------
TEST_F(BackendOps, SiluMul) {
  struct Case { int rows, inter; DType dt; };
  for (Case cs : {Case{1, 3072, DType::bf16}, Case{9, 3072, DType::bf16}, Case{4, 100, DType::bf16},
                  Case{3, 64, DType::f32}, Case{2, 7, DType::f32}}) {
    SCOPED_TRACE("rows " + std::to_string(cs.rows) + " inter " + std::to_string(cs.inter));
    Both x = make({cs.rows, 2 * cs.inter}, randn(size_t(cs.rows) * 2 * cs.inter, 2.f), cs.dt);
    Both o = out({cs.rows, cs.inter}, cs.dt);
    cpu_->silu_mul(x.c, FoldedNorm{}, o.c);
    gpu_->silu_mul(x.g, FoldedNorm{}, o.g);
    expect_close(host(o.c), download(o.g), cs.dt == DType::f32 ? 1e-5 : 1e-2, "silu_mul");
    // A folded norm: rows scaled by 1/rms of the residual rows h first (hidden sizes with and
    // without 16-byte vectors).
    for (int hidden : {1024, 100}) {
      Both h = make({cs.rows, hidden}, randn(size_t(cs.rows) * hidden, 5.f), cs.dt);
      Both o2 = out({cs.rows, cs.inter}, cs.dt);
      cpu_->silu_mul(x.c, FoldedNorm{&h.c, 1e-6f}, o2.c);
      gpu_->silu_mul(x.g, FoldedNorm{&h.g, 1e-6f}, o2.g);
      expect_close(host(o2.c), download(o2.g), cs.dt == DType::f32 ? 1e-5 : 1e-2,
                   "silu_mul folded, hidden " + std::to_string(hidden));
    }
  }
}

// ---- q/k norm + RoPE + KV store ---------------------------------------------------------------
std::vector<float> rope_table(int max_pos, int D, double theta) {
  std::vector<float> cs(size_t(max_pos) * D);
  for (int p = 0; p < max_pos; ++p)
    for (int i = 0; i < D / 2; ++i) {
      const double a = p / std::pow(theta, 2.0 * i / D);
      cs[size_t(p) * D + i] = static_cast<float>(std::cos(a));
      cs[size_t(p) * D + D / 2 + i] = static_cast<float>(std::sin(a));
    }
  return cs;
}

TEST_F(BackendOps, QkNormRopeStore) {
  struct Case { int tokens, hq, hkv, d, block_size; };
  for (Case cs : {Case{1, 16, 8, 128, 16}, Case{13, 16, 8, 128, 256}, Case{7, 8, 8, 64, 16}, Case{5, 32, 4, 128, 32}}) {
    SCOPED_TRACE("tokens " + std::to_string(cs.tokens) + " hq " + std::to_string(cs.hq) + " hkv " +
                 std::to_string(cs.hkv) + " d " + std::to_string(cs.d));
    const int D = cs.d, T = cs.tokens, max_pos = 4096, blocks = 4;
    Both qkv = make({T, (cs.hq + 2 * cs.hkv) * D}, randn(size_t(T) * (cs.hq + 2 * cs.hkv) * D, 3.f));
    std::vector<float> qw = randn(D, 0.2f), kw = randn(D, 0.2f);
    for (auto& w : qw) w = round_bf16(w + 1.f);
    for (auto& w : kw) w = round_bf16(w + 1.f);
    Both qn = make({D}, qw), kn = make({D}, kw);
    std::vector<int32_t> pos(T), slots(T);
    std::vector<int32_t> all(blocks * cs.block_size);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng_);
    std::uniform_int_distribution<int> pd(0, max_pos - 1);
    for (int t = 0; t < T; ++t) {
      pos[t] = pd(rng_);
      slots[t] = (t % 4 == 3) ? -1 : all[t];  // some rows are padding: not stored
    }
    Both positions = make_int({T}, pos, DType::i32);
    Both cos_sin = make({max_pos, D}, rope_table(max_pos, D, 1e6), DType::f32);
    const size_t cache_n = size_t(blocks) * cs.block_size * cs.hkv * D;
    Both kc = make({blocks, cs.block_size, cs.hkv, D}, randn(cache_n));
    Both vc = make({blocks, cs.block_size, cs.hkv, D}, randn(cache_n));
    Both q = out({T, cs.hq, D});
    cpu_->qk_norm_rope_store({qkv.c, FoldedNorm{}, qn.c, kn.c, positions.c, cos_sin.c, 1e-6f, cs.hq, cs.hkv,
                              slots.data()},
                             {kc.c, vc.c}, q.c);
    gpu_->qk_norm_rope_store({qkv.g, FoldedNorm{}, qn.g, kn.g, positions.g, cos_sin.g, 1e-6f, cs.hq, cs.hkv,
                              dev_i32(slots)},
                             {kc.g, vc.g}, q.g);
    expect_close(host(q.c), download(q.g), 1e-2, "q_out");
    expect_close(host(kc.c), download(kc.g), 1e-2, "k_cache");
    expect_close(host(vc.c), download(vc.g), 0.0, "v_cache");  // v is copied, not computed

    // A folded norm: q, k and v of token t scaled by 1/rms of the residual row h[t] first.
    for (int hidden : {1024, 72}) {
      Both h = make({T, hidden}, randn(size_t(T) * hidden, 4.f));
      Both q2 = out({T, cs.hq, D});
      cpu_->qk_norm_rope_store({qkv.c, FoldedNorm{&h.c, 1e-6f}, qn.c, kn.c, positions.c, cos_sin.c, 1e-6f, cs.hq,
                                cs.hkv, slots.data()},
                               {kc.c, vc.c}, q2.c);
      gpu_->qk_norm_rope_store({qkv.g, FoldedNorm{&h.g, 1e-6f}, qn.g, kn.g, positions.g, cos_sin.g, 1e-6f, cs.hq,
                                cs.hkv, dev_i32(slots)},
                               {kc.g, vc.g}, q2.g);
      const std::string what = " (folded, hidden " + std::to_string(hidden) + ")";
      expect_close(host(q2.c), download(q2.g), 1e-2, "q_out" + what);
      expect_close(host(kc.c), download(kc.g), 1e-2, "k_cache" + what);
      expect_close(host(vc.c), download(vc.g), 1e-2, "v_cache" + what);
    }
  }
}

// ---- paged attention ---------------------------------------------------------------------------
struct SeqSpec {
  int q_len, k_len;
};
struct AttnCase {
  std::string name;
  int hq, hkv, d, block_size;
  bool prefill;
  std::vector<SeqSpec> seqs;
  int extra_max_k = 0;  // decode: host bound above the real maximum (as under graph capture)
};

class AttentionOps : public BackendOps {
 protected:
  void run(const AttnCase& ac) {
    SCOPED_TRACE(ac.name);
    const int bs = ac.block_size, D = ac.d;
    int max_q = 0, max_k = 0, T = 0, max_blocks = 1;
    for (auto s : ac.seqs) {
      max_q = std::max(max_q, s.q_len);
      max_k = std::max(max_k, s.k_len);
      T += s.q_len;
      max_blocks = std::max(max_blocks, (s.k_len + bs - 1) / bs);
    }
    max_blocks += 1;  // a spare column of -1, as the engine leaves
    int total_blocks = 1;
    for (auto s : ac.seqs) total_blocks += (s.k_len + bs - 1) / bs;
    // Blocks handed out in shuffled order, so a sequence's blocks are not contiguous.
    std::vector<int32_t> perm(total_blocks);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng_);
    std::vector<int32_t> tables(size_t(ac.seqs.size()) * max_blocks, -1), cu(1, 0), seqlens;
    int next = 0;
    for (size_t i = 0; i < ac.seqs.size(); ++i) {
      for (int b = 0; b < (ac.seqs[i].k_len + bs - 1) / bs; ++b) tables[i * max_blocks + b] = perm[next++];
      cu.push_back(cu.back() + ac.seqs[i].q_len);
      seqlens.push_back(ac.seqs[i].k_len);
    }
    const size_t cache_n = size_t(total_blocks) * bs * ac.hkv * D;
    Both kc = make({total_blocks, bs, ac.hkv, D}, randn(cache_n));
    Both vc = make({total_blocks, bs, ac.hkv, D}, randn(cache_n));
    Both q = make({T, ac.hq, D}, randn(size_t(T) * ac.hq * D));
    Both o = out({T, ac.hq, D});
    AttentionMetadata m;
    m.is_prefill = ac.prefill;
    m.num_seqs = static_cast<int>(ac.seqs.size());
    m.num_tokens = T;
    m.max_seqlen_q = max_q;
    m.max_seqlen_k = max_k + ac.extra_max_k;
    m.max_num_blocks = max_blocks;
    m.cu_seqlens_q = cu.data();
    m.seqlens_k = seqlens.data();
    m.block_tables = tables.data();
    const float scale = 1.f / std::sqrt(static_cast<float>(D));
    cpu_->attention(q.c, {kc.c, vc.c}, m, scale, o.c);
    AttentionMetadata g = m;
    g.cu_seqlens_q = dev_i32(cu);
    g.seqlens_k = dev_i32(seqlens);
    g.block_tables = dev_i32(tables);
    gpu_->attention(q.g, {kc.g, vc.g}, g, scale, o.g);
    expect_close(host(o.c), download(o.g), 1e-2, "attention " + ac.name);
  }
};

TEST_F(AttentionOps, Prefill) {
  const std::vector<SeqSpec> mixed = {{5, 5}, {64, 64}, {65, 65}, {1, 1}, {100, 300}, {17, 40}, {130, 129 + 1}};
  for (const AttnCase& ac : std::vector<AttnCase>{
           {"qwen3-0.6b bs16", 16, 8, 128, 16, true, mixed},
           {"qwen3-0.6b bs256", 16, 8, 128, 256, true, mixed},
           {"mha d64 bs32", 8, 8, 64, 32, true, mixed},
           {"gqa 8 d128 bs64", 32, 4, 128, 64, true, {{33, 33}, {200, 250}}},
           {"gqa 5 d64 bs128", 10, 2, 64, 128, true, {{37, 37}, {3, 90}}},
           {"chunk after prefix bs16", 16, 8, 128, 16, true, {{256, 512}, {1, 700}}},
       })
    run(ac);
}

// Decode sequences (one query token each) with these context lengths.
std::vector<SeqSpec> dec(const std::vector<int>& ks) {
  std::vector<SeqSpec> v;
  for (int k : ks) v.push_back({1, k});
  return v;
}

TEST_F(AttentionOps, Decode) {
  for (const AttnCase& ac : std::vector<AttnCase>{
           {"qwen3-0.6b bs16", 16, 8, 128, 16, false, dec({1, 17, 256, 257, 1000, 3000})},
           {"qwen3-0.6b bs256 bound", 16, 8, 128, 256, false, dec({5, 700, 2049}), 4096},
           {"batch 1 long", 16, 8, 128, 32, false, dec({4000})},
           {"padded rows", 16, 8, 128, 16, false, dec({1, 1, 1, 600})},
           {"mha d64 bs16", 8, 8, 64, 16, false, dec({3, 100, 1500})},
           {"gqa 4 d128 bs128", 32, 8, 128, 128, false, dec({129, 1025})},
           {"gqa 5 d64 bs64", 10, 2, 64, 64, false, dec({63, 64, 65})},
           {"gqa 8 d128 bs16", 64, 8, 128, 16, false, dec({333, 2})},
       })
    run(ac);
}

// Large batches: most blocks of the graph-bounded grid idle, splits merged by the last block.
TEST_F(AttentionOps, DecodeLargeBatch) {
  std::vector<int> varied;
  for (int i = 0; i < 128; ++i) varied.push_back(300 + 11 * i);
  for (const AttnCase& ac : std::vector<AttnCase>{
           {"many seqs", 16, 8, 128, 16, false, dec(std::vector<int>(64, 300)), 1000},
           {"128 seqs under a 4096 bound", 16, 8, 128, 32, false, dec(varied), 4096},
           {"short and long mixed", 16, 8, 128, 16, false,
            dec({1, 2, 3, 64, 65, 1023, 1024, 1025, 5, 4000, 7, 130})},
       })
    run(ac);
}

// Sampling and logprobs: tests/test_cuda_sampling.cpp.

// ---- CUDA graphs: a captured sequence of ops replays on new inputs --------------------------
TEST_F(BackendOps, GraphReplay) {
  ASSERT_TRUE(gpu_->supports_graphs());
  const int T = 4, H = 256, I = 512;
  Both x = make({T, H}, randn(size_t(T) * H));
  Both w = make({H}, randn(H, 0.1f));
  Both wu = make({2 * I, H}, randn(size_t(2) * I * H, 0.05f));
  Both n = out({T, H}), gu = out({T, 2 * I}), a = out({T, I});
  auto ops = [&](Backend& be, bool gpu) {
    be.rms_norm(gpu ? x.g : x.c, gpu ? w.g : w.c, 1e-6f, gpu ? n.g : n.c);
    be.linear(gpu ? n.g : n.c, gpu ? wu.g : wu.c, gpu ? gu.g : gu.c);
    be.silu_mul(gpu ? gu.g : gu.c, FoldedNorm{gpu ? &x.g : &x.c, 1e-6f}, gpu ? a.g : a.c);
  };
  const int handle = gpu_->capture_graph([&] { ops(*gpu_, true); });
  ASSERT_GE(handle, 0);
  for (int round = 0; round < 2; ++round) {
    std::vector<float> xv = randn(size_t(T) * H);
    std::memcpy(x.c.data, xv.data(), xv.size() * 4);
    Tensor hx(xv.data(), DType::f32, {T, H});
    gpu_->upload_convert(hx, x.g);
    gpu_->replay_graph(handle);
    ops(*cpu_, false);
    expect_close(host(a.c), download(a.g), 2e-2, "graph replay round " + std::to_string(round));
  }
  EXPECT_THROW(gpu_->replay_graph(handle + 1), std::invalid_argument);
}

// ---- errors name what is wrong ----------------------------------------------------------------
TEST_F(BackendOps, ClearErrors) {
  EXPECT_THROW(gpu_->check_attention_shape(12, 128), std::invalid_argument);
  EXPECT_THROW(gpu_->check_attention_shape(16, 96), std::invalid_argument);
  EXPECT_NO_THROW(gpu_->check_attention_shape(16, 128));
  EXPECT_NO_THROW(gpu_->check_attention_shape(256, 64));
  Both x = make({2, 8}, randn(16));
  Both w = make({4, 8}, randn(32), DType::f32);  // dtype differs from x
  Both o = out({2, 4});
  try {
    gpu_->linear(x.g, w.g, o.g);
    ADD_FAILURE() << "linear with mixed dtypes did not throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("linear"), std::string::npos) << e.what();
  }
  EXPECT_THROW(gpu_->raw_alloc(size_t(1) << 50), std::runtime_error);
  try {
    gpu_->raw_alloc(size_t(1) << 50);
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("free"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace nanovllm
