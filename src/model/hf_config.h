// ModelConfig: what a Hugging Face config.json says about a decoder, for every family nanovllm
// runs (Qwen3, Llama, Qwen2, Mistral, Gemma 3), as a description the one model implementation
// (DecoderModel) reads: norm kind, activation, biases, which layers slide, RoPE per layer.
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace nanovllm {

enum class ModelArch { qwen3, llama, qwen2, mistral, gemma3 };
const char* arch_name(ModelArch a);  // "Qwen3ForCausalLM", ...

// A rotary embedding: its base and scaling (transformers' rope_type and parameters).
struct RopeConfig {
  std::string type = "default";  // default, linear, dynamic, yarn, llama3
  double theta = 10000.0;
  double factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3
  int original_max_position_embeddings = 0;              // llama3, yarn; 0: max_position_embeddings
  double beta_fast = 32, beta_slow = 1;                  // yarn
  std::optional<double> attention_factor;                // yarn: scales cos and sin
  double mscale = 0, mscale_all_dim = 0;                 // yarn
  bool truncate = true;                                  // yarn
};

// A quantized checkpoint's scheme (config.json's quantization_config): FP8 weight matrices with
// dequantization scales, as Qwen3-FP8 / DeepSeek ("fp8") or llm-compressor ("compressed-tensors")
// write them. Activations are quantized dynamically or not at all (static input scales are refused).
enum class QuantMethod { none, fp8, compressed_tensors };
enum class ScaleStrategy { tensor, channel, block };
struct QuantConfig {
  QuantMethod method = QuantMethod::none;
  DType weight_dtype = DType::f8e4m3;   // the matrices' dtype in the checkpoint (e4m3)
  ScaleStrategy strategy = ScaleStrategy::tensor;
  int block_rows = 0, block_cols = 0;   // strategy block: a scale block's rows x columns ({128, 128})
  bool dynamic_activations = false;     // activations quantized per token at run time (else weight-only)
  std::vector<std::string> ignore;      // modules_to_not_convert / ignored_layers / ignore, as written
  // The scale tensor beside each "<module>.weight": "<module>.weight_scale_inv" (fp8 with blocks),
  // "<module>.weight_scale" (fp8 per-tensor, compressed-tensors); w = q * scale either way.
  std::vector<std::string> scale_names;
  bool quantized() const { return method != QuantMethod::none; }
};
const char* quant_method_name(QuantMethod m);  // "fp8", "compressed-tensors"

struct ModelConfig {
  ModelArch arch = ModelArch::qwen3;
  std::string architecture;           // as config.json names it ("Qwen3ForCausalLM")
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;                   // given, or hidden_size / num_attention_heads
  int max_position_embeddings = 0;
  float rms_norm_eps = 1e-6f;
  bool tie_word_embeddings = false;

  // The family's shape of a decoder layer.
  bool qk_norm = false;               // RMSNorm on each q and k head (Qwen3, Gemma 3)
  bool qkv_bias = false;              // bias on q, k, v (Qwen2; Llama's attention_bias)
  bool o_bias = false;                // bias on o (Llama's attention_bias)
  bool mlp_bias = false;              // bias on gate, up, down (Llama's mlp_bias)
  Activation activation = Activation::silu;
  bool norm_plus_one = false;         // Gemma: norms scale by (1 + w)
  bool embedding_scaled = false;      // Gemma: embeddings times sqrt(hidden_size)
  bool sandwich_norms = false;        // Gemma: a norm on each sublayer's output too
  double query_pre_attn_scalar = 0;   // attention scale is its ^-0.5 (Gemma); 0: head_dim
  float attn_logit_softcapping = 0;   // 0: none
  float final_logit_softcapping = 0;  // 0: none
  int sliding_window = 0;             // the sliding layers' window (0: no layer slides)
  std::vector<bool> layer_sliding;    // per layer: does it slide (num_hidden_layers entries)
  RopeConfig rope;                    // full-attention layers' RoPE
  RopeConfig rope_sliding;            // sliding layers' RoPE (Gemma 3's local base; else = rope)

  std::vector<int> eos_token_ids;     // config.json, then generation_config.json; may be empty
  std::optional<int> bos_token_id;
  std::string torch_dtype;            // as written ("bfloat16"); informational
  QuantConfig quant;                  // quantization_config (none: a float checkpoint)

  bool any_sliding() const {
    for (bool s : layer_sliding)
      if (s) return true;
    return false;
  }
  bool all_sliding() const {
    for (bool s : layer_sliding)
      if (!s) return false;
    return !layer_sliding.empty();
  }
};

// Reads dir/config.json (and dir/generation_config.json for eos ids when present). Throws
// std::runtime_error naming the file and field on anything missing or malformed, an architecture
// nanovllm does not run, a quantization_config other than FP8 weights (QuantConfig), or a
// multimodal config.
ModelConfig load_model_config(const std::filesystem::path& dir);

}  // namespace nanovllm
