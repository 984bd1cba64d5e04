// Paged prefill attention over a variable-length batch (FlashAttention-2 style on mma.sync bf16
// tensor cores). K/V are read from the paged cache, so cached prefix blocks (prefix hits) and
// earlier chunks (chunked prefill) are attended like the new tokens. GQA packing: a block's 64
// query rows are (token, query head) pairs of one kv head, so each K/V tile is loaded once for
// all G query heads that share it. K and V tiles load with cp.async, V overlapping Q.K^T and the
// next K overlapping P.V.
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

// Copies kv tokens [n0, n0 + kBN) of kv head h into a [kBN][D + 8] tile (rows past kv_len zeroed).
template <int D>
__device__ __forceinline__ void load_tile(bf16* tile, const bf16* cache, const int32_t* bt, int n0, int kv_len,
                                          int log2_bs, int hkv, int h) {
  constexpr int CPT = D / 8;  // 16-byte chunks per token row
#pragma unroll
  for (int i = 0; i < kBN * CPT / kThreads; ++i) {
    const int c = threadIdx.x + i * kThreads, tok = c / CPT, part = c % CPT;
    const int n = n0 + tok;
    const bool valid = n < kv_len;
    const bf16* src = cache;
    if (valid) {
      const int blk = bt[n >> log2_bs];
      src = cache + (((size_t)blk << log2_bs) + (n & ((1 << log2_bs) - 1))) * hkv * D + (size_t)h * D + part * 8;
    }
    cp_async16(tile + tok * (D + 8) + part * 8, src, valid);
  }
}

template <int D>
__global__ void __launch_bounds__(kThreads)
prefill_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k_cache, const bf16* __restrict__ v_cache,
               const int32_t* __restrict__ cu_seqlens_q, const int32_t* __restrict__ seqlens_k,
               const int32_t* __restrict__ block_tables, int max_num_blocks, int hq, int hkv, int log2_bs,
               float scale_log2, bf16* __restrict__ out) {
  constexpr int KS = D / 16;  // k-steps over the head dim
  constexpr int ND = D / 8;   // n-tiles of the output
  __shared__ __align__(16) bf16 ks[kBN * (D + 8)];
  __shared__ __align__(16) bf16 vs[kBN * (D + 8)];

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
  uint32_t qa[KS][4];
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const uint32_t* p = reinterpret_cast<const uint32_t*>(qrow[i] + kk * 16 + ti * 2);
      qa[kk][i] = qrow[i] ? p[0] : 0u;      // a0 (row r0), a1 (row r1): columns ti*2..+1
      qa[kk][2 + i] = qrow[i] ? p[4] : 0u;  // a2, a3: columns 8 + ti*2..+1
    }
  }

  // Last kv position any row of this block attends to.
  const int last_row = min(rows - 1, mb * kBM + kBM - 1);
  const int n_end = min(kv_len, kv_len - q_len + last_row / G + 1);
  const int tiles = (n_end + kBN - 1) / kBN;

  float o[ND][4];
#pragma unroll
  for (int nd = 0; nd < ND; ++nd) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  if (tiles > 0) {
    load_tile<D>(ks, k_cache, bt, 0, kv_len, log2_bs, hkv, h);
    cp_async_commit();
  }
  for (int it = 0; it < tiles; ++it) {
    const int n0 = it * kBN;
    load_tile<D>(vs, v_cache, bt, n0, kv_len, log2_bs, hkv, h);
    cp_async_commit();
    cp_async_wait<1>();  // K tile ready
    __syncthreads();

    float s[kBN / 8][4];
#pragma unroll
    for (int nt = 0; nt < kBN / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
#pragma unroll
      for (int nt = 0; nt < kBN / 8; ++nt) {
        const bf16* kr = ks + (nt * 8 + gi) * (D + 8) + kk * 16 + ti * 2;
        mma_bf16(s[nt], qa[kk], *reinterpret_cast<const uint32_t*>(kr), *reinterpret_cast<const uint32_t*>(kr + 8));
      }
    }
    // Causal mask and online softmax (log2 domain) for the thread's two rows.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < kBN / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = n0 + nt * 8 + ti * 2 + (e & 1);
        const int i = e >> 1;
        s[nt][e] = col <= pos[i] ? s[nt][e] * scale_log2 : -INFINITY;
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
      pa[nt / 2][(nt & 1) * 2 + 0] = pack_bf16(p0, p1);
      pa[nt / 2][(nt & 1) * 2 + 1] = pack_bf16(p2, p3);
    }
    __syncthreads();  // every warp is done with the K tile
    if (it + 1 < tiles) {
      load_tile<D>(ks, k_cache, bt, n0 + kBN, kv_len, log2_bs, hkv, h);
      cp_async_commit();
      cp_async_wait<1>();  // V tile ready
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kBN / 16; ++j) {
      const bf16* v0 = vs + (j * 16 + ti * 2) * (D + 8) + gi;
#pragma unroll
      for (int nd = 0; nd < ND; ++nd) {
        const bf16* v = v0 + nd * 8;
        const uint32_t b0 = pack_halves(v[0], v[D + 8]);
        const uint32_t b1 = pack_halves(v[8 * (D + 8)], v[9 * (D + 8)]);
        mma_bf16(o[nd], pa[j], b0, b1);
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
    const float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
#pragma unroll
    for (int nd = 0; nd < ND; ++nd)
      *reinterpret_cast<uint32_t*>(orow[i] + nd * 8 + ti * 2) = pack_bf16(o[nd][2 * i] * inv, o[nd][2 * i + 1] * inv);
  }
}

}  // namespace

void launch_attention_prefill(const void* q, const PagedKVArgs& kv, const int32_t* cu_seqlens_q, int max_seqlen_q,
                              void* out, cudaStream_t s) {
  const int num_seqs = kv.num_seqs, max_num_blocks = kv.max_num_blocks;
  const int32_t *seqlens_k = kv.seqlens_k, *block_tables = kv.block_tables;
  const AttnShape& sh = kv.sh;
  if (num_seqs == 0 || max_seqlen_q == 0) return;
  int log2_bs = 0;
  while ((1 << log2_bs) < sh.block_size) ++log2_bs;
  const int G = sh.num_q_heads / sh.num_kv_heads;
  dim3 grid((max_seqlen_q * G + kBM - 1) / kBM, sh.num_kv_heads, num_seqs);
  const float sl = sh.scale * kLog2e;
  auto qp = static_cast<const bf16*>(q);
  auto kp = static_cast<const bf16*>(kv.k);
  auto vp = static_cast<const bf16*>(kv.v);
  auto op = static_cast<bf16*>(out);
  const char* name = "attention (prefill)";
  if (sh.head_dim == 64)
    launch(name, prefill_kernel<64>, grid, kThreads, 0, s, qp, kp, vp, cu_seqlens_q, seqlens_k, block_tables,
           max_num_blocks, sh.num_q_heads, sh.num_kv_heads, log2_bs, sl, op);
  else if (sh.head_dim == 128)
    launch(name, prefill_kernel<128>, grid, kThreads, 0, s, qp, kp, vp, cu_seqlens_q, seqlens_k, block_tables,
           max_num_blocks, sh.num_q_heads, sh.num_kv_heads, log2_bs, sl, op);
  else
    throw std::invalid_argument("attention: head_dim " + std::to_string(sh.head_dim) + " not supported (64 or 128)");
}

}  // namespace nanovllm::cuda
