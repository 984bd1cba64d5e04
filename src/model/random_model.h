// Random checkpoints of every supported family for tests and benchmarks: HF-format config.json,
// generation_config.json and model.safetensors with deterministic, seeded weights (`nanovllm
// make-model` writes them).
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "backend/tensor.h"
#include "model/hf_config.h"

namespace nanovllm {

struct RandomModelSpec {
  ModelArch arch = ModelArch::qwen3;
  int hidden_size = 64;
  int intermediate_size = 128;
  int num_layers = 2;
  int num_heads = 4;
  int num_kv_heads = 2;
  int head_dim = 32;
  int vocab_size = 151936;
  int max_position_embeddings = 4096;
  bool tie_word_embeddings = true;
  double rope_theta = 1000000.0;
  RopeConfig rope_scaling;             // type "default": none written
  double rope_local_base_freq = 10000.0;  // gemma3
  int sliding_window = 0;              // mistral: every layer; gemma3: the sliding ones
  int sliding_window_pattern = 6;      // gemma3: every 6th layer is global
  double query_pre_attn_scalar = 0;    // gemma3 (0: head_dim)
  bool attention_bias = false;         // llama: q/k/v/o biases (qwen2 always has q/k/v)
  double rms_norm_eps = 1e-6;
  DType dtype = DType::bf16;           // bf16 or f32
  // Qwen3-FP8's layout: the decoder's projections as F8_E4M3 with 128 x 128 block scales
  // ("<module>.weight_scale_inv", F32, w = q * scale: scale = max |w| / 448 over the block, q = w /
  // scale rounded to nearest even), from the same random weights; embedding, norms, lm-head in
  // `dtype`; config.json's quantization_config {quant_method: fp8, fmt: e4m3, activation_scheme:
  // dynamic, weight_block_size: [128, 128], modules_to_not_convert: [lm_head]}.
  bool quantize_fp8 = false;
  uint64_t seed = 0;
  std::optional<int> bos_token_id = 151643;
  std::vector<int> eos_token_ids = {151645, 151643};
};

// "tiny" (hidden 64, 2 layers, Qwen3's vocabulary so the real tokenizer fits) of family `arch`,
// or a real model's exact shapes: "qwen3-0.6b", "llama3.2-1b", "qwen2.5-0.5b", "gemma3-1b".
// Throws naming the preset otherwise.
RandomModelSpec random_model_preset(const std::string& name, ModelArch arch = ModelArch::qwen3);
// The family of a make-model --arch name: qwen3, llama, qwen2, mistral, gemma3.
ModelArch arch_from_name(const std::string& name);

// Writes config.json, generation_config.json and model.safetensors into `dir` (created if needed).
// Matrices are ~N(0, 0.02), norm weights ~1 + N(0, 0.05); the same spec and seed give the same bytes.
void write_random_model(const RandomModelSpec& spec, const std::filesystem::path& dir);

}  // namespace nanovllm
