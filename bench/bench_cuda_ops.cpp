// Times the CUDA backend's hot ops at Qwen3-0.6B shapes and prints achieved bandwidth / FLOP rate:
// decode attention (the bytes of the KV cache it must read), prefill attention, the GEMMs of one
// layer at decode and prefill batch sizes, and the per-layer small ops. Each op is captured in a
// CUDA graph of `reps` calls and the graph timed, so launch gaps do not count.
// Run: bench_cuda_ops [--quick] [section ...]   sections: gemm-stack gemm-stack-fp8 decode window prefill gemm small
//      sample
// (gemm-stack-fp8: the same 28 layers' projections with FP8 weights, per channel and 128 x 128 blocks)
// (window: decode and prefill attention with a sliding window, beside the same data without one)
// (default: all; prints a table; scripts/device.sh runs it on the GPU machine)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "backend/backend.h"
#include "backend/half.h"

using namespace nanovllm;

namespace {

struct Bench {
  std::unique_ptr<Backend> be;
  std::vector<DeviceBuffer> bufs;
  std::mt19937 rng{1234};

  // Values with the spread of N(0, scale^2) (a sum of four uniforms), fast enough for the
  // gigabytes of KV cache the attention rows fill.
  Tensor rand_bf16(std::initializer_list<int64_t> shape, float scale = 1.f) {
    Tensor t = be->alloc_tensor(DType::bf16, shape, bufs);
    std::vector<uint16_t> h(static_cast<size_t>(t.numel()));
    uint64_t z = rng();
    const float k = scale * std::sqrt(3.f) / 32768.f;
    for (auto& x : h) {
      z = z * 6364136223846793005ULL + 1442695040888963407ULL;
      const float v = float(int16_t(z >> 48)) + float(int16_t(z >> 32)) + float(int16_t(z >> 16)) + float(int16_t(z));
      x = f32_to_bf16(v * 0.5f * k);
    }
    be->copy_to_device(t.data, h.data(), h.size() * 2);
    be->synchronize();
    return t;
  }
  // An FP8 (e4m3) weight [n, k] with br x bc block scales, in one buffer as the loader lays it:
  // random codes (never NaN's 0x7f / 0xff), scales of 0.02 / 448 (values of weights' size).
  Tensor rand_fp8(int64_t n, int64_t k, int br, int bc) {
    const int64_t sr = (n + br - 1) / br, sc = (k + bc - 1) / bc;
    const size_t data = (static_cast<size_t>(n * k) + 255) / 256 * 256;
    bufs.push_back(be->alloc(data + sr * sc * sizeof(float)));
    char* p = static_cast<char*>(bufs.back().get());
    std::vector<uint8_t> q(static_cast<size_t>(n * k));
    uint64_t z = rng();
    for (auto& c : q) {
      z = z * 6364136223846793005ULL + 1442695040888963407ULL;
      c = static_cast<uint8_t>(z >> 56);
      if ((c & 0x7f) == 0x7f) c ^= 1;
    }
    std::vector<float> scales(sr * sc, 0.02f / 448.f);
    be->copy_to_device(p, q.data(), q.size());
    be->copy_to_device(p + data, scales.data(), scales.size() * sizeof(float));
    be->synchronize();
    Tensor t(p, DType::f8e4m3, {n, k}, DeviceKind::cuda);
    t.scale = reinterpret_cast<float*>(p + data);
    t.scale_block[0] = br;
    t.scale_block[1] = bc;
    return t;
  }
  // A KV cache of e4m3 codes (never NaN's 0x7f / 0xff), values of N(0, 1)'s size under a scale.
  Tensor rand_fp8_cache(std::initializer_list<int64_t> shape) {
    Tensor t = be->alloc_tensor(DType::f8e4m3, shape, bufs);
    std::vector<uint8_t> h(static_cast<size_t>(t.numel()));
    uint64_t z = rng();
    for (auto& c : h) {
      z = z * 6364136223846793005ULL + 1442695040888963407ULL;
      c = static_cast<uint8_t>(z >> 56) & 0xb7;  // |x| <= 2^-1 x 1.875 (exponent bits 0110 at most)
    }
    be->copy_to_device(t.data, h.data(), h.size());
    be->synchronize();
    return t;
  }
  Tensor i32(const std::vector<int32_t>& v) {
    Tensor t = be->alloc_tensor(DType::i32, {static_cast<int64_t>(std::max<size_t>(1, v.size()))}, bufs);
    be->copy_to_device(t.data, v.data(), v.size() * 4);
    be->synchronize();
    return t;
  }

  // Median microseconds per call over several timed graph replays of `reps` calls each.
  double time_us(const std::function<void()>& fn, int reps = 20) {
    fn();
    be->synchronize();
    const int g = be->capture_graph([&] {
      for (int i = 0; i < reps; ++i) fn();
    });
    be->replay_graph(g);
    be->synchronize();
    std::vector<double> t;
    for (int i = 0; i < 7; ++i) {
      auto a = std::chrono::steady_clock::now();
      be->replay_graph(g);
      be->synchronize();
      auto b = std::chrono::steady_clock::now();
      t.push_back(std::chrono::duration<double, std::micro>(b - a).count() / reps);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

void row(const char* what, const std::string& shape, double us, const std::string& rate) {
  std::printf("%-26s %-44s %10.2f us  %s\n", what, shape.c_str(), us, rate.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::string why;
  if (!cuda_available(&why)) {
    std::printf("bench_cuda_ops: skipped: %s\n", why.c_str());
    return 0;
  }
  bool quick = false;
  std::vector<std::string> sections;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else sections.push_back(argv[i]);
  }
  auto want = [&](const char* name) {
    return sections.empty() || std::find(sections.begin(), sections.end(), name) != sections.end();
  };
  Bench b;
  b.be = make_backend(DeviceKind::cuda, BackendOptions{}.with_env(env_options()));
  std::printf("device: %s\n", b.be->name().c_str());
  const int Hq = 16, Hkv = 8, D = 128, H = 1024, I = 3072, V = 151936;

  // ---- the four projections of all 28 layers at a decode batch, as a step runs them: each
  // layer's weights are its own, so they stream from HBM rather than from L2 ----
  if (want("gemm-stack")) {
    const int L = 28;
    std::vector<Tensor> ws;
    for (int l = 0; l < L; ++l) {
      ws.push_back(b.rand_bf16({(Hq + 2 * Hkv) * D, H}, 0.02f));
      ws.push_back(b.rand_bf16({H, Hq * D}, 0.02f));
      ws.push_back(b.rand_bf16({2 * I, H}, 0.02f));
      ws.push_back(b.rand_bf16({H, I}, 0.02f));
    }
    const double weight_bytes = 2.0 * L * ((Hq + 2 * Hkv) * D * H + H * Hq * D + 2 * I * H + H * I);
    for (int M : {1, 8, 16, 32, 64, 128, 256}) {
      Tensor xh = b.rand_bf16({M, H}), xa = b.rand_bf16({M, Hq * D}), xi = b.rand_bf16({M, I});
      Tensor qkv = b.be->alloc_tensor(DType::bf16, {M, (Hq + 2 * Hkv) * D}, b.bufs);
      Tensor h = b.be->alloc_tensor(DType::bf16, {M, H}, b.bufs);
      Tensor gu = b.be->alloc_tensor(DType::bf16, {M, 2 * I}, b.bufs);
      const double us = b.time_us(
          [&] {
            for (int l = 0; l < L; ++l) {
              b.be->linear(xh, ws[4 * l], qkv);
              b.be->linear(xa, ws[4 * l + 1], h);
              b.be->linear(xh, ws[4 * l + 2], gu);
              b.be->linear(xi, ws[4 * l + 3], h);
            }
          },
          3);
      char sh[96], rate[64];
      std::snprintf(sh, sizeof sh, "M=%d, 28 layers x 4", M);
      std::snprintf(rate, sizeof rate, "%.0f GB/s of weights", weight_bytes / us / 1e3);
      row("layer GEMMs (cold)", sh, us, rate);

      // The layers' kernels around attention as a step runs them: qkv, RoPE with the folded
      // norm's factor, o adding into the residual, gate/up, SiLU with the factor, down adding.
      Tensor qn = b.rand_bf16({D}, 0.1f), kn = b.rand_bf16({D}, 0.1f);
      Tensor res = b.rand_bf16({M, H});
      Tensor act = b.be->alloc_tensor(DType::bf16, {M, I}, b.bufs);
      Tensor qo = b.be->alloc_tensor(DType::bf16, {M, Hq, D}, b.bufs);
      Tensor cs = b.be->alloc_tensor(DType::f32, {4096, D}, b.bufs);
      b.be->fill_zero(cs.data, cs.nbytes());
      std::vector<int32_t> pos(M), slots(M);
      for (int t = 0; t < M; ++t) { pos[t] = t; slots[t] = t; }
      Tensor tp = b.i32(pos), ts = b.i32(slots);
      Tensor kc = b.rand_bf16({(M + 255) / 256, 256, Hkv, D}), vc = b.rand_bf16({(M + 255) / 256, 256, Hkv, D});
      const FoldedNorm f{&res, 1e-6f};
      const double lus = b.time_us(
          [&] {
            for (int l = 0; l < L; ++l) {
              b.be->linear(res, ws[4 * l], qkv);
              b.be->qk_norm_rope_store({qkv, f, Tensor{}, qn, kn, tp, cs, 1e-6f, Hq, Hkv, ts.ptr<int32_t>()}, {kc, vc},
                                       qo);
              b.be->linear_add(xa, ws[4 * l + 1], res);
              b.be->linear(res, ws[4 * l + 2], gu);
              b.be->silu_mul(gu, f, act);
              b.be->linear_add(act, ws[4 * l + 3], res);
            }
          },
          3);
      std::snprintf(sh, sizeof sh, "M=%d, 28 layers, no attention", M);
      std::snprintf(rate, sizeof rate, "%.0f GB/s of weights", weight_bytes / lus / 1e3);
      row("layer kernels", sh, lus, rate);
    }
  }
  b.bufs.clear();

  // ---- the same projections with FP8 weights (the skinny kernel at M <= 8, activation
  // quantization + cuBLASLt's FP8 GEMM beyond), per output channel and in 128 x 128 blocks ----
  if (want("gemm-stack-fp8")) {
    const int L = 28;
    const double weight_bytes = 1.0 * L * ((Hq + 2 * Hkv) * D * H + H * Hq * D + 2 * I * H + H * I);
    for (auto [br, bc, name] : std::vector<std::tuple<int, int, const char*>>{{1, 0, "per channel"},
                                                                             {128, 128, "128x128"}}) {
      std::vector<Tensor> ws;
      for (int l = 0; l < L; ++l) {
        ws.push_back(b.rand_fp8((Hq + 2 * Hkv) * D, H, br, bc ? bc : H));
        ws.push_back(b.rand_fp8(H, Hq * D, br, bc ? bc : Hq * D));
        ws.push_back(b.rand_fp8(2 * I, H, br, bc ? bc : H));
        ws.push_back(b.rand_fp8(H, I, br, bc ? bc : I));
      }
      for (int M : {1, 2, 4, 8, 16, 64, 256}) {
        Tensor xh = b.rand_bf16({M, H}), xa = b.rand_bf16({M, Hq * D}), xi = b.rand_bf16({M, I});
        Tensor qkv = b.be->alloc_tensor(DType::bf16, {M, (Hq + 2 * Hkv) * D}, b.bufs);
        Tensor h = b.be->alloc_tensor(DType::bf16, {M, H}, b.bufs);
        Tensor gu = b.be->alloc_tensor(DType::bf16, {M, 2 * I}, b.bufs);
        const double us = b.time_us(
            [&] {
              for (int l = 0; l < L; ++l) {
                b.be->linear(xh, ws[4 * l], qkv);
                b.be->linear_add(xa, ws[4 * l + 1], h);
                b.be->linear(xh, ws[4 * l + 2], gu);
                b.be->linear_add(xi, ws[4 * l + 3], h);
              }
            },
            3);
        char sh[96], rate[64], what[64];
        std::snprintf(sh, sizeof sh, "M=%d, 28 layers x 4", M);
        std::snprintf(rate, sizeof rate, "%.0f GB/s of FP8 weights", weight_bytes / us / 1e3);
        std::snprintf(what, sizeof what, "FP8 GEMMs %s (cold)", name);
        row(what, sh, us, rate);
      }
      b.bufs.clear();
    }
  }

  if (want("decode")) {
    // ---- decode attention: bytes = K and V rows of every context token, once ----
    for (int bs : {16, 256}) {
      for (auto [B, ctx, bound] : std::vector<std::tuple<int, int, int>>{
               {1, 384, 4096}, {1, 1024, 1024}, {1, 1024, 4096}, {1, 4096, 4096}, {64, 1024, 1024}, {256, 512, 512},
               {256, 1024, 1024},
               {256, 1024, 4096}, {256, 2048, 2048}, {256, 2048, 4096}}) {
        if (quick && bs == 16 && B != 256) continue;
        const int blocks_per_seq = (ctx + bs - 1) / bs, nb = B * blocks_per_seq;
        Tensor kc = b.rand_bf16({nb, bs, Hkv, D}), vc = b.rand_bf16({nb, bs, Hkv, D});
        Tensor q = b.rand_bf16({B, Hq, D});
        Tensor o = b.be->alloc_tensor(DType::bf16, {B, Hq, D}, b.bufs);
        std::vector<int32_t> perm(nb), cu(B + 1), lens(B, ctx);
        std::iota(perm.begin(), perm.end(), 0);
        std::shuffle(perm.begin(), perm.end(), b.rng);
        std::iota(cu.begin(), cu.end(), 0);
        Tensor tcu = b.i32(cu), tlen = b.i32(lens), tbt = b.i32(perm);
        AttentionMetadata m;
        m.is_prefill = false;
        m.num_seqs = B;
        m.num_tokens = B;
        m.max_seqlen_q = 1;
        m.max_seqlen_k = bound;  // an upper bound, as under graph capture
        m.cu_seqlens_q = tcu.ptr<int32_t>();
        m.seqlens_k = tlen.ptr<int32_t>();
        m.block_tables = tbt.ptr<int32_t>();
        m.max_num_blocks = blocks_per_seq;
        const double us = b.time_us([&] { b.be->attention(q, {kc, vc}, m, 0.088f, o); });
        const double bytes = 2.0 * B * ctx * Hkv * D * 2;
        char sh[96], rate[64];
        std::snprintf(sh, sizeof sh, "B=%d ctx=%d bound=%d block=%d", B, ctx, bound, bs);
        std::snprintf(rate, sizeof rate, "%.0f GB/s", bytes / us / 1e3);
        row("attention decode", sh, us, rate);
      }
      b.bufs.clear();
    }
    // The bench.py workload's shape: contexts of uneven length (100..2048) under a graph's bound
    // of 4096: load balance across splits, not only bandwidth; at the batch sizes a run goes through.
    // The same with an FP8 (e4m3) cache: half the bytes (the rate counts the bytes read).
    for (auto [bs, B, fp8] : std::vector<std::tuple<int, int, bool>>{
             {16, 256, false}, {256, 16, false}, {256, 32, false}, {256, 64, false}, {256, 128, false},
             {256, 256, false}, {256, 1, true}, {256, 16, true}, {256, 64, true}, {256, 128, true}, {256, 256, true}}) {
      const int bound = 4096;
      std::uniform_int_distribution<int> len_dist(100, 2048);
      std::vector<int32_t> lens(B), cu(B + 1), table;
      const int max_blocks = (bound + bs - 1) / bs;
      int nb = 0;
      double tokens = 0;
      for (int i = 0; i < B; ++i) {
        lens[i] = len_dist(b.rng);
        tokens += lens[i];
        for (int j = 0; j < max_blocks; ++j) table.push_back(j < (lens[i] + bs - 1) / bs ? nb++ : -1);
      }
      std::iota(cu.begin(), cu.end(), 0);
      Tensor kc = fp8 ? b.rand_fp8_cache({nb, bs, Hkv, D}) : b.rand_bf16({nb, bs, Hkv, D});
      Tensor vc = fp8 ? b.rand_fp8_cache({nb, bs, Hkv, D}) : b.rand_bf16({nb, bs, Hkv, D});
      Tensor q = b.rand_bf16({B, Hq, D});
      Tensor o = b.be->alloc_tensor(DType::bf16, {B, Hq, D}, b.bufs);
      Tensor tcu = b.i32(cu), tlen = b.i32(lens), tbt = b.i32(table);
      const PagedKV kv{kc, vc, fp8 ? 0.02f : 1.f, fp8 ? 0.02f : 1.f};
      AttentionMetadata m;
      m.num_seqs = m.num_tokens = B;
      m.max_seqlen_q = 1;
      m.max_seqlen_k = bound;
      m.cu_seqlens_q = tcu.ptr<int32_t>();
      m.seqlens_k = tlen.ptr<int32_t>();
      m.block_tables = tbt.ptr<int32_t>();
      m.max_num_blocks = max_blocks;
      const double us = b.time_us([&] { b.be->attention(q, kv, m, 0.088f, o); });
      char sh[96], rate[64];
      std::snprintf(sh, sizeof sh, "B=%d ctx=100..2048 bound=%d block=%d%s", B, bound, bs, fp8 ? " e4m3" : "");
      std::snprintf(rate, sizeof rate, "%.0f GB/s", 2.0 * tokens * Hkv * D * (fp8 ? 1 : 2) / us / 1e3);
      row("attention decode", sh, us, rate);
      // With the step's q/k norm + RoPE + KV store before it: the two ops, then rope_attention
      // (one kernel, unless NANOVLLM_FUSE_ROPE=0).
      std::vector<int32_t> pos(B), slots(B);
      for (int i = 0; i < B; ++i) {
        pos[i] = lens[i] - 1;
        slots[i] = table[size_t(i) * max_blocks + pos[i] / bs] * bs + pos[i] % bs;
      }
      Tensor qkv = b.rand_bf16({B, (Hq + 2 * Hkv) * D}), qn = b.rand_bf16({D}), kn = b.rand_bf16({D});
      Tensor cs = b.be->alloc_tensor(DType::f32, {4096, D}, b.bufs);
      b.be->fill_zero(cs.data, cs.nbytes());
      Tensor tp = b.i32(pos), ts = b.i32(slots);
      m.slot_mapping = ts.ptr<int32_t>();
      const RopeStore rs{qkv, FoldedNorm{}, Tensor{}, qn, kn, tp, cs, 1e-6f, Hq, Hkv, ts.ptr<int32_t>()};
      const AttentionOptions ao{.scale = 0.088f};
      const double two = b.time_us([&] {
        b.be->qk_norm_rope_store(rs, kv, q);
        b.be->attention(q, kv, m, ao, o);
      });
      const double one = b.time_us([&] { b.be->rope_attention(rs, kv, m, ao, q, o); });
      row("rope + attention (2 ops)", sh, two, "");
      row("rope_attention", sh, one, "");
      b.bufs.clear();
    }
  }

  if (want("window")) {
    // ---- sliding-window attention (Mistral, Gemma 3's local layers): decode reads the window's K
    // and V rows only, so its time should follow min(ctx, window), not ctx; each row beside the
    // same data without a window. GB/s counts the bytes the call must read.
    const int window = 512, bs = 256;
    for (int B : {1, 16, 64}) {
      for (int ctx : {2048, 4096, 8192}) {
        if (quick && (B == 64 || ctx == 8192)) continue;
        const int blocks_per_seq = (ctx + bs - 1) / bs, nb = B * blocks_per_seq;
        Tensor kc = b.rand_bf16({nb, bs, Hkv, D}), vc = b.rand_bf16({nb, bs, Hkv, D});
        Tensor q = b.rand_bf16({B, Hq, D});
        Tensor o = b.be->alloc_tensor(DType::bf16, {B, Hq, D}, b.bufs);
        std::vector<int32_t> perm(nb), cu(B + 1), lens(B, ctx);
        std::iota(perm.begin(), perm.end(), 0);
        std::shuffle(perm.begin(), perm.end(), b.rng);
        std::iota(cu.begin(), cu.end(), 0);
        Tensor tcu = b.i32(cu), tlen = b.i32(lens), tbt = b.i32(perm);
        AttentionMetadata m;
        m.num_seqs = m.num_tokens = B;
        m.max_seqlen_q = 1;
        m.max_seqlen_k = 8192;  // the graph's bound
        m.cu_seqlens_q = tcu.ptr<int32_t>();
        m.seqlens_k = tlen.ptr<int32_t>();
        m.block_tables = tbt.ptr<int32_t>();
        m.max_num_blocks = blocks_per_seq;
        for (int w : {0, window}) {
          const AttentionOptions opts{.scale = 0.088f, .window = w};
          const double us = b.time_us([&] { b.be->attention(q, {kc, vc}, m, opts, o); });
          const int keys = w > 0 ? std::min(ctx, w) : ctx;
          char sh[96], rate[64];
          std::snprintf(sh, sizeof sh, "B=%d ctx=%d window=%d bound=8192 block=%d", B, ctx, w, bs);
          std::snprintf(rate, sizeof rate, "%.0f GB/s", 2.0 * B * keys * Hkv * D * 2 / us / 1e3);
          row("attention decode", sh, us, rate);
        }
        b.bufs.clear();
      }
    }
    // Prefill of long prompts: key tiles wholly before a query tile's windows are skipped, so the
    // work is ~ L x window rather than L^2 / 2 (FLOP/s counts the unmasked work).
    for (int L : {4096, 8192}) {
      if (quick && L == 8192) continue;
      const int bps = (L + bs - 1) / bs;
      Tensor kc = b.rand_bf16({bps, bs, Hkv, D}), vc = b.rand_bf16({bps, bs, Hkv, D});
      Tensor q = b.rand_bf16({L, Hq, D});
      Tensor o = b.be->alloc_tensor(DType::bf16, {L, Hq, D}, b.bufs);
      std::vector<int32_t> bt(bps), cu = {0, L}, lens = {L};
      std::iota(bt.begin(), bt.end(), 0);
      Tensor tcu = b.i32(cu), tlen = b.i32(lens), tbt = b.i32(bt);
      AttentionMetadata m;
      m.is_prefill = true;
      m.num_seqs = 1;
      m.num_tokens = L;
      m.max_seqlen_q = m.max_seqlen_k = L;
      m.cu_seqlens_q = tcu.ptr<int32_t>();
      m.seqlens_k = tlen.ptr<int32_t>();
      m.block_tables = tbt.ptr<int32_t>();
      m.max_num_blocks = bps;
      for (int w : {0, window}) {
        const AttentionOptions opts{.scale = 0.088f, .window = w};
        const double us = b.time_us([&] { b.be->attention(q, {kc, vc}, m, opts, o); }, 5);
        double pairs = 0;  // (query, key) pairs attended
        for (int i = 0; i < L; ++i) pairs += w > 0 ? std::min(i + 1, w) : i + 1;
        char sh[96], rate[64];
        std::snprintf(sh, sizeof sh, "seqs=1 len=%d window=%d", L, w);
        std::snprintf(rate, sizeof rate, "%.1f TFLOP/s", 4.0 * D * Hq * pairs / us / 1e6);
        row("attention prefill", sh, us, rate);
      }
      b.bufs.clear();
    }
  }

  if (want("prefill")) {
    // ---- prefill attention: causal FLOPs = 4 * D * Hq * L^2 / 2 per sequence ----
    for (auto [S, L] : std::vector<std::pair<int, int>>{{1, 512}, {8, 1024}, {4, 4096}}) {
      if (quick && L == 4096) continue;
      const int bs = 256, bps = (L + bs - 1) / bs, nb = S * bps, T = S * L;
      Tensor kc = b.rand_bf16({nb, bs, Hkv, D}), vc = b.rand_bf16({nb, bs, Hkv, D});
      Tensor q = b.rand_bf16({T, Hq, D});
      Tensor o = b.be->alloc_tensor(DType::bf16, {T, Hq, D}, b.bufs);
      std::vector<int32_t> bt(nb), cu(S + 1), lens(S, L);
      std::iota(bt.begin(), bt.end(), 0);
      for (int i = 0; i <= S; ++i) cu[i] = i * L;
      Tensor tcu = b.i32(cu), tlen = b.i32(lens), tbt = b.i32(bt);
      AttentionMetadata m;
      m.is_prefill = true;
      m.num_seqs = S;
      m.num_tokens = T;
      m.max_seqlen_q = L;
      m.max_seqlen_k = L;
      m.cu_seqlens_q = tcu.ptr<int32_t>();
      m.seqlens_k = tlen.ptr<int32_t>();
      m.block_tables = tbt.ptr<int32_t>();
      m.max_num_blocks = bps;
      const double us = b.time_us([&] { b.be->attention(q, {kc, vc}, m, 0.088f, o); }, 5);
      const double flops = 4.0 * D * Hq * (double)L * L / 2 * S;
      char sh[96], rate[64];
      std::snprintf(sh, sizeof sh, "seqs=%d len=%d", S, L);
      std::snprintf(rate, sizeof rate, "%.1f TFLOP/s", flops / us / 1e6);
      row("attention prefill", sh, us, rate);
      b.bufs.clear();
    }
  }

  if (want("gemm")) {
    // ---- GEMMs of one layer and the lm head ----
    struct G { const char* name; int n, k; };
    for (int M : {1, 8, 64, 256, 2048, 8192}) {
      if (quick && (M == 8 || M == 2048)) continue;
      for (G g : {G{"qkv_proj", (Hq + 2 * Hkv) * D, H}, G{"o_proj", H, Hq * D}, G{"gate_up", 2 * I, H},
                  G{"down", H, I}, G{"lm_head (f32 out)", V, H}}) {
        if (g.n == V && M > 256) continue;
        Tensor x = b.rand_bf16({M, g.k}), w = b.rand_bf16({g.n, g.k}, 0.02f);
        Tensor o = b.be->alloc_tensor(g.n == V ? DType::f32 : DType::bf16, {M, g.n}, b.bufs);
        const double us = b.time_us([&] { b.be->linear(x, w, o); });
        const double bytes = 2.0 * g.n * g.k + 2.0 * M * g.k + (g.n == V ? 4.0 : 2.0) * M * g.n;
        char sh[96], rate[96];
        std::snprintf(sh, sizeof sh, "M=%d N=%d K=%d", M, g.n, g.k);
        std::snprintf(rate, sizeof rate, "%.0f GB/s  %.1f TFLOP/s", bytes / us / 1e3, 2.0 * M * g.n * g.k / us / 1e6);
        row(g.name, sh, us, rate);
        b.bufs.clear();
      }
    }
  }

  if (want("small")) {
    // ---- small per-layer ops at decode batch 256 and prefill 8192 tokens ----
    for (int T : {1, 256, 8192}) {
      Tensor x = b.rand_bf16({T, H}), r = b.rand_bf16({T, H}), w = b.rand_bf16({H});
      Tensor o = b.be->alloc_tensor(DType::bf16, {T, H}, b.bufs);
      char sh[64];
      std::snprintf(sh, sizeof sh, "T=%d H=%d", T, H);
      double us = b.time_us([&] { b.be->rms_norm(x, w, 1e-6f, o); });
      char rate[64];
      std::snprintf(rate, sizeof rate, "%.0f GB/s", 2.0 * T * H * 2 / us / 1e3);
      row("rms_norm", sh, us, rate);
      Tensor gu = b.rand_bf16({T, 2 * I}), act = b.be->alloc_tensor(DType::bf16, {T, I}, b.bufs);
      us = b.time_us([&] { b.be->silu_mul(gu, FoldedNorm{}, act); });
      std::snprintf(rate, sizeof rate, "%.0f GB/s", 2.0 * T * I * 3 / us / 1e3);
      std::snprintf(sh, sizeof sh, "T=%d I=%d", T, I);
      row("silu_mul", sh, us, rate);
      us = b.time_us([&] { b.be->silu_mul(gu, FoldedNorm{&r, 1e-6f}, act); });
      std::snprintf(rate, sizeof rate, "%.0f GB/s", 2.0 * T * (I * 3 + H) / us / 1e3);
      row("silu_mul (folded norm)", sh, us, rate);
      us = b.time_us([&] { b.be->act_mul(gu, FoldedNorm{}, Activation::gelu_tanh, act); });
      std::snprintf(rate, sizeof rate, "%.0f GB/s", 2.0 * T * I * 3 / us / 1e3);
      row("gelu_tanh_mul", sh, us, rate);
      // Gemma's post-norms (residual += norm(x) * w) and Qwen2's qkv bias
      us = b.time_us([&] { b.be->rms_norm_add(x, w, 1e-6f, o); });
      std::snprintf(rate, sizeof rate, "%.0f GB/s", 2.0 * T * H * 3 / us / 1e3);
      std::snprintf(sh, sizeof sh, "T=%d H=%d", T, H);
      row("rms_norm_add", sh, us, rate);
      Tensor qkv_b = b.rand_bf16({T, (Hq + 2 * Hkv) * D}), bias = b.rand_bf16({(Hq + 2 * Hkv) * D});
      us = b.time_us([&] { b.be->add_bias(qkv_b, bias); });
      std::snprintf(rate, sizeof rate, "%.0f GB/s", 2.0 * T * (Hq + 2 * Hkv) * D * 2 / us / 1e3);
      std::snprintf(sh, sizeof sh, "T=%d N=%d", T, (Hq + 2 * Hkv) * D);
      row("add_bias", sh, us, rate);
      if (T <= 256) {  // Gemma's final logit soft-capping over the f32 logits
        Tensor logits = b.be->alloc_tensor(DType::f32, {T, V}, b.bufs);
        b.be->fill_zero(logits.data, logits.nbytes());
        us = b.time_us([&] { b.be->softcap(logits, 30.f); });
        std::snprintf(rate, sizeof rate, "%.0f GB/s", 8.0 * T * V / us / 1e3);
        std::snprintf(sh, sizeof sh, "T=%d V=%d", T, V);
        row("softcap", sh, us, rate);
      }
      // q/k norm + rope + store
      Tensor qkv = b.rand_bf16({T, (Hq + 2 * Hkv) * D}), qn = b.rand_bf16({D}), kn = b.rand_bf16({D});
      Tensor cs = b.be->alloc_tensor(DType::f32, {4096, D}, b.bufs);
      b.be->fill_zero(cs.data, cs.nbytes());
      std::vector<int32_t> pos(T), slots(T);
      for (int t = 0; t < T; ++t) { pos[t] = t % 4096; slots[t] = t; }
      Tensor tp = b.i32(pos), ts = b.i32(slots);
      const int nb = (T + 255) / 256;
      Tensor kc = b.rand_bf16({nb, 256, Hkv, D}), vc = b.rand_bf16({nb, 256, Hkv, D});
      Tensor qo = b.be->alloc_tensor(DType::bf16, {T, Hq, D}, b.bufs);
      for (bool fold : {false, true}) {
        const FoldedNorm f{fold ? &r : nullptr, 1e-6f};
        us = b.time_us([&] {
          b.be->qk_norm_rope_store({qkv, f, Tensor{}, qn, kn, tp, cs, 1e-6f, Hq, Hkv, ts.ptr<int32_t>()}, {kc, vc}, qo);
        });
        std::snprintf(sh, sizeof sh, "T=%d", T);
        std::snprintf(rate, sizeof rate, "%.0f GB/s", 2.0 * T * ((Hq + 2 * Hkv) * D * 2 + (fold ? H : 0)) / us / 1e3);
        row(fold ? "qk_norm_rope_store (folded)" : "qk_norm_rope_store", sh, us, rate);
      }
      b.bufs.clear();
    }
  }

  if (want("sample")) {
    // ---- sampling over the vocabulary: plain temperature, Qwen3's settings, top_k 64, top_p
    // alone, a repetition penalty; logprobs of 5 ----
    struct Setting {
      const char* name;
      SamplingRow row;
    };
    const Setting settings[] = {
        {"T=0.8", SamplingRow{.temperature = 0.8f}},
        {"T=0.6 top_k=20 top_p=0.95", SamplingRow{.temperature = 0.6f, .top_p = 0.95f, .top_k = 20}},
        {"T=1 top_k=64", SamplingRow{.temperature = 1.0f, .top_k = 64}},  // the top-k path's largest top_k
        {"T=0.8 top_p=0.95", SamplingRow{.temperature = 0.8f, .top_p = 0.95f}},
        {"T=0.8 rep=1.1", SamplingRow{.temperature = 0.8f, .repetition_penalty = 1.1f}},
    };
    for (int B : {1, 64, 256}) {
      Tensor logits = b.be->alloc_tensor(DType::f32, {B, V}, b.bufs);
      std::vector<float> h(size_t(B) * V);
      std::normal_distribution<float> d(0.f, 3.f);
      for (auto& x : h) x = d(b.rng);
      b.be->copy_to_device(logits.data, h.data(), h.size() * 4);
      Tensor to = b.be->alloc_tensor(DType::i32, {B}, b.bufs);
      Tensor rows_t = b.be->alloc_tensor(DType::i32, {B * 16}, b.bufs);  // SamplingRow x B (64 bytes each)
      Tensor filt = b.be->alloc_tensor(DType::i32, {B}, b.bufs);
      Tensor counts = b.be->alloc_tensor(DType::i32, {B, V}, b.bufs);
      Tensor mask = b.be->alloc_tensor(DType::i32, {B, (V + 31) / 32}, b.bufs);
      b.be->fill_zero(counts.data, counts.nbytes());
      b.be->fill_zero(mask.data, mask.nbytes());
      std::vector<int32_t> all(B);
      std::iota(all.begin(), all.end(), 0);
      b.be->copy_to_device(filt.data, all.data(), B * 4);
      for (const Setting& st : settings) {
        std::vector<SamplingRow> rows(B, st.row);
        for (int r = 0; r < B; ++r) {
          rows[r].key = 42 + r;
          rows[r].counter = 7;
          if (st.row.has_penalties()) rows[r].counts_row = r;
        }
        b.be->copy_to_device(rows_t.data, rows.data(), B * sizeof(SamplingRow));
        SampleBatch batch;
        batch.rows = static_cast<const SamplingRow*>(rows_t.data);
        batch.counts = TokenCounts{counts, mask};
        batch.filtered_rows = filt.ptr<int32_t>();
        batch.num_filtered = st.row.has_filters() ? B : 0;
        batch.max_filtered_top_k = max_filtered_top_k(rows.data(), B);
        const double us = b.time_us([&] { b.be->sample(logits, batch, to); });
        char sh[96], rate[64];
        std::snprintf(sh, sizeof sh, "B=%d V=%d %s", B, V, st.name);
        std::snprintf(rate, sizeof rate, "%.0f GB/s", 4.0 * B * V / us / 1e3);
        row("sample", sh, us, rate);
      }
      LogprobsOut lo{b.be->alloc_tensor(DType::f32, {B}, b.bufs), b.be->alloc_tensor(DType::i32, {B}, b.bufs),
                     b.be->alloc_tensor(DType::i32, {B, 5}, b.bufs), b.be->alloc_tensor(DType::f32, {B, 5}, b.bufs)};
      const double us = b.time_us([&] { b.be->logprobs(logits, filt, to, 5, lo); });
      char sh[96], rate[64];
      std::snprintf(sh, sizeof sh, "B=%d V=%d top 5", B, V);
      std::snprintf(rate, sizeof rate, "%.0f GB/s", 4.0 * B * V / us / 1e3);
      row("logprobs", sh, us, rate);
      b.bufs.clear();
    }
  }

  return 0;
}
