// DecoderModel: loads a checkpoint of any supported family onto a backend (packing q/k/v and
// gate/up) and runs the forward over the backend's ops, with every activation allocated up front.
#include "model/decoder_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/fp8_host.h"
#include "backend/half.h"
#include "model/fp8_weights.h"
#include "model/rope.h"

namespace nanovllm {
namespace {

void check_weight_dtype(const std::string& name, const Tensor& t) {
  if (t.dtype != DType::f32 && t.dtype != DType::bf16 && t.dtype != DType::f16)
    throw std::runtime_error("tensor '" + name + "' has dtype " + dtype_name(t.dtype) +
                             "; weights must be F32, BF16 or F16");
}

bool same_rope(const RopeConfig& a, const RopeConfig& b) {
  return a.type == b.type && a.theta == b.theta && a.factor == b.factor && a.low_freq_factor == b.low_freq_factor &&
         a.high_freq_factor == b.high_freq_factor &&
         a.original_max_position_embeddings == b.original_max_position_embeddings && a.beta_fast == b.beta_fast &&
         a.beta_slow == b.beta_slow && a.attention_factor == b.attention_factor && a.mscale == b.mscale &&
         a.mscale_all_dim == b.mscale_all_dim && a.truncate == b.truncate;
}

// A value as the checkpoint's dtype holds it (Gemma's embedding scale is cast to the weights'
// dtype in transformers before it multiplies).
float round_to(float v, DType t) {
  if (t == DType::bf16) return bf16_to_f32(f32_to_bf16(v));
  if (t == DType::f16) return f16_to_f32(f32_to_f16(v));
  return v;
}

}  // namespace

ShardDims shard_dims(const ModelConfig& c, ModelShard shard) {
  const int64_t N = shard.world, r = shard.rank;
  if (N < 1 || r < 0 || r >= N)
    throw std::invalid_argument("tensor parallelism: rank " + std::to_string(r) + " of " + std::to_string(N));
  auto divides = [&](const char* field, int64_t v) {
    if (v % N)
      throw std::invalid_argument("tensor_parallel_size " + std::to_string(N) + " does not divide config.json's " +
                                  field + " (" + std::to_string(v) + ")");
  };
  divides("num_attention_heads", c.num_attention_heads);
  divides("intermediate_size", c.intermediate_size);
  ShardDims d{};
  d.q_heads = c.num_attention_heads / N;
  d.first_q_head = r * d.q_heads;
  const int64_t Hkv = c.num_key_value_heads;
  if (Hkv % N == 0) {
    d.kv_heads = Hkv / N;
    d.first_kv_head = r * d.kv_heads;
  } else if (N % Hkv == 0) {  // more ranks than kv heads: each holds the one its query heads read
    d.kv_heads = 1;
    d.first_kv_head = r / (N / Hkv);
  } else {
    throw std::invalid_argument("tensor_parallel_size " + std::to_string(N) + " and config.json's num_key_value_heads (" +
                                std::to_string(Hkv) + "): one must divide the other");
  }
  d.intermediate = c.intermediate_size / N;
  d.first_intermediate = r * d.intermediate;
  d.vocab_rows = (c.vocab_size + N - 1) / N;
  d.vocab_start = r * d.vocab_rows;
  d.vocab_real = std::max<int64_t>(0, std::min<int64_t>(d.vocab_rows, c.vocab_size - d.vocab_start));
  return d;
}

DecoderModel::DecoderModel(const ModelConfig& config, const Checkpoint& ckpt, Backend& backend, int max_num_tokens,
                           int max_num_seqs, ModelShard shard)
    : config_(config), backend_(backend), shard_(shard), dims_(shard_dims(config, shard)) {
  const ModelConfig& c = config_;
  if (max_num_tokens < 1 || max_num_seqs < 1)
    throw std::invalid_argument("DecoderModel: max_num_tokens (" + std::to_string(max_num_tokens) +
                                ") and max_num_seqs (" + std::to_string(max_num_seqs) + ") must be >= 1");
  if (c.num_hidden_layers < 1 || c.head_dim % 2 || c.num_key_value_heads < 1 ||
      c.num_attention_heads % c.num_key_value_heads ||
      static_cast<int>(c.layer_sliding.size()) != c.num_hidden_layers)
    throw std::invalid_argument("DecoderModel: inconsistent config (layers " + std::to_string(c.num_hidden_layers) +
                                ", heads " + std::to_string(c.num_attention_heads) + "/" +
                                std::to_string(c.num_key_value_heads) + ", head_dim " + std::to_string(c.head_dim) +
                                ")");
  const int64_t H = c.hidden_size;

  // Weight matrices are kept in the backend's weight dtype for this checkpoint: the compute
  // dtype on CUDA (bf16); on the CPU the checkpoint's own (f32, bf16, f16; used in place from
  // the mapped file where the layout allows) or int8 (--quantization int8).
  // The decoder's norms are folded into the projections after them (forward()) only where no
  // weight is rounded twice: weights kept in f32, or rounded from the checkpoint anyway (f32/f16
  // into CUDA's bf16, anything into int8), the product formed in float32 and rounded once. Half
  // weights kept as the checkpoint has them stay exact and run the norms as ops: there, round(W *
  // gamma) measured 1-10% more logit error than unfolded on CUDA, and more than transformers' own
  // bf16 at long prompts (docs/cuda.md, numerics); on the CPU folding would also cost the copy.
  // An MLP bias would be scaled by the folded norm's factor with the rest: no fold then.
  // An FP8 checkpoint (config.json's quantization_config): its matrices stay FP8 with their
  // scales where the backend's GEMMs take them (takes_scaled_weight), else they are dequantized at
  // load into the dtype of the checkpoint's other tensors (bf16 for Qwen3-FP8), as transformers
  // dequantizes them: q * scale in float32, rounded once. Its "checkpoint dtype" is that one.
  // FP8 matrices are never folded into (that would quantize them again).
  // --quantization fp8 (Backend::quantizes_fp8) quantizes a float checkpoint's projections per
  // output channel (norms folded in first, in float32, so each weight is rounded once); the CPU
  // keeps them dequantized back in f32.
  const Tensor q0 = ckpt.get("model.layers.0.self_attn.q_proj.weight");
  fp8_checkpoint_ = c.quant.quantized();
  if (is_fp8(q0.dtype) && !fp8_checkpoint_)
    throw std::runtime_error("tensor 'model.layers.0.self_attn.q_proj.weight' is " + std::string(dtype_name(q0.dtype)) +
                             ", but config.json has no quantization_config");
  const DType ckpt_dtype = fp8_checkpoint_ ? ckpt.get("model.embed_tokens.weight").dtype : q0.dtype;
  check_weight_dtype("model.embed_tokens.weight", ckpt.get("model.embed_tokens.weight"));
  checkpoint_dtype_ = ckpt_dtype;
  if (fp8_checkpoint_) {
    weight_dtype_ = backend.takes_scaled_weight(c.quant.weight_dtype) ? c.quant.weight_dtype
                    : backend.quantizes_fp8()                       ? ckpt_dtype
                                                                    : backend.weight_dtype(ckpt_dtype);
  } else {
    weight_dtype_ = backend.weight_dtype(ckpt_dtype);
    fp8_round_trip_ = backend.quantizes_fp8() && !is_fp8(weight_dtype_);
  }
  fold_norms_ = !is_fp8(weight_dtype_) && (weight_dtype_ == DType::f32 || weight_dtype_ != ckpt_dtype) && !c.mlp_bias;
  if (c.embedding_scaled) embed_scale_ = round_to(std::sqrt(static_cast<float>(H)), ckpt_dtype);
  const float scale = 1.0f / std::sqrt(c.query_pre_attn_scalar > 0 ? static_cast<float>(c.query_pre_attn_scalar)
                                                                   : static_cast<float>(c.head_dim));
  attn_full_ = AttentionOptions{.scale = scale, .window = 0, .softcap = c.attn_logit_softcapping};
  attn_sliding_ = AttentionOptions{.scale = scale, .window = c.sliding_window, .softcap = c.attn_logit_softcapping};

  // The embedding reads a few rows a step: where the checkpoint can serve in place it is read
  // there exactly as it is (not quantized with the matrices; its untouched rows take no memory).
  // Under tensor parallelism a rank holds its shard of the vocabulary's rows (vocab_rows()).
  // FP8 weights (either way) leave the embedding and the lm-head unquantized, as vLLM does.
  const bool fp8 = is_fp8(weight_dtype_) || fp8_checkpoint_ || fp8_round_trip_;
  const DType float_dtype = backend.weights_in_place() ? ckpt_dtype : backend.compute_dtype();
  const DType table_dtype = backend.weights_in_place() ? ckpt_dtype : fp8 ? float_dtype : weight_dtype_;
  const DType head_dtype = fp8 && !(fp8_checkpoint_ && weight_dtype_ == DType::i8) ? float_dtype : weight_dtype_;
  embed_tokens_ = vocab_rows(ckpt, "model.embed_tokens.weight", table_dtype);
  layers_.resize(c.num_hidden_layers);
  for (int l = 0; l < c.num_hidden_layers; ++l) load_layer(ckpt, l, layers_[l]);
  final_norm_ = norm_weight(ckpt, "model.norm.weight", H);
  if (c.tie_word_embeddings) {
    // A lm_head.weight in the checkpoint is a copy; HF ignores it too. Under int8 the lm-head
    // is the embedding quantized.
    lm_head_ = table_dtype == head_dtype ? embed_tokens_ : vocab_rows(ckpt, "model.embed_tokens.weight", head_dtype);
  } else {
    if (!ckpt.contains("lm_head.weight"))
      throw std::runtime_error("checkpoint has no tensor 'lm_head.weight' and config.json says tie_word_embeddings = false");
    lm_head_ = vocab_rows(ckpt, "lm_head.weight", head_dtype);
  }
  backend.synchronize();
  allocate_activations(max_num_tokens, max_num_seqs);
}

Tensor DecoderModel::norm_weight(const Checkpoint& ckpt, const std::string& name, int64_t n) {
  const Tensor src = ckpt.get(name, {n});
  check_weight_dtype(name, src);
  if (!config_.norm_plus_one) {
    Tensor dst = backend_.alloc_tensor(backend_.compute_dtype(), {n}, buffers_);
    weight_bytes_ += dst.nbytes();
    backend_.upload_convert(src, dst);
    return dst;
  }
  std::vector<float> w(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) w[i] = 1.0f + load_as_f32(src.data, src.dtype, i);
  Tensor dst = backend_.alloc_tensor(DType::f32, {n}, buffers_);
  weight_bytes_ += dst.nbytes();
  backend_.upload_convert(Tensor(w.data(), DType::f32, {n}), dst);
  backend_.synchronize();  // before `w` goes
  return dst;
}

void DecoderModel::load_layer(const Checkpoint& ckpt, int l, Layer& L) {
  const ModelConfig& c = config_;
  const ShardDims& d = dims_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  const int64_t Hq = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const bool first_rank = shard_.rank == 0;
  const std::string p = "model.layers." + std::to_string(l) + ".";
  // Gemma names its pre-MLP norm pre_feedforward_layernorm, and post_attention_layernorm is the
  // norm of the attention's output; the other families' post_attention_layernorm is pre-MLP.
  const std::string mlp_norm_name = p + (c.sandwich_norms ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight");
  // Biases in the compute dtype, as the ops that add them take them.
  auto weight = [&](std::initializer_list<int64_t> shape) {
    Tensor t = backend_.alloc_tensor(backend_.compute_dtype(), shape, buffers_);
    weight_bytes_ += t.nbytes();
    return t;
  };
  // This shard's rows of q, k and v (whole heads), and of gate and up.
  const std::vector<Part> qkv_parts = {{p + "self_attn.q_proj", Hq * D, d.first_q_head * D, d.q_heads * D},
                                       {p + "self_attn.k_proj", Hkv * D, d.first_kv_head * D, d.kv_heads * D},
                                       {p + "self_attn.v_proj", Hkv * D, d.first_kv_head * D, d.kv_heads * D}};
  const std::vector<Part> gate_up_parts = {{p + "mlp.gate_proj", I, d.first_intermediate, d.intermediate},
                                           {p + "mlp.up_proj", I, d.first_intermediate, d.intermediate}};
  auto with_suffix = [](std::vector<Part> parts, const char* suffix) {
    for (Part& part : parts) part.name += suffix;
    return parts;
  };
  // Biases the family has, packed like their projections; a bias the config does not announce
  // is an error rather than silently dropped.
  auto bias = [&](const std::vector<Part>& parts, bool expected, const char* field) {
    if (!expected) {
      for (const Part& part : parts)
        if (ckpt.contains(part.name))
          throw std::runtime_error("checkpoint has tensor '" + part.name + "', but config.json's " + field +
                                   " says the layer has no bias");
      return Tensor();
    }
    int64_t total = 0;
    for (const Part& part : parts) total += part.rows;
    Tensor b = weight({total});
    int64_t row = 0;
    for (const Part& part : parts) {
      Tensor src = ckpt.get(part.name, {part.total});
      check_weight_dtype(part.name, src);
      Tensor dst = b.rows(row, row + part.rows);
      backend_.upload_convert(src.rows(part.first, part.first + part.rows), dst);
      row += part.rows;
    }
    return b;
  };
  L.sliding = c.layer_sliding[l];
  L.qkv_proj = projection(ckpt, with_suffix(qkv_parts, ".weight"), H, p + "input_layernorm.weight", weight_dtype_, true);
  L.qkv_bias = bias(with_suffix(qkv_parts, ".bias"), c.qkv_bias, "attention_bias");
  // The row-parallel projections' biases join once: rank 0 adds them before the all-reduce.
  L.o_bias = bias({{p + "self_attn.o_proj.bias", H, 0, H}}, c.o_bias, "attention_bias");
  if (c.qk_norm) {
    L.q_norm = norm_weight(ckpt, p + "self_attn.q_norm.weight", D);
    L.k_norm = norm_weight(ckpt, p + "self_attn.k_norm.weight", D);
  }
  L.o_proj = columns(ckpt, p + "self_attn.o_proj.weight", H, Hq * D, d.first_q_head * D, d.q_heads * D);
  L.gate_up_proj = projection(ckpt, with_suffix(gate_up_parts, ".weight"), H, mlp_norm_name, weight_dtype_, true);
  L.gate_up_bias = bias(with_suffix(gate_up_parts, ".bias"), c.mlp_bias, "mlp_bias");
  L.down_bias = bias({{p + "mlp.down_proj.bias", H, 0, H}}, c.mlp_bias, "mlp_bias");
  if (!first_rank && !c.sandwich_norms) L.o_bias = L.down_bias = Tensor();  // see forward()
  if (!fold_norms_) {
    L.input_norm = norm_weight(ckpt, p + "input_layernorm.weight", H);
    L.mlp_norm = norm_weight(ckpt, mlp_norm_name, H);
  }
  if (c.sandwich_norms) {
    L.attn_out_norm = norm_weight(ckpt, p + "post_attention_layernorm.weight", H);
    L.mlp_out_norm = norm_weight(ckpt, p + "post_feedforward_layernorm.weight", H);
  }
  L.down_proj = columns(ckpt, p + "mlp.down_proj.weight", H, I, d.first_intermediate, d.intermediate);
}

Tensor DecoderModel::alloc_weight(DType dtype, int64_t rows, int64_t cols) {
  if (is_fp8(dtype)) {  // quantized from float rows: one scale per row
    Tensor t = backend_.alloc_scaled_weight(dtype, rows, cols, 1, static_cast<int32_t>(cols), buffers_);
    weight_bytes_ += buffers_.back().bytes();
    return t;
  }
  Tensor t = backend_.alloc_tensor(dtype, {rows, dtype == DType::i8 ? cols + kI8RowTail : cols}, buffers_);
  weight_bytes_ += t.nbytes();
  return t;
}

bool DecoderModel::is_fp8_matrix(const Checkpoint& ckpt, const std::string& name) const {
  return fp8_checkpoint_ && is_fp8(ckpt.get(name).dtype);
}

Tensor DecoderModel::upload_fp8(const Checkpoint& ckpt, HostFp8 host, const std::string& gamma_name) {
  Tensor src = host.tensor();
  if (is_fp8(weight_dtype_)) {  // kept FP8, its scale blocks as packed
    Tensor dst = backend_.alloc_scaled_weight(weight_dtype_, host.rows, host.cols, host.block[0], host.block[1], buffers_);
    weight_bytes_ += buffers_.back().bytes();
    backend_.upload_convert(src, dst);
    return dst;
  }
  Tensor dst = alloc_weight(weight_dtype_, host.rows, host.cols);
  const bool fold = fold_norms_ && !gamma_name.empty();
  if (dst.dtype != DType::i8 && (!fold || dst.dtype == DType::f32)) {
    backend_.upload_convert(src, dst);  // dequantized: q * scale in float32, rounded to dst once
    if (fold) scale_by_norm(ckpt, gamma_name, host.cols, dst);  // f32: as an f32 checkpoint folds
    backend_.synchronize();  // before `host` goes
    return dst;
  }
  // Into int8: the dequantized weight (times the folded norm) in float32, rounded once.
  std::vector<float> w(static_cast<size_t>(host.rows * host.cols));
  dequantize_fp8_rows(src, 0, host.rows, w.data(), DType::f32);
  if (fold) {
    const std::vector<float> gamma = norm_factors(ckpt, gamma_name, host.cols);
    for (size_t i = 0; i < w.size(); ++i) w[i] *= gamma[i % host.cols];
  }
  backend_.upload_convert(Tensor(w.data(), DType::f32, {host.rows, host.cols}), dst);
  backend_.synchronize();  // before `w` goes
  return dst;
}

Tensor DecoderModel::projection(const Checkpoint& ckpt, const std::vector<Part>& parts, int64_t K,
                                const std::string& gamma_name, DType dtype, bool quantizable) {
  if (is_fp8_matrix(ckpt, parts.front().name)) {
    std::vector<HostFp8> mats;
    mats.reserve(parts.size());
    std::vector<Fp8Part> fp8_parts;
    for (const Part& p : parts) {
      if (!quantizable)
        throw std::runtime_error("tensor '" + p.name + "' is " + dtype_name(ckpt.get(p.name).dtype) +
                                 ": nanovllm keeps the embedding and the lm-head unquantized (list it in the "
                                 "quantization_config's ignore list when converting)");
      mats.push_back(load_fp8_matrix(ckpt, config_.quant, p.name, p.total, K));
      fp8_parts.push_back({&mats.back(), p.first, p.rows, p.name});
    }
    Tensor w = upload_fp8(ckpt, pack_fp8_rows(fp8_parts), gamma_name);
    if (backend_.weights_in_place())  // copied: the file's pages leave this process
      for (const Part& p : parts) ckpt.drop_pages(ckpt.get(p.name));
    return w;
  }
  // A float matrix of an FP8 checkpoint (one it leaves unconverted) is kept as floats.
  if (fp8_checkpoint_ && is_fp8(dtype)) dtype = backend_.compute_dtype();
  const bool round_trip = quantizable && fp8_round_trip_;
  int64_t N = 0;
  std::vector<Tensor> srcs;
  for (const Part& p : parts) {
    Tensor src = ckpt.get(p.name, {p.total, K});
    check_weight_dtype(p.name, src);
    srcs.push_back(src.rows(p.first, p.first + p.rows));
    N += p.rows;
  }
  // In place: the checkpoint's bytes as they lie, when nothing is folded into them, their dtype
  // is the one kept, and the parts follow one another in the file (gate_proj then up_proj do in
  // Hugging Face's files, which order tensors by name; q, k, v do not; nor do two ranks' shards).
  bool in_place = backend_.weights_in_place() && (gamma_name.empty() || !fold_norms_) && !round_trip;
  for (size_t i = 0; in_place && i < srcs.size(); ++i)
    in_place = srcs[i].dtype == dtype &&
               (i == 0 || static_cast<const char*>(srcs[i - 1].data) + srcs[i - 1].nbytes() == srcs[i].data);
  if (in_place) {
    Tensor w(srcs[0].data, dtype, {N, K}, backend_.device());
    weight_bytes_ += w.nbytes();
    mapped_bytes_ += w.nbytes();
    return w;
  }
  Tensor dst = alloc_weight(dtype, N, K);
  upload_projection(ckpt, parts, gamma_name, dst, round_trip);
  // The copied tensors' pages leave this process (the file stays mapped for the in-place ones).
  if (backend_.weights_in_place())
    for (const Tensor& src : srcs) ckpt.drop_pages(src);
  return dst;
}

Tensor DecoderModel::vocab_rows(const Checkpoint& ckpt, const std::string& name, DType dtype) {
  const ShardDims& d = dims_;
  const int64_t H = config_.hidden_size, V = config_.vocab_size;
  if (d.vocab_real == d.vocab_rows) return projection(ckpt, {{name, V, d.vocab_start, d.vocab_rows}}, H, "", dtype);
  Tensor dst = alloc_weight(dtype, d.vocab_rows, H);  // the last shard's padding rows are zeros
  backend_.fill_zero(dst.data, dst.nbytes());
  upload_projection(ckpt, {{name, V, d.vocab_start, d.vocab_real}}, "", dst.rows(0, d.vocab_real), false);
  return dst;
}

Tensor DecoderModel::columns(const Checkpoint& ckpt, const std::string& name, int64_t rows, int64_t total,
                             int64_t first, int64_t cols) {
  if (cols == total) return projection(ckpt, {{name, rows, 0, rows}}, total, "", weight_dtype_, true);
  if (is_fp8_matrix(ckpt, name)) {
    const HostFp8 m = load_fp8_matrix(ckpt, config_.quant, name, rows, total);
    Tensor w = upload_fp8(ckpt, fp8_columns(m, name, first, cols), "");
    if (backend_.weights_in_place()) ckpt.drop_pages(ckpt.get(name));
    return w;
  }
  Tensor dst = alloc_weight(fp8_checkpoint_ && is_fp8(weight_dtype_) ? backend_.compute_dtype() : weight_dtype_, rows, cols);
  upload_columns(ckpt, name, total, first, dst);
  return dst;
}

void DecoderModel::upload_columns(const Checkpoint& ckpt, const std::string& name, int64_t total, int64_t first,
                                  Tensor dst) {
  const int64_t rows = dst.size(0), cols = weight_cols(dst);
  Tensor src = ckpt.get(name, {rows, total});
  check_weight_dtype(name, src);
  if (cols == total) {
    backend_.upload_convert(src, dst);
    return;
  }
  // Only this shard's columns are read (of each row) and copied together for the upload.
  const size_t es = dtype_size(src.dtype);
  std::vector<char> part(static_cast<size_t>(rows * cols) * es);
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(part.data() + r * cols * es, static_cast<const char*>(src.data) + (r * total + first) * es, cols * es);
  upload_rows(Tensor(part.data(), src.dtype, {rows, cols}), dst, fp8_round_trip_);
  backend_.synchronize();  // before `part` goes
}

void DecoderModel::upload_rows(const Tensor& src, Tensor dst, bool round_trip) {
  if (!round_trip) {
    backend_.upload_convert(src, dst);
    return;
  }
  // --quantization fp8 where the backend keeps floats: quantized per row, dequantized back.
  const int64_t R = rows_of(src), K = cols_of(src);
  std::vector<float> w(static_cast<size_t>(R * K));
  for (int64_t i = 0; i < R * K; ++i) w[i] = load_as_f32(src.data, src.dtype, i);
  HostFp8 q = quantize_fp8_rows(w.data(), R, K);
  backend_.upload_convert(q.tensor(), dst);
  backend_.synchronize();  // before `q` goes
}

std::vector<float> DecoderModel::norm_factors(const Checkpoint& ckpt, const std::string& gamma_name, int64_t K) const {
  const Tensor g = ckpt.get(gamma_name, {K});
  const float offset = config_.norm_plus_one ? 1.0f : 0.0f;
  std::vector<float> gamma(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) gamma[k] = offset + load_as_f32(g.data, g.dtype, k);
  return gamma;
}

void DecoderModel::scale_by_norm(const Checkpoint& ckpt, const std::string& gamma_name, int64_t K, Tensor& dst) {
  const std::vector<float> gamma = norm_factors(ckpt, gamma_name, K);
  std::vector<DeviceBuffer> tmp;
  Tensor g = backend_.alloc_tensor(DType::f32, {K}, tmp);
  backend_.upload_convert(Tensor(const_cast<float*>(gamma.data()), DType::f32, {K}), g);
  backend_.scale_columns(dst, g);
  backend_.synchronize();  // before `tmp` frees the norm weight
}

void DecoderModel::upload_projection(const Checkpoint& ckpt, const std::vector<Part>& parts,
                                     const std::string& gamma_name, Tensor dst, bool round_trip) {
  const int64_t K = weight_cols(dst);
  const bool fold = fold_norms_ && !gamma_name.empty();
  // On a float32 backend the product is exact enough in place: scale_columns after the upload
  // (threaded, no start-up cost). Into bf16 (or int8, FP8) it is formed on the host in float32 and
  // rounded once; so it is under the FP8 round trip, whose weights are quantized after the fold.
  const bool on_host = fold && (dst.dtype != DType::f32 || round_trip);
  const float offset = config_.norm_plus_one ? 1.0f : 0.0f;
  std::vector<float> gamma, folded;
  if (fold) {
    const Tensor g = ckpt.get(gamma_name, {K});
    gamma.resize(static_cast<size_t>(K));
    for (int64_t k = 0; k < K; ++k) gamma[k] = offset + load_as_f32(g.data, g.dtype, k);
  }
  int64_t row = 0;
  for (const Part& p : parts) {
    const int64_t rows = p.rows;
    Tensor src = ckpt.get(p.name, {p.total, K});
    check_weight_dtype(p.name, src);
    src = src.rows(p.first, p.first + rows);
    Tensor part = dst.rows(row, row + rows);
    row += rows;
    if (!on_host) {
      upload_rows(src, part, round_trip);
      continue;
    }
    folded.resize(static_cast<size_t>(rows * K));
    for (int64_t i = 0; i < rows * K; ++i) folded[i] = load_as_f32(src.data, src.dtype, i) * gamma[i % K];
    upload_rows(Tensor(folded.data(), DType::f32, {rows, K}), part, round_trip);
  }
  if (fold && !on_host) {
    std::vector<DeviceBuffer> tmp;
    Tensor g = backend_.alloc_tensor(DType::f32, {K}, tmp);
    backend_.upload_convert(Tensor(gamma.data(), DType::f32, {K}), g);
    backend_.scale_columns(dst, g);
    backend_.synchronize();  // before `tmp` frees the norm weight
  }
}

void DecoderModel::allocate_activations(int64_t max_num_tokens, int64_t max_num_seqs) {
  const ModelConfig& c = config_;
  const DType dt = backend_.compute_dtype();
  const int64_t H = c.hidden_size, I = dims_.intermediate, D = c.head_dim;
  const int64_t Hq = dims_.q_heads, Hkv = dims_.kv_heads;
  auto table = [&](const RopeConfig& r) {
    const std::vector<float> t = rope_table(r, c.max_position_embeddings, c.head_dim, c.max_position_embeddings);
    Tensor d = backend_.alloc_tensor(DType::f32, {c.max_position_embeddings, D}, buffers_);
    backend_.copy_to_device(d.data, t.data(), t.size() * sizeof(float));
    backend_.synchronize();  // before `t` goes
    return d;
  };
  cos_sin_ = table(c.rope);
  cos_sin_sliding_ = c.any_sliding() && !same_rope(c.rope, c.rope_sliding) ? table(c.rope_sliding) : cos_sin_;

  const int64_t T = max_num_tokens;
  residual_ = backend_.alloc_tensor(dt, {T, H}, buffers_);
  normed_ = backend_.alloc_tensor(dt, {T, H}, buffers_);
  qkv_ = backend_.alloc_tensor(dt, {T, (Hq + 2 * Hkv) * D}, buffers_);
  q_ = backend_.alloc_tensor(dt, {T, Hq, D}, buffers_);
  attn_out_ = backend_.alloc_tensor(dt, {T, Hq, D}, buffers_);
  gate_up_ = backend_.alloc_tensor(dt, {T, 2 * I}, buffers_);
  act_ = backend_.alloc_tensor(dt, {T, I}, buffers_);
  if (c.sandwich_norms) sub_out_ = backend_.alloc_tensor(dt, {T, H}, buffers_);
  last_hidden_ = backend_.alloc_tensor(dt, {max_num_seqs, H}, buffers_);
  if (shard_.world > 1) {
    shard_logits_ = backend_.alloc_tensor(DType::f32, {max_num_seqs, dims_.vocab_rows}, buffers_);
    if (shard_.rank == 0)
      gathered_logits_ = backend_.alloc_tensor(DType::f32, {shard_.world * max_num_seqs, dims_.vocab_rows}, buffers_);
  }
}

void DecoderModel::lm_head(const Tensor& hidden, Tensor& logits) {
  const float cap = config_.final_logit_softcapping;
  if (shard_.world == 1) {
    backend_.linear(hidden, lm_head_, logits);
    if (cap > 0) backend_.softcap(logits, cap);
    return;
  }
  // Each rank's shard of the vocabulary, gathered to rank 0 and laid side by side there (vLLM
  // gathers too: top-k/top-p and the seeded draws need the whole row, and one sampler on rank 0
  // keeps the tokens what they are on one GPU).
  const int64_t R = hidden.size(0), Vs = dims_.vocab_rows, N = shard_.world;
  Tensor part = shard_logits_.rows(0, R);
  backend_.linear(hidden, lm_head_, part);
  if (cap > 0) backend_.softcap(part, cap);
  Tensor all = shard_.rank == 0 ? gathered_logits_.rows(0, N * R) : Tensor();
  backend_.gather(part, all);
  if (shard_.rank != 0) return;
  for (int64_t r = 0; r < N; ++r) {
    const int64_t width = std::min(Vs, config_.vocab_size - r * Vs);
    if (width > 0) backend_.copy_columns(all.rows(r * R, (r + 1) * R), 0, logits, r * Vs, width);
  }
}

void DecoderModel::forward(const ForwardInputs& in, KVCache& kv, Tensor& logits) {
  const ModelConfig& c = config_;
  const int64_t T = in.input_ids.numel(), B = in.last_token_indices.numel();
  if (T < 1 || T > residual_.size(0))
    throw std::invalid_argument("DecoderModel::forward: " + std::to_string(T) +
                                " tokens, the model was built for 1.." + std::to_string(residual_.size(0)));
  if (B < 1 || B > last_hidden_.size(0))
    throw std::invalid_argument("DecoderModel::forward: " + std::to_string(B) +
                                " logits rows, the model was built for 1.." + std::to_string(last_hidden_.size(0)));
  if (static_cast<int>(kv.k.size()) != c.num_hidden_layers || kv.v.size() != kv.k.size())
    throw std::invalid_argument("DecoderModel::forward: the KV cache has " + std::to_string(kv.k.size()) +
                                " layers, the model " + std::to_string(c.num_hidden_layers));
  const int Hq = static_cast<int>(dims_.q_heads), Hkv = static_cast<int>(dims_.kv_heads);
  const float eps = c.rms_norm_eps;
  const bool tp = shard_.world > 1;

  Tensor residual = residual_.rows(0, T), normed = normed_.rows(0, T);
  Tensor qkv = qkv_.rows(0, T), q = q_.rows(0, T), attn_out = attn_out_.rows(0, T);
  Tensor attn_flat = attn_out.view({T, static_cast<int64_t>(Hq) * c.head_dim});
  Tensor gate_up = gate_up_.rows(0, T), act = act_.rows(0, T), last = last_hidden_.rows(0, B);
  Tensor sub_out = c.sandwich_norms ? sub_out_.rows(0, T) : Tensor();

  // The decoder's two norms a layer, when folded (FoldedNorm; see the constructor for when):
  // their weights were multiplied into the columns of the qkv and gate/up projections at load, so
  // those read the residual stream as it is, and the op after each (RoPE, the MLP's activation)
  // scales its rows by the norm's 1/rms. Unfolded, each norm goes with its projection
  // (norm_linear: one kernel at decode batch <= 8). Without sandwich norms the o and down
  // projections add into the residual stream themselves: in a decode step each small kernel costs
  // a few microseconds of dependency latency, whatever its size.
  const FoldedNorm folded = fold_norms_ ? FoldedNorm{&residual, eps} : FoldedNorm{};
  auto project = [&](const Tensor& norm_w, const Tensor& w, Tensor& out) {
    if (fold_norms_) backend_.linear(residual, w, out);
    else backend_.norm_linear(residual, norm_w, eps, w, out, normed);
  };
  // A sublayer's output projection into the residual stream, its bias, and (Gemma) its norm.
  // Tensor parallel, the projection is row-parallel: each rank holds a partial sum. Rank 0 adds
  // its part (and the bias) to the residual stream, the others write theirs in its place, and the
  // all-reduce leaves residual + every part on every rank.
  auto add_output = [&](const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out_norm) {
    if (!c.sandwich_norms) {
      if (shard_.rank == 0) backend_.linear_add(x, w, residual);
      else backend_.linear(x, w, residual);
      if (bias.defined()) backend_.add_bias(residual, bias);  // rank 0's only (load_layer)
      if (tp) backend_.all_reduce(residual);
      return;
    }
    backend_.linear(x, w, sub_out);
    if (tp) backend_.all_reduce(sub_out);
    if (bias.defined()) backend_.add_bias(sub_out, bias);
    backend_.rms_norm_add(sub_out, out_norm, eps, residual);
  };
  if (tp) {
    backend_.embedding_shard(in.input_ids, embed_tokens_, dims_.vocab_start, c.vocab_size, residual, embed_scale_);
    backend_.all_reduce(residual);
  } else {
    backend_.embedding(in.input_ids, embed_tokens_, residual, embed_scale_);
  }
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    Layer& L = layers_[l];
    project(L.input_norm, L.qkv_proj, qkv);
    const PagedKV cache = kv.layer(l);
    backend_.rope_attention({.qkv = qkv, .folded = folded, .qkv_bias = L.qkv_bias, .q_norm_w = L.q_norm,
                             .k_norm_w = L.k_norm, .positions = in.positions,
                             .cos_sin = L.sliding ? cos_sin_sliding_ : cos_sin_, .eps = eps, .num_q_heads = Hq,
                             .num_kv_heads = Hkv, .slot_mapping = in.meta.slot_mapping},
                            cache, in.meta, L.sliding ? attn_sliding_ : attn_full_, q, attn_out);
    add_output(attn_flat, L.o_proj, L.o_bias, L.attn_out_norm);
    if (!fold_norms_ && !L.gate_up_bias.defined()) {  // one kernel at decode batch <= 8
      backend_.norm_linear_act(residual, L.mlp_norm, eps, L.gate_up_proj, c.activation, act, gate_up, normed);
    } else {
      project(L.mlp_norm, L.gate_up_proj, gate_up);
      if (L.gate_up_bias.defined()) backend_.add_bias(gate_up, L.gate_up_bias);  // never folded (constructor)
      backend_.act_mul(gate_up, folded, c.activation, act);
    }
    add_output(act, L.down_proj, L.down_bias, L.mlp_out_norm);
  }
  if (!in.meta.is_prefill && B == T) {  // decode: every row is a sequence's last token
    if (shard_.world == 1) {  // the final norm inside lm_head's skinny GEMM where it takes them
      backend_.norm_linear(residual, final_norm_, eps, lm_head_, logits, normed);
      if (c.final_logit_softcapping > 0) backend_.softcap(logits, c.final_logit_softcapping);
      return;
    }
    backend_.rms_norm(residual, final_norm_, eps, normed);
    lm_head(normed, logits);
    return;
  }
  backend_.rms_norm(residual, final_norm_, eps, normed);
  backend_.gather_rows(normed, in.last_token_indices, last);
  lm_head(last, logits);
}

void DecoderModel::logits_of(const Tensor& token_rows, Tensor& logits) {
  const int64_t R = token_rows.numel();
  if (R < 1 || R > last_hidden_.size(0))
    throw std::invalid_argument("DecoderModel::logits_of: " + std::to_string(R) + " rows, the model was built for 1.." +
                                std::to_string(last_hidden_.size(0)));
  Tensor last = last_hidden_.rows(0, R);
  backend_.gather_rows(normed_, token_rows, last);
  lm_head(last, logits);
}

}  // namespace nanovllm
