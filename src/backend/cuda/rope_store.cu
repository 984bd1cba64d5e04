// Fused per-head q/k RMSNorm + rotary embedding (neox rotate-half) + paged KV-cache store: one warp
// per (token, q head) and per (token, kv head); the kv warp also copies the v head. One read of
// the fused qkv projection, one write of q and of the new K/V rows. A decoder norm folded into the
// qkv projection (FoldedNorm) is finished here: its per-token factor scales q, k and v first.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"

namespace nanovllm::cuda {
namespace {

// One block per token, one warp per head (q heads, then kv heads; a warp takes several when there
// are more than 32). Lane l owns elements [l*P, l*P+P) of the first half of the head and their
// rotation partners [D/2 + l*P, ...) in the second half, so RoPE needs no data exchange: D = 64 * P.
// With a folded norm (rms_rows) the block first sums the token's residual row for its factor.
template <int P, class W>
__global__ void qk_norm_rope_store_kernel(const bf16* __restrict__ qkv, const bf16* __restrict__ rms_rows, int hidden,
                                          float rms_eps, const W* __restrict__ q_norm_w, const W* __restrict__ k_norm_w,
                                          const int32_t* __restrict__ positions, const float* __restrict__ cos_sin,
                                          float eps, int hq, int hkv, const int32_t* __restrict__ slot_mapping,
                                          bf16* __restrict__ k_cache, bf16* __restrict__ v_cache,
                                          bf16* __restrict__ q_out) {
  constexpr int D = 64 * P, H = D / 2;
  pdl_launch_dependents();
  pdl_wait();
  const int t = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x & 31, nwarps = blockDim.x / 32;
  const int heads = hq + hkv;
  const bf16* row = qkv + (size_t)t * (hq + 2 * hkv) * D;
  float a[P], b[P];
  auto load_head = [&](int h) {
#pragma unroll
    for (int p = 0; p < P; ++p) {
      a[p] = to_f(row[(size_t)h * D + lane * P + p]);
      b[p] = to_f(row[(size_t)h * D + H + lane * P + p]);
    }
  };
  load_head(warp);  // in flight while the block sums the residual row (warp < heads: see the launch)
  const float pre = rms_rows ? block_row_inv_rms(rms_rows + (size_t)t * hidden, hidden, rms_eps) : 1.f;
  const int slot = slot_mapping ? slot_mapping[t] : -1;  // -1: this token's K/V are not stored (padding row)
  const float* cs = cos_sin + (size_t)positions[t] * D;
  for (int h = warp; h < heads; h += nwarps) {
    const bool is_q = h < hq;
    if (!is_q && slot < 0) continue;
    if (h != warp) load_head(h);
    float ss = 0.f;
#pragma unroll
    for (int p = 0; p < P; ++p) {
      a[p] *= pre;
      b[p] *= pre;
      ss += a[p] * a[p] + b[p] * b[p];
    }
    const float inv = rsqrtf(warp_sum(ss) / D + eps);
    const W* w = is_q ? q_norm_w : k_norm_w;
    bf16* dst = is_q ? q_out + ((size_t)t * hq + h) * D : k_cache + ((size_t)slot * hkv + (h - hq)) * D;
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int i = lane * P + p;
      const float xa = a[p] * inv * to_f(w[i]), xb = b[p] * inv * to_f(w[H + i]);
      const float c = cs[i], s = cs[H + i];
      dst[i] = from_f<bf16>(xa * c - xb * s);
      dst[H + i] = from_f<bf16>(xb * c + xa * s);
    }
    if (!is_q) {  // v head (h - hq) follows all k heads
      const bf16* vsrc = row + (size_t)(h + hkv) * D;
      bf16* vdst = v_cache + ((size_t)slot * hkv + (h - hq)) * D;
#pragma unroll
      for (int p = 0; p < P; ++p) {
        vdst[lane * P + p] = from_f<bf16>(to_f(vsrc[lane * P + p]) * pre);
        vdst[H + lane * P + p] = from_f<bf16>(to_f(vsrc[H + lane * P + p]) * pre);
      }
    }
  }
}

template <int P>
void launch_p(const RopeStoreArgs& a, cudaStream_t s) {
  const int warps = std::min(a.num_q_heads + a.num_kv_heads, 32);
  const char* op = "qk_norm_rope_store";
  auto rows = static_cast<const bf16*>(a.rms.rows);
  if (a.wt == DType::bf16)
    launch(op, qk_norm_rope_store_kernel<P, bf16>, a.tokens, warps * 32, 0, s, static_cast<const bf16*>(a.qkv), rows,
           a.rms.hidden, a.rms.eps, static_cast<const bf16*>(a.q_norm_w), static_cast<const bf16*>(a.k_norm_w),
           a.positions, a.cos_sin, a.eps, a.num_q_heads, a.num_kv_heads, a.slot_mapping,
           static_cast<bf16*>(a.k_cache), static_cast<bf16*>(a.v_cache), static_cast<bf16*>(a.q_out));
  else if (a.wt == DType::f32)
    launch(op, qk_norm_rope_store_kernel<P, float>, a.tokens, warps * 32, 0, s, static_cast<const bf16*>(a.qkv), rows,
           a.rms.hidden, a.rms.eps, static_cast<const float*>(a.q_norm_w), static_cast<const float*>(a.k_norm_w),
           a.positions, a.cos_sin, a.eps, a.num_q_heads, a.num_kv_heads, a.slot_mapping,
           static_cast<bf16*>(a.k_cache), static_cast<bf16*>(a.v_cache), static_cast<bf16*>(a.q_out));
  else
    throw std::invalid_argument(std::string("qk_norm_rope_store: norm weights must be BF16 or F32, got ") +
                                dtype_name(a.wt));
}

}  // namespace

void launch_qk_norm_rope_store(const RopeStoreArgs& a, cudaStream_t s) {
  if (a.tokens == 0) return;
  switch (a.head_dim) {
    case 64: launch_p<1>(a, s); break;
    case 128: launch_p<2>(a, s); break;
    case 256: launch_p<4>(a, s); break;
    default:
      throw std::invalid_argument("qk_norm_rope_store: head_dim " + std::to_string(a.head_dim) +
                                  " not supported by the CUDA backend (64, 128 or 256)");
  }
}

}  // namespace nanovllm::cuda
