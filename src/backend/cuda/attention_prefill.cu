// Paged prefill attention over a variable-length batch (FlashAttention-2 style on mma.sync bf16
// tensor cores). K/V are read from the paged cache, so cached prefix blocks (prefix hits) and
// earlier chunks (chunked prefill) are attended like the new tokens. GQA packing: a block's 64
// query rows are (token, query head) pairs of one kv head, so each K/V tile is loaded once for
// all G query heads that share it. K and V tiles load with cp.async, V overlapping Q.K^T and the
// next K overlapping P.V.
// Options (AttentionOptions), template arguments so that the plain instantiation is the kernel as
// it was: WINDOW, a query at position i sees keys (i - window, i] only: key tiles wholly before
// the window of the block's first query are never loaded, and entries outside a row's window are
// masked like the causal ones; SOFTCAP, scores become softcap * tanh(score / softcap).
// Head dims 64 and 128 keep Q's fragments in registers and the K/V tiles in static shared memory;
// 256 (Gemma 3) would need 64 more registers a thread for Q beside a 128-register accumulator, so
// its Q tile is staged in shared memory with K and V (dynamic, 99 KB) and read per k-step.
// An FP8 cache (C = e4m3 or e5m2): tiles of bytes (rows of D + 16), each K and V element widened
// to f16 (exactly) as its fragment is read, and the tensor cores run f16: Q is converted to f16
// already multiplied by the K scale (which keeps it far from f16's range limit), P is f16, and
// the V scale multiplies the output.
#include <stdexcept>
#include <string>

#include "backend/cuda/common.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"

namespace nanovllm::cuda {
namespace {

constexpr int kBM = 64;  // query rows per block (4 warps x 16)
constexpr int kBN = 64;  // kv tokens per tile
constexpr int kThreads = 128;
constexpr float kLog2e = 1.4426950408889634f;

// Row stride of a K/V tile in elements: D + 8 bf16 or D + 16 FP8 bytes (16 bytes of padding).
template <class C, int D> constexpr int kTileLd = is_fp8_kv<C> ? D + 16 : D + 8;

// Copies kv tokens [n0, n0 + kBN) of kv head h into a [kBN][kTileLd] tile (rows past kv_len zeroed).
template <class C, int D>
__device__ __forceinline__ void load_tile(C* tile, const C* cache, const int32_t* bt, int n0, int kv_len,
                                          int log2_bs, int hkv, int h) {
  constexpr int EPC = 16 / sizeof(C);  // elements per 16-byte chunk
  constexpr int CPT = D / EPC;         // chunks per token row
#pragma unroll
  for (int i = 0; i < kBN * CPT / kThreads; ++i) {
    const int c = threadIdx.x + i * kThreads, tok = c / CPT, part = c % CPT;
    const int n = n0 + tok;
    const bool valid = n < kv_len;
    const C* src = cache;
    if (valid) {
      const int blk = bt[n >> log2_bs];
      src = cache + (((size_t)blk << log2_bs) + (n & ((1 << log2_bs) - 1))) * hkv * D + (size_t)h * D + part * EPC;
    }
    cp_async16(tile + tok * kTileLd<C, D> + part * EPC, src, valid);
  }
}

// s_scale: what Q.K^T is multiplied by (scale log2(e); with SOFTCAP scale / softcap); cap_log2:
// softcap log2(e) (SOFTCAP only); window: the window (WINDOW only); k_scale, v_scale: an FP8
// cache's scales (unused for bf16).
template <class C, int D, bool WINDOW, bool SOFTCAP>
__global__ void __launch_bounds__(kThreads)
prefill_kernel(const bf16* __restrict__ q, const C* __restrict__ k_cache, const C* __restrict__ v_cache,
               const int32_t* __restrict__ cu_seqlens_q, const int32_t* __restrict__ seqlens_k,
               const int32_t* __restrict__ block_tables, int max_num_blocks, int hq, int hkv, int log2_bs,
               float s_scale, float cap_log2, int window, float k_scale, float v_scale, bf16* __restrict__ out) {
  constexpr int KS = D / 16;  // k-steps over the head dim
  constexpr int ND = D / 8;   // n-tiles of the output
  constexpr bool kQInSmem = D > 128;
  constexpr bool F8 = is_fp8_kv<C>;
  constexpr int LD = kTileLd<C, D>;
  C *ks, *vs;
  bf16* qs = nullptr;  // bf16 Q rows; under F8 the same bits hold f16 Q times k_scale
  if constexpr (!kQInSmem) {
    __shared__ __align__(16) C ks_static[kBN * LD];
    __shared__ __align__(16) C vs_static[kBN * LD];
    ks = ks_static;
    vs = vs_static;
  } else {
    extern __shared__ uint4 prefill_dyn_smem[];  // [K tile][V tile][Q tile of [64][D + 8] 16-bit]
    ks = reinterpret_cast<C*>(prefill_dyn_smem);
    vs = ks + kBN * LD;
    qs = reinterpret_cast<bf16*>(vs + kBN * LD);
  }
  // A Q register pair as the tensor cores take it: bf16 as stored, or f16 times the K scale.
  auto q_pair = [&](uint32_t bits) { return F8 ? bf16x2_to_f16x2(bits, k_scale) : bits; };

  pdl_launch_dependents();
  pdl_wait();
  const int mb = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int G = hq / hkv;
  const int q0 = cu_seqlens_q[b], q_len = cu_seqlens_q[b + 1] - q0;
  const int kv_len = seqlens_k[b];
  const int rows = q_len * G;
  if (mb * kBM >= rows) return;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gi = lane >> 2, ti = lane & 3;
  const int32_t* bt = block_tables + (size_t)b * max_num_blocks;

  // This thread's two rows: r0 = warp*16 + gi and r0 + 8.
  int pos[2];
  const bf16* qrow[2];
  bf16* orow[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int R = mb * kBM + warp * 16 + gi + i * 8;
    if (R < rows) {
      const int j = R / G, head = h * G + R % G;
      pos[i] = kv_len - q_len + j;
      qrow[i] = q + ((size_t)(q0 + j) * hq + head) * D;
      orow[i] = out + ((size_t)(q0 + j) * hq + head) * D;
    } else {
      pos[i] = -1;
      qrow[i] = nullptr;
      orow[i] = nullptr;
    }
  }
  uint32_t qa[kQInSmem ? 1 : KS][4];
  if constexpr (!kQInSmem) {
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const uint32_t* p = reinterpret_cast<const uint32_t*>(qrow[i] + kk * 16 + ti * 2);
        qa[kk][i] = qrow[i] ? q_pair(p[0]) : 0u;      // a0 (row r0), a1 (row r1): columns ti*2..+1
        qa[kk][2 + i] = qrow[i] ? q_pair(p[4]) : 0u;  // a2, a3: columns 8 + ti*2..+1
      }
    }
  } else {
    // The block's 64 query rows into qs (rows past the block's end zeroed); the first K tile's
    // wait below makes them visible.
    constexpr int CPT = D / 8;
    for (int c = threadIdx.x; c < kBM * CPT; c += kThreads) {
      const int r = c / CPT, part = c % CPT, R = mb * kBM + r;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (R < rows) {
        const int j = R / G, head = h * G + R % G;
        v = *reinterpret_cast<const uint4*>(q + ((size_t)(q0 + j) * hq + head) * D + part * 8);
        if constexpr (F8) {
          v.x = q_pair(v.x); v.y = q_pair(v.y); v.z = q_pair(v.z); v.w = q_pair(v.w);
        }
      }
      *reinterpret_cast<uint4*>(qs + r * (D + 8) + part * 8) = v;
    }
  }

  // Last kv position any row of this block attends to.
  const int last_row = min(rows - 1, mb * kBM + kBM - 1);
  const int n_end = min(kv_len, kv_len - q_len + last_row / G + 1);
  const int tiles = (n_end + kBN - 1) / kBN;
  // First tile: with a window, the one holding the first key of the block's first query (rows
  // are in token order, so it has the earliest window); tiles before it are masked for every row.
  int first_tile = 0;
  if constexpr (WINDOW) first_tile = max(0, kv_len - q_len + (mb * kBM) / G - window + 1) / kBN;

  float o[ND][4];
#pragma unroll
  for (int nd = 0; nd < ND; ++nd) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  if (first_tile < tiles) {
    load_tile<C, D>(ks, k_cache, bt, first_tile * kBN, kv_len, log2_bs, hkv, h);
    cp_async_commit();
  }
  for (int it = first_tile; it < tiles; ++it) {
    const int n0 = it * kBN;
    load_tile<C, D>(vs, v_cache, bt, n0, kv_len, log2_bs, hkv, h);
    cp_async_commit();
    cp_async_wait<1>();  // K tile ready
    __syncthreads();

    float s[kBN / 8][4];
#pragma unroll
    for (int nt = 0; nt < kBN / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
      const uint32_t(&a)[4] = qa[kQInSmem ? 0 : kk];
      if constexpr (kQInSmem) {
        const bf16* qr = qs + (warp * 16 + gi) * (D + 8) + kk * 16 + ti * 2;
        qa[0][0] = *reinterpret_cast<const uint32_t*>(qr);
        qa[0][1] = *reinterpret_cast<const uint32_t*>(qr + 8 * (D + 8));
        qa[0][2] = *reinterpret_cast<const uint32_t*>(qr + 8);
        qa[0][3] = *reinterpret_cast<const uint32_t*>(qr + 8 * (D + 8) + 8);
      }
#pragma unroll
      for (int nt = 0; nt < kBN / 8; ++nt) {
        const C* kr = ks + (nt * 8 + gi) * LD + kk * 16 + ti * 2;
        if constexpr (F8) {
          mma_f16(s[nt], a, fp8x2_to_half2_bits<C>(*reinterpret_cast<const uint16_t*>(kr)),
                  fp8x2_to_half2_bits<C>(*reinterpret_cast<const uint16_t*>(kr + 8)));
        } else {
          mma_bf16(s[nt], a, *reinterpret_cast<const uint32_t*>(kr), *reinterpret_cast<const uint32_t*>(kr + 8));
        }
      }
    }
    // Causal (and window) mask and online softmax (log2 domain) for the thread's two rows. A row
    // with every entry of this tile masked gets mx = -inf: it keeps its running max (or, before
    // its first key, base 0 and weights 0) below.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < kBN / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = n0 + nt * 8 + ti * 2 + (e & 1);
        const int i = e >> 1;
        bool keep = col <= pos[i];
        if constexpr (WINDOW) keep = keep && col > pos[i] - window;
        float v = s[nt][e] * s_scale;
        if constexpr (SOFTCAP) v = cap_log2 * tanhf(v);
        s[nt][e] = keep ? v : -INFINITY;
        mx[i] = fmaxf(mx[i], s[nt][e]);
      }
    }
    float corr[2], base[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
      const float mn = fmaxf(m[i], mx[i]);
      base[i] = mn == -INFINITY ? 0.f : mn;  // a fully masked row keeps weights 0, not NaN
      corr[i] = exp2f(m[i] - base[i]);
      m[i] = mn;
      l[i] *= corr[i];
    }
#pragma unroll
    for (int nd = 0; nd < ND; ++nd) {
      o[nd][0] *= corr[0]; o[nd][1] *= corr[0];
      o[nd][2] *= corr[1]; o[nd][3] *= corr[1];
    }
    uint32_t pa[kBN / 16][4];
#pragma unroll
    for (int nt = 0; nt < kBN / 8; ++nt) {
      const float p0 = exp2f(s[nt][0] - base[0]), p1 = exp2f(s[nt][1] - base[0]);
      const float p2 = exp2f(s[nt][2] - base[1]), p3 = exp2f(s[nt][3] - base[1]);
      l[0] += p0 + p1;
      l[1] += p2 + p3;
      pa[nt / 2][(nt & 1) * 2 + 0] = F8 ? pack_f16(p0, p1) : pack_bf16(p0, p1);
      pa[nt / 2][(nt & 1) * 2 + 1] = F8 ? pack_f16(p2, p3) : pack_bf16(p2, p3);
    }
    __syncthreads();  // every warp is done with the K tile
    if (it + 1 < tiles) {
      load_tile<C, D>(ks, k_cache, bt, n0 + kBN, kv_len, log2_bs, hkv, h);
      cp_async_commit();
      cp_async_wait<1>();  // V tile ready
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kBN / 16; ++j) {
      const C* v0 = vs + (j * 16 + ti * 2) * LD + gi;
#pragma unroll
      for (int nd = 0; nd < ND; ++nd) {
        const C* v = v0 + nd * 8;
        if constexpr (F8) {
          const uint8_t* b = reinterpret_cast<const uint8_t*>(v);
          const uint32_t b0 = fp8x2_to_half2_bits<C>(static_cast<uint16_t>(b[0] | (b[LD] << 8)));
          const uint32_t b1 = fp8x2_to_half2_bits<C>(static_cast<uint16_t>(b[8 * LD] | (b[9 * LD] << 8)));
          mma_f16(o[nd], pa[j], b0, b1);
        } else {
          const uint32_t b0 = pack_halves(v[0], v[LD]);
          const uint32_t b1 = pack_halves(v[8 * LD], v[9 * LD]);
          mma_bf16(o[nd], pa[j], b0, b1);
        }
      }
    }
    __syncthreads();  // every warp is done with the V tile
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (!orow[i]) continue;
    const float inv = l[i] > 0.f ? (F8 ? v_scale : 1.f) / l[i] : 0.f;
#pragma unroll
    for (int nd = 0; nd < ND; ++nd)
      *reinterpret_cast<uint32_t*>(orow[i] + nd * 8 + ti * 2) = pack_bf16(o[nd][2 * i] * inv, o[nd][2 * i + 1] * inv);
  }
}

// A launch's arguments, handed down the template dispatch below.
struct PrefillLaunch {
  const void* q;
  const PagedKVArgs& kv;
  const int32_t* cu_seqlens_q;
  int log2_bs;
  dim3 grid;
  void* out;
};

template <class C, int D, bool WINDOW, bool SOFTCAP>
void launch_dwsc(const PrefillLaunch& a, cudaStream_t s) {
  const AttnShape& sh = a.kv.sh;
  auto kern = prefill_kernel<C, D, WINDOW, SOFTCAP>;
  size_t smem = 0;
  if constexpr (D > 128) {
    smem = 2 * kBN * kTileLd<C, D> * sizeof(C) + kBM * (D + 8) * sizeof(bf16);
    static bool raised = false;  // per instantiation
    if (!raised) {
      check(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), "attention (prefill)",
            "cudaFuncSetAttribute");
      raised = true;
    }
  }
  launch("attention (prefill)", kern, a.grid, kThreads, smem, s,
         static_cast<const bf16*>(a.q), static_cast<const C*>(a.kv.k), static_cast<const C*>(a.kv.v),
         a.cu_seqlens_q, a.kv.seqlens_k, a.kv.block_tables, a.kv.max_num_blocks, sh.num_q_heads, sh.num_kv_heads,
         a.log2_bs, SOFTCAP ? sh.scale / sh.softcap : sh.scale * kLog2e, sh.softcap * kLog2e, sh.window,
         a.kv.k_scale, a.kv.v_scale, static_cast<bf16*>(a.out));
}

template <int D, bool WINDOW, bool SOFTCAP>
void launch_dws(const PrefillLaunch& a, cudaStream_t s) {
  switch (a.kv.cache_t) {
    case DType::bf16: launch_dwsc<bf16, D, WINDOW, SOFTCAP>(a, s); break;
    case DType::f8e4m3: launch_dwsc<e4m3, D, WINDOW, SOFTCAP>(a, s); break;
    case DType::f8e5m2: launch_dwsc<e5m2, D, WINDOW, SOFTCAP>(a, s); break;
    default:
      throw std::invalid_argument(std::string("attention (prefill): the KV cache must be BF16, F8_E4M3 or F8_E5M2, got ") +
                                  dtype_name(a.kv.cache_t));
  }
}

template <int D>
void launch_d(const PrefillLaunch& a, cudaStream_t s) {
  const bool window = a.kv.sh.window > 0, softcap = a.kv.sh.softcap > 0;
  if (!window && !softcap) launch_dws<D, false, false>(a, s);
  else if (window && !softcap) launch_dws<D, true, false>(a, s);
  else if (!window) launch_dws<D, false, true>(a, s);
  else launch_dws<D, true, true>(a, s);
}

}  // namespace

void launch_attention_prefill(const void* q, const PagedKVArgs& kv, const int32_t* cu_seqlens_q, int max_seqlen_q,
                              void* out, cudaStream_t s) {
  const AttnShape& sh = kv.sh;
  if (kv.num_seqs == 0 || max_seqlen_q == 0) return;
  int log2_bs = 0;
  while ((1 << log2_bs) < sh.block_size) ++log2_bs;
  const int G = sh.num_q_heads / sh.num_kv_heads;
  const PrefillLaunch a{q, kv, cu_seqlens_q, log2_bs,
                        dim3((max_seqlen_q * G + kBM - 1) / kBM, sh.num_kv_heads, kv.num_seqs), out};
  if (sh.head_dim == 64) launch_d<64>(a, s);
  else if (sh.head_dim == 128) launch_d<128>(a, s);
  else if (sh.head_dim == 256) launch_d<256>(a, s);
  else throw std::invalid_argument("attention: head_dim " + std::to_string(sh.head_dim) + " not supported (64, 128 or 256)");
}

}  // namespace nanovllm::cuda
