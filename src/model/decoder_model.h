// DecoderModel: the decoder-only transformer every supported family is (Qwen3, Llama, Qwen2,
// Mistral, Gemma 3), written once over Backend ops and steered by ModelConfig's description:
// q/k norms, biases, the MLP's activation, Gemma's (1 + w) and sandwich norms and scaled
// embedding, sliding layers and their RoPE, soft-capping.
#pragma once
#include <vector>

#include "backend/backend.h"
#include "model/hf_config.h"
#include "model/safetensors.h"


namespace nanovllm {

struct HostFp8;

// One forward's inputs, all in the backend's memory.
struct ForwardInputs {
  Tensor input_ids;           // i32 [T]: the batch's new tokens, sequence after sequence
  Tensor positions;           // i32 [T]
  Tensor last_token_indices;  // i32 [B]: the rows of T whose logits are wanted (one per sequence);
                              // in decode (one token a sequence) every row: 0, 1, ..., T - 1
  AttentionMetadata meta;
};

// This rank's part of a tensor-parallel model, split as vLLM and nano-vLLM split it: the q/k/v
// and gate/up projections by output rows (column-parallel: whole heads, a slice of the MLP), the
// o and down projections by input columns (row-parallel, their partial sums all-reduced), the
// embedding and lm_head by vocabulary rows (the embedding's rows from other shards are zeros,
// all-reduced; the logits of the shards are gathered to rank 0, which samples). KV heads are
// split too, or replicated when the group is larger than num_key_value_heads.
struct ModelShard {
  int rank = 0, world = 1;
};

// The per-rank sizes of `config` split over `shard`; throws std::invalid_argument naming the
// config field the group size does not divide.
struct ShardDims {
  int64_t q_heads, kv_heads, first_q_head, first_kv_head;
  int64_t intermediate, first_intermediate;
  int64_t vocab_rows, vocab_start, vocab_real;  // rows a shard holds (padded), its first id, its ids below vocab_size
};
ShardDims shard_dims(const ModelConfig& config, ModelShard shard);

class DecoderModel {
 public:
  // Uploads the weights by their Hugging Face names (q/k/v and gate/up packed on load, lm_head
  // tied or separate), only this shard's slices of them, and allocates activations for up to
  // max_num_tokens tokens and max_num_seqs logits rows. Throws naming a missing or misshapen
  // tensor.
  DecoderModel(const ModelConfig& config, const Checkpoint& ckpt, Backend& backend, int max_num_tokens,
               int max_num_seqs, ModelShard shard = {});

  // Runs every layer over the batch, stores the new tokens' K/V in `kv`, and writes the logits of
  // the rows in last_token_indices to `logits` (f32 [B, vocab]; on ranks other than 0 of a
  // group, unused). Issues backend ops only: it may be captured into a CUDA graph.
  void forward(const ForwardInputs& in, KVCache& kv, Tensor& logits);

  // The logits (f32 [R, vocab]) of rows `token_rows` (i32 [R], R <= max_num_seqs) of the hidden
  // states the last forward() computed: the final norm's output of every token of that batch, which
  // a prefill forward leaves (a decode step's final norm may run inside lm_head's kernel).
  void logits_of(const Tensor& token_rows, Tensor& logits);

  const ModelConfig& config() const { return config_; }
  size_t weight_bytes() const { return weight_bytes_; }
  // The bytes of weights used where they lie in the checkpoint's mapping (the CPU backend): the
  // checkpoint must stay open while the model runs when this is not 0.
  size_t mapped_bytes() const { return mapped_bytes_; }
  // The checkpoint's weights' dtype (an FP8 checkpoint's: its unquantized tensors', the dtype its
  // matrices dequantize into), and the one the weight matrices are kept in.
  DType checkpoint_dtype() const { return checkpoint_dtype_; }
  DType weight_dtype() const { return weight_dtype_; }
  // True when the decoder norms are folded into the projections (see the constructor).
  bool folds_norms() const { return fold_norms_; }
  const ShardDims& dims() const { return dims_; }

 private:
  struct Layer {
    Tensor qkv_proj, q_norm, k_norm, o_proj, gate_up_proj, down_proj;  // the norms folded in when fold_norms_
    Tensor input_norm, mlp_norm;            // the norms before attention and MLP, when not folded
    Tensor attn_out_norm, mlp_out_norm;     // Gemma's norms of the sublayers' outputs (f32)
    Tensor qkv_bias, o_bias, gate_up_bias, down_bias;  // when the family has them
    bool sliding = false;
  };
  // Rows [first, first + rows) of checkpoint tensor `name` (`total` rows in the file).
  struct Part {
    std::string name;
    int64_t total, first, rows;
  };
  // Reads one layer's weights into L.
  void load_layer(const Checkpoint& ckpt, int l, Layer& L);
  // A weight matrix [rows, cols] of `dtype` (int8 rows carry their scale after the columns).
  Tensor alloc_weight(DType dtype, int64_t rows, int64_t cols);
  // The weight matrix packed from `parts` (rows [first, first + rows) of checkpoint tensors
  // [total, K]), in `dtype`: the checkpoint's own bytes where the backend takes them in place,
  // else a copy (upload_projection), the norm `gamma_name` folded in when folding ("" for none).
  // `quantizable`: a decoder projection (FP8 in an FP8 checkpoint; quantized under --quantization
  // fp8), not the embedding or the lm-head.
  Tensor projection(const Checkpoint& ckpt, const std::vector<Part>& parts, int64_t K, const std::string& gamma_name,
                    DType dtype, bool quantizable = false);
  // True when checkpoint tensor `name` is an FP8 matrix of an FP8 checkpoint.
  bool is_fp8_matrix(const Checkpoint& ckpt, const std::string& name) const;
  // An FP8 checkpoint's (packed or sharded) matrix on the host, uploaded: kept FP8 with its scales
  // where the backend takes them, else dequantized into weight_dtype_ (the norm `gamma_name`
  // folded in when folding).
  Tensor upload_fp8(const Checkpoint& ckpt, struct HostFp8 host, const std::string& gamma_name);
  // upload_convert of float rows, or under the FP8 round trip (the CPU's --quantization fp8)
  // quantized per row to f8e4m3 on the host and dequantized into dst.
  void upload_rows(const Tensor& src, Tensor dst, bool round_trip);
  // A norm's weights as folded: (1 + w) for Gemma, else w, in float32.
  std::vector<float> norm_factors(const Checkpoint& ckpt, const std::string& gamma_name, int64_t K) const;
  // dst [N, K] (f32) *= the norm's factors per column (scale_columns).
  void scale_by_norm(const Checkpoint& ckpt, const std::string& gamma_name, int64_t K, Tensor& dst);
  // This rank's shard of the vocabulary's rows of `name` [vocab_size, hidden] (ShardDims).
  Tensor vocab_rows(const Checkpoint& ckpt, const std::string& name, DType dtype);
  // Columns [first, first + cols) of `name` [rows, total] in the weight dtype (a row-parallel
  // projection's shard; the whole matrix, in place where it can be, when cols == total).
  Tensor columns(const Checkpoint& ckpt, const std::string& name, int64_t rows, int64_t total, int64_t first,
                 int64_t cols);
  // Uploads the projection packed from `parts` into `dst`; when folding (and gamma_name is not
  // ""), its input columns multiplied by the weight of the norm `gamma_name` first, in float32,
  // so each weight is rounded to dst's dtype once.
  void upload_projection(const Checkpoint& ckpt, const std::vector<Part>& parts, const std::string& gamma_name,
                         Tensor dst, bool round_trip);
  // Uploads columns [first, first + dst's columns) of checkpoint tensor `name` [rows, total]
  // (a row-parallel projection's shard) into dst.
  void upload_columns(const Checkpoint& ckpt, const std::string& name, int64_t total, int64_t first, Tensor dst);
  // A norm's weight as the forward applies it: (1 + w) for Gemma (in float32), else w.
  Tensor norm_weight(const Checkpoint& ckpt, const std::string& name, int64_t n);
  // The RoPE tables and every activation buffer, sized for the largest batch.
  void allocate_activations(int64_t max_num_tokens, int64_t max_num_seqs);
  // The lm-head over `hidden` rows into logits, soft-capped when the family says so.
  void lm_head(const Tensor& hidden, Tensor& logits);

  ModelConfig config_;
  Backend& backend_;
  ModelShard shard_;
  ShardDims dims_;
  Tensor shard_logits_, gathered_logits_;  // tensor parallelism: this shard's logits, rank 0's gathered ones
  std::vector<DeviceBuffer> buffers_;  // weights, rope tables and activations
  Tensor embed_tokens_, final_norm_, lm_head_, cos_sin_, cos_sin_sliding_;
  std::vector<Layer> layers_;
  // activations, sized for max_num_tokens rows
  Tensor residual_, normed_, qkv_, q_, attn_out_, gate_up_, act_, sub_out_, last_hidden_;
  size_t weight_bytes_ = 0, mapped_bytes_ = 0;
  DType checkpoint_dtype_ = DType::f32, weight_dtype_ = DType::f32;
  bool fold_norms_ = true;   // see the constructor
  bool fp8_checkpoint_ = false;  // config.json's quantization_config: FP8 matrices with scales
  bool fp8_round_trip_ = false;  // --quantization fp8 on a backend that keeps floats (the CPU)
  float embed_scale_ = 1.0f;
  AttentionOptions attn_full_, attn_sliding_;
};

}  // namespace nanovllm
