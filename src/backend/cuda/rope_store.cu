// Fused per-head q/k RMSNorm + rotary embedding (neox rotate-half) + paged KV-cache store: one warp
// per (token, q head) and per (token, kv head); the kv warp also copies the v head. One read of
// the fused qkv projection, one write of q and of the new K/V rows. A decoder norm folded into the
// qkv projection (FoldedNorm) is finished here: its per-token factor scales q, k and v first; then
// the projection's bias (Qwen2) is added, before the q/k norm (Qwen3, Gemma 3; none for Llama,
// Qwen2, Mistral) and RoPE, as the CPU's norm_rope_head does. An FP8 cache gets k / k_scale and
// v / v_scale, rounded to nearest even and saturated (backend.h's PagedKV), one byte an element.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/rope.cuh"

namespace nanovllm::cuda {
namespace {

// One block per token, one warp per head (q heads, then kv heads; a warp takes several when there
// are more than 32), each head as rope.cuh's helpers do it (D = 64 * P).
// With a folded norm (rms_rows) the block first sums the token's residual row for its factor.
// bias (nullptr: none) is indexed like a qkv row; q_norm_w == nullptr: no q/k norm. Both are the
// same for every warp of the launch, so the branches on them do not diverge. C: the cache's
// element type (bf16, e4m3, e5m2); k_scale, v_scale divide what an FP8 cache stores.
template <int P, class W, class B, class C>
__global__ void qk_norm_rope_store_kernel(const bf16* __restrict__ qkv, const bf16* __restrict__ rms_rows, int hidden,
                                          float rms_eps, const B* __restrict__ bias,
                                          const W* __restrict__ q_norm_w, const W* __restrict__ k_norm_w,
                                          const int32_t* __restrict__ positions, const float* __restrict__ cos_sin,
                                          float eps, int hq, int hkv, const int32_t* __restrict__ slot_mapping,
                                          C* __restrict__ k_cache, C* __restrict__ v_cache, float k_scale,
                                          float v_scale, bf16* __restrict__ q_out) {
  constexpr int D = 64 * P;
  pdl_launch_dependents();
  pdl_wait();
  const int t = blockIdx.x, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  const int heads = hq + hkv;
  const bf16* row = qkv + (size_t)t * (hq + 2 * hkv) * D;
  float a[P], b[P];
  load_head<P>(row + (size_t)warp * D, a, b);  // in flight while the block sums the residual row (warp < heads)
  const float pre = rms_rows ? block_row_inv_rms(rms_rows + (size_t)t * hidden, hidden, rms_eps) : 1.f;
  const int slot = slot_mapping ? slot_mapping[t] : -1;  // -1: this token's K/V are not stored (padding row)
  const float* cs = cos_sin + (size_t)positions[t] * D;
  for (int h = warp; h < heads; h += nwarps) {
    const bool is_q = h < hq;
    if (!is_q && slot < 0) continue;
    if (h != warp) load_head<P>(row + (size_t)h * D, a, b);
    norm_rope<P>(a, b, pre, bias ? bias + (size_t)h * D : nullptr, is_q ? q_norm_w : k_norm_w, eps, cs);
    if (is_q) {
      store_q_head<P>(a, b, q_out + ((size_t)t * hq + h) * D);
    } else {  // v head (h - hq) follows all k heads, and so do its bias columns
      const size_t row_off = ((size_t)slot * hkv + (h - hq)) * D, vcol = (size_t)(h + hkv) * D;
      store_k_head<P>(a, b, k_scale, k_cache + row_off);
      store_v_head<P>(row + vcol, pre, bias ? bias + vcol : nullptr, v_scale, v_cache + row_off);
    }
  }
}

template <int P, class W, class B, class C>
void launch_pwbc(const RopeStoreArgs& a, cudaStream_t s) {
  const int warps = std::min(a.num_q_heads + a.num_kv_heads, 32);
  launch("qk_norm_rope_store", qk_norm_rope_store_kernel<P, W, B, C>, a.tokens, warps * 32, 0, s,
         static_cast<const bf16*>(a.qkv), static_cast<const bf16*>(a.rms.rows), a.rms.hidden, a.rms.eps,
         static_cast<const B*>(a.qkv_bias), static_cast<const W*>(a.q_norm_w), static_cast<const W*>(a.k_norm_w),
         a.positions, a.cos_sin, a.eps, a.num_q_heads, a.num_kv_heads, a.slot_mapping, static_cast<C*>(a.k_cache),
         static_cast<C*>(a.v_cache), a.k_scale, a.v_scale, static_cast<bf16*>(a.q_out));
}

template <int P, class W, class B>
void launch_pwb(const RopeStoreArgs& a, cudaStream_t s) {
  if (a.cache_t == DType::bf16) launch_pwbc<P, W, B, bf16>(a, s);
  else if (a.cache_t == DType::f8e4m3) launch_pwbc<P, W, B, e4m3>(a, s);
  else if (a.cache_t == DType::f8e5m2) launch_pwbc<P, W, B, e5m2>(a, s);
  else
    throw std::invalid_argument(std::string("qk_norm_rope_store: the KV cache must be BF16, F8_E4M3 or F8_E5M2, got ") +
                                dtype_name(a.cache_t));
}

// Weights and bias of one dtype each (bf16 or f32); without a bias or norm weights the dtype is
// immaterial and the bf16 instantiation runs.
template <int P, class W>
void launch_pw(const RopeStoreArgs& a, cudaStream_t s) {
  if (!a.qkv_bias || a.bias_t == DType::bf16) launch_pwb<P, W, bf16>(a, s);
  else if (a.bias_t == DType::f32) launch_pwb<P, W, float>(a, s);
  else
    throw std::invalid_argument(std::string("qk_norm_rope_store: qkv_bias must be BF16 or F32, got ") +
                                dtype_name(a.bias_t));
}

template <int P>
void launch_p(const RopeStoreArgs& a, cudaStream_t s) {
  if (!a.q_norm_w || a.wt == DType::bf16) launch_pw<P, bf16>(a, s);
  else if (a.wt == DType::f32) launch_pw<P, float>(a, s);
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
