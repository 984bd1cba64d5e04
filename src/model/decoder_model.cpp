// Qwen3Model: loads a Qwen3 checkpoint onto a backend (packing q/k/v and gate/up) and runs
// nano-vLLM's Qwen3 forward over the backend's ops, with every activation allocated up front.
#include "model/qwen3.h"

#include <cmath>

#include "backend/half.h"
#include <stdexcept>
#include <string>

namespace nanovllm {
namespace {

// The rotary table, as HF and nano-vLLM compute it in float32: inv_freq = 1 / theta^(2i/D),
// angle = position * inv_freq; row p holds cos(angle) for i < D/2, then sin(angle).
std::vector<float> rope_table(int max_pos, int D, double theta) {
  const int half = D / 2;
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i)
    inv_freq[i] = 1.0f / std::pow(static_cast<float>(theta), static_cast<float>(2 * i) / static_cast<float>(D));
  std::vector<float> table(static_cast<size_t>(max_pos) * D);
  for (int p = 0; p < max_pos; ++p) {
    for (int i = 0; i < half; ++i) {
      const float angle = static_cast<float>(p) * inv_freq[i];
      table[static_cast<size_t>(p) * D + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      table[static_cast<size_t>(p) * D + half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
  return table;
}

void check_weight_dtype(const std::string& name, const Tensor& t) {
  if (t.dtype != DType::f32 && t.dtype != DType::bf16 && t.dtype != DType::f16)
    throw std::runtime_error("tensor '" + name + "' has dtype " + dtype_name(t.dtype) +
                             "; weights must be F32, BF16 or F16");
}

}  // namespace

Qwen3Model::Qwen3Model(const ModelConfig& config, const Checkpoint& ckpt, Backend& backend, int max_num_tokens,
                       int max_num_seqs)
    : config_(config), backend_(backend) {
  const ModelConfig& c = config_;
  if (max_num_tokens < 1 || max_num_seqs < 1)
    throw std::invalid_argument("Qwen3Model: max_num_tokens (" + std::to_string(max_num_tokens) + ") and max_num_seqs (" +
                                std::to_string(max_num_seqs) + ") must be >= 1");
  if (c.num_hidden_layers < 1 || c.head_dim % 2 || c.num_key_value_heads < 1 ||
      c.num_attention_heads % c.num_key_value_heads)
    throw std::invalid_argument("Qwen3Model: inconsistent config (layers " + std::to_string(c.num_hidden_layers) +
                                ", heads " + std::to_string(c.num_attention_heads) + "/" +
                                std::to_string(c.num_key_value_heads) + ", head_dim " + std::to_string(c.head_dim) + ")");
  const DType dt = backend.compute_dtype();
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size, D = c.head_dim;
  const int64_t Hq = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const int64_t qkv_rows = (Hq + 2 * Hkv) * D;

  // Uploads checkpoint tensors (checked against their expected shapes) into `dst` rows [row, row + n).
  auto upload = [&](const std::string& name, std::initializer_list<int64_t> shape, Tensor dst, int64_t row) {
    Tensor src = ckpt.get(name, shape);
    check_weight_dtype(name, src);
    Tensor part = dst.rows(row, row + src.shape[0]);
    if (src.ndim == 1) part = dst;
    backend.upload_convert(src, part);
  };
  auto weight = [&](std::initializer_list<int64_t> shape) {
    Tensor t = backend.alloc_tensor(dt, shape, buffers_);
    weight_bytes_ += t.nbytes();
    return t;
  };

  // The decoder's norms are folded into the projections after them (forward()) only where no
  // weight is rounded twice: on a float32 backend, or from float32/float16 weights, multiplied
  // in float32 and rounded once. A bf16 checkpoint on the bf16 CUDA backend keeps its weights
  // exact and runs the norms as kernels: there, round(W * gamma) measured 1-10% more logit error
  // than unfolded, and more than transformers' own bf16 at long prompts (docs/cuda.md, numerics).
  const DType ckpt_dtype = ckpt.get("model.layers.0.self_attn.q_proj.weight", {Hq * D, H}).dtype;
  fold_norms_ = dt == DType::f32 || ckpt_dtype == DType::f32 || ckpt_dtype == DType::f16;

  embed_tokens_ = weight({V, H});
  upload("model.embed_tokens.weight", {V, H}, embed_tokens_, 0);
  layers_.resize(c.num_hidden_layers);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    Layer& L = layers_[l];
    L.qkv_proj = weight({qkv_rows, H});
    upload_projection(ckpt, {{p + "self_attn.q_proj.weight", Hq * D}, {p + "self_attn.k_proj.weight", Hkv * D},
                             {p + "self_attn.v_proj.weight", Hkv * D}},
                      p + "input_layernorm.weight", L.qkv_proj);
    for (const char* b : {"q_proj.bias", "k_proj.bias", "v_proj.bias", "o_proj.bias"})
      if (ckpt.contains(p + "self_attn." + b))
        throw std::runtime_error("checkpoint has tensor '" + p + "self_attn." + b +
                                 "', but Qwen3 attention has no bias (attention_bias must be false)");
    L.q_norm = weight({D});
    upload(p + "self_attn.q_norm.weight", {D}, L.q_norm, 0);
    L.k_norm = weight({D});
    upload(p + "self_attn.k_norm.weight", {D}, L.k_norm, 0);
    L.o_proj = weight({H, Hq * D});
    upload(p + "self_attn.o_proj.weight", {H, Hq * D}, L.o_proj, 0);
    L.gate_up_proj = weight({2 * I, H});
    upload_projection(ckpt, {{p + "mlp.gate_proj.weight", I}, {p + "mlp.up_proj.weight", I}},
                      p + "post_attention_layernorm.weight", L.gate_up_proj);
    if (!fold_norms_) {
      L.input_norm = weight({H});
      upload(p + "input_layernorm.weight", {H}, L.input_norm, 0);
      L.post_attention_norm = weight({H});
      upload(p + "post_attention_layernorm.weight", {H}, L.post_attention_norm, 0);
    }
    L.down_proj = weight({H, I});
    upload(p + "mlp.down_proj.weight", {H, I}, L.down_proj, 0);
  }
  final_norm_ = weight({H});
  upload("model.norm.weight", {H}, final_norm_, 0);
  if (c.tie_word_embeddings) {
    lm_head_ = embed_tokens_;  // a lm_head.weight in the checkpoint is a copy; HF ignores it too
  } else {
    if (!ckpt.contains("lm_head.weight"))
      throw std::runtime_error("checkpoint has no tensor 'lm_head.weight' and config.json says tie_word_embeddings = false");
    lm_head_ = weight({V, H});
    upload("lm_head.weight", {V, H}, lm_head_, 0);
  }
  backend.synchronize();

  allocate_activations(max_num_tokens, max_num_seqs);
}

void Qwen3Model::upload_projection(const Checkpoint& ckpt, const std::vector<std::pair<std::string, int64_t>>& parts,
                                   const std::string& gamma_name, Tensor dst) {
  const int64_t K = dst.size(1);
  // On a float32 backend the product is exact enough in place: scale_columns after the upload
  // (threaded, no start-up cost). Into bf16 it is formed on the host in float32 and rounded once.
  const bool on_host = fold_norms_ && dst.dtype != DType::f32;
  std::vector<float> gamma, folded;
  if (on_host) {
    const Tensor g = ckpt.get(gamma_name, {K});
    gamma.resize(static_cast<size_t>(K));
    for (int64_t k = 0; k < K; ++k) gamma[k] = load_as_f32(g.data, g.dtype, k);
  }
  int64_t row = 0;
  for (const auto& [name, rows] : parts) {
    Tensor src = ckpt.get(name, {rows, K});
    check_weight_dtype(name, src);
    Tensor part = dst.rows(row, row + rows);
    row += rows;
    if (!on_host) {
      backend_.upload_convert(src, part);
      continue;
    }
    folded.resize(static_cast<size_t>(rows * K));
    for (int64_t i = 0; i < rows * K; ++i) folded[i] = load_as_f32(src.data, src.dtype, i) * gamma[i % K];
    backend_.upload_convert(Tensor(folded.data(), DType::f32, {rows, K}), part);
  }
  if (fold_norms_ && !on_host) {
    std::vector<DeviceBuffer> tmp;
    Tensor g = backend_.alloc_tensor(DType::f32, {K}, tmp);
    backend_.upload_convert(ckpt.get(gamma_name, {K}), g);
    backend_.scale_columns(dst, g);
    backend_.synchronize();  // before `tmp` frees the norm weight
  }
}

void Qwen3Model::allocate_activations(int64_t max_num_tokens, int64_t max_num_seqs) {
  const ModelConfig& c = config_;
  const DType dt = backend_.compute_dtype();
  const int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  const int64_t Hq = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const std::vector<float> table = rope_table(c.max_position_embeddings, c.head_dim, c.rope_theta);
  cos_sin_ = backend_.alloc_tensor(DType::f32, {c.max_position_embeddings, D}, buffers_);
  backend_.copy_to_device(cos_sin_.data, table.data(), table.size() * sizeof(float));

  const int64_t T = max_num_tokens;
  residual_ = backend_.alloc_tensor(dt, {T, H}, buffers_);
  normed_ = backend_.alloc_tensor(dt, {T, H}, buffers_);
  qkv_ = backend_.alloc_tensor(dt, {T, (Hq + 2 * Hkv) * D}, buffers_);
  q_ = backend_.alloc_tensor(dt, {T, Hq, D}, buffers_);
  attn_out_ = backend_.alloc_tensor(dt, {T, Hq, D}, buffers_);
  gate_up_ = backend_.alloc_tensor(dt, {T, 2 * I}, buffers_);
  act_ = backend_.alloc_tensor(dt, {T, I}, buffers_);
  last_hidden_ = backend_.alloc_tensor(dt, {max_num_seqs, H}, buffers_);
}

void Qwen3Model::forward(const ForwardInputs& in, KVCache& kv, Tensor& logits) {
  const ModelConfig& c = config_;
  const int64_t T = in.input_ids.numel(), B = in.last_token_indices.numel();
  if (T < 1 || T > residual_.size(0))
    throw std::invalid_argument("Qwen3Model::forward: " + std::to_string(T) + " tokens, the model was built for 1.." +
                                std::to_string(residual_.size(0)));
  if (B < 1 || B > last_hidden_.size(0))
    throw std::invalid_argument("Qwen3Model::forward: " + std::to_string(B) + " logits rows, the model was built for 1.." +
                                std::to_string(last_hidden_.size(0)));
  if (static_cast<int>(kv.k.size()) != c.num_hidden_layers || kv.v.size() != kv.k.size())
    throw std::invalid_argument("Qwen3Model::forward: the KV cache has " + std::to_string(kv.k.size()) +
                                " layers, the model " + std::to_string(c.num_hidden_layers));
  const int Hq = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const float eps = c.rms_norm_eps;

  Tensor residual = residual_.rows(0, T), normed = normed_.rows(0, T);
  Tensor qkv = qkv_.rows(0, T), q = q_.rows(0, T), attn_out = attn_out_.rows(0, T);
  Tensor attn_flat = attn_out.view({T, static_cast<int64_t>(Hq) * c.head_dim});
  Tensor gate_up = gate_up_.rows(0, T), act = act_.rows(0, T), last = last_hidden_.rows(0, B);

  // The decoder's two norms a layer, when folded (FoldedNorm; see the constructor for when):
  // their weights were multiplied into the columns of the qkv and gate/up projections at load, so
  // those read the residual stream as it is, and the op after each (RoPE, SiLU) scales its rows by
  // the norm's 1/rms. Unfolded, each norm goes with its projection (norm_linear: one kernel at
  // decode batch <= 8). Either way the o and down projections add into the residual stream
  // themselves: in a decode step each small kernel costs a few microseconds of dependency latency,
  // whatever its size.
  const FoldedNorm folded = fold_norms_ ? FoldedNorm{&residual, eps} : FoldedNorm{};
  auto project = [&](const Tensor& norm_w, const Tensor& w, Tensor& out) {
    if (fold_norms_) backend_.linear(residual, w, out);
    else backend_.norm_linear(residual, norm_w, eps, w, out, normed);
  };
  backend_.embedding(in.input_ids, embed_tokens_, residual);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    Layer& L = layers_[l];
    project(L.input_norm, L.qkv_proj, qkv);
    const PagedKV cache = kv.layer(l);
    backend_.qk_norm_rope_store({.qkv = qkv, .folded = folded, .q_norm_w = L.q_norm, .k_norm_w = L.k_norm,
                                 .positions = in.positions, .cos_sin = cos_sin_, .eps = eps, .num_q_heads = Hq,
                                 .num_kv_heads = Hkv, .slot_mapping = in.meta.slot_mapping},
                                cache, q);
    backend_.attention(q, cache, in.meta, scale, attn_out);
    backend_.linear_add(attn_flat, L.o_proj, residual);
    project(L.post_attention_norm, L.gate_up_proj, gate_up);
    backend_.silu_mul(gate_up, folded, act);
    backend_.linear_add(act, L.down_proj, residual);
  }
  backend_.rms_norm(residual, final_norm_, eps, normed);
  if (!in.meta.is_prefill && B == T) {  // decode: every row is a sequence's last token
    backend_.linear(normed, lm_head_, logits);
    return;
  }
  backend_.gather_rows(normed, in.last_token_indices, last);
  backend_.linear(last, lm_head_, logits);
}

void Qwen3Model::logits_of(const Tensor& token_rows, Tensor& logits) {
  const int64_t R = token_rows.numel();
  if (R < 1 || R > last_hidden_.size(0))
    throw std::invalid_argument("Qwen3Model::logits_of: " + std::to_string(R) + " rows, the model was built for 1.." +
                                std::to_string(last_hidden_.size(0)));
  Tensor last = last_hidden_.rows(0, R);
  backend_.gather_rows(normed_, token_rows, last);
  backend_.linear(last, lm_head_, logits);
}

}  // namespace nanovllm
