// ModelConfig: the fields of a Hugging Face config.json that a Qwen3 forward needs.
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace nanovllm {

struct ModelConfig {
  std::string architecture;           // "Qwen3ForCausalLM"
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;                   // given, or hidden_size / num_attention_heads
  int max_position_embeddings = 0;
  float rms_norm_eps = 1e-6f;
  double rope_theta = 10000.0;        // rope_theta, or rope_parameters.rope_theta (transformers 5)
  bool tie_word_embeddings = false;
  std::vector<int> eos_token_ids;     // config.json, then generation_config.json; may be empty
  std::optional<int> bos_token_id;
  std::string torch_dtype;            // as written ("bfloat16"); informational
};

// Reads dir/config.json (and dir/generation_config.json for eos ids when present).
// Throws std::runtime_error naming the file and field on anything missing or malformed,
// and naming the architecture when it is not a Qwen3 dense model.
ModelConfig load_model_config(const std::filesystem::path& dir);

}  // namespace nanovllm
