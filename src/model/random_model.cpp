// write_random_model: seeded random Qwen3 checkpoints. Weights come from a counter-based hash of
// (seed, tensor, element), so generation is parallel and the output does not depend on threads.
#include "model/random_model.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "backend/half.h"
#include "backend/cpu/thread_pool.h"
#include "backend/rng.h"
#include "model/safetensors.h"
#include "util/checks.h"

namespace nanovllm {
namespace fs = std::filesystem;

ModelArch arch_from_name(const std::string& name) {
  if (name == "qwen3") return ModelArch::qwen3;
  if (name == "llama") return ModelArch::llama;
  if (name == "qwen2") return ModelArch::qwen2;
  if (name == "mistral") return ModelArch::mistral;
  if (name == "gemma3") return ModelArch::gemma3;
  throw std::invalid_argument("unknown architecture '" + name + "' (expected qwen3, llama, qwen2, mistral or gemma3)");
}

// Llama 3.x's rope scaling (low/high frequency factors 1 and 4).
RopeConfig llama3_rope(double factor, int original_max) {
  RopeConfig r;
  r.type = "llama3";
  r.factor = factor;
  r.original_max_position_embeddings = original_max;
  return r;
}

RandomModelSpec random_model_preset(const std::string& name, ModelArch arch) {
  RandomModelSpec s;
  s.arch = arch;
  if (name == "tiny") {  // the defaults, with the family's own traits switched on
    if (arch == ModelArch::llama) {
      s.rope_theta = 500000.0;
      s.rope_scaling = llama3_rope(8.0, 1024);
    }
    if (arch == ModelArch::mistral) s.sliding_window = 256;
    if (arch == ModelArch::gemma3) {
      s.sliding_window = 256, s.sliding_window_pattern = 2;
      s.vocab_size = 262144;  // Gemma 3's tokenizer
    }
    return s;
  }
  auto shape = [&s](int hidden, int inter, int layers, int heads, int kv, int hd, int vocab, int max_pos) {
    s.hidden_size = hidden, s.intermediate_size = inter, s.num_layers = layers, s.num_heads = heads;
    s.num_kv_heads = kv, s.head_dim = hd, s.vocab_size = vocab, s.max_position_embeddings = max_pos;
  };
  if (name == "qwen3-0.6b") {
    s.arch = ModelArch::qwen3;
    shape(1024, 3072, 28, 16, 8, 128, 151936, 40960);
    s.rope_theta = 1000000.0;
    return s;
  }
  if (name == "llama3.2-1b") {  // meta-llama/Llama-3.2-1B
    s.arch = ModelArch::llama;
    shape(2048, 8192, 16, 32, 8, 64, 128256, 131072);
    s.rope_theta = 500000.0;
    s.rope_scaling = llama3_rope(32.0, 8192);
    s.rms_norm_eps = 1e-5;
    s.bos_token_id = 128000;
    s.eos_token_ids = {128001, 128008, 128009};
    return s;
  }
  if (name == "qwen2.5-0.5b") {  // Qwen/Qwen2.5-0.5B-Instruct
    s.arch = ModelArch::qwen2;
    shape(896, 4864, 24, 14, 2, 64, 151936, 32768);
    s.rope_theta = 1000000.0;
    return s;
  }
  if (name == "gemma3-1b") {  // google/gemma-3-1b-it
    s.arch = ModelArch::gemma3;
    shape(1152, 6912, 26, 4, 1, 256, 262144, 32768);
    s.rope_theta = 1000000.0;
    s.rope_local_base_freq = 10000.0;
    s.sliding_window = 512;
    s.sliding_window_pattern = 6;
    s.query_pre_attn_scalar = 256;
    s.bos_token_id = 2;
    s.eos_token_ids = {1, 106};
    return s;
  }
  throw std::invalid_argument("unknown model preset '" + name +
                              "' (expected tiny, qwen3-0.6b, llama3.2-1b, qwen2.5-0.5b or gemma3-1b)");
}

namespace {

// Fills n values ~ mean + std * N(0,1). The normal is approximated by the sum of four 16-bit
// uniforms (Irwin-Hall): integer-only, so ~1 ns per value, and ample for random test weights.
void fill_random(cpu::ThreadPool& pool, void* out, DType dt, int64_t n, uint64_t seed, uint64_t tensor_id, float mean,
                 float std) {
  const uint64_t base = mix64(seed * 0x9e3779b97f4a7c15ULL ^ mix64(tensor_id + 1));
  // The sum of 4 uniforms on [0, 65535] has mean 131070 and standard deviation 65536 * sqrt(1/3).
  const float scale = std / (65536.0f * 0.57735027f);
  pool.parallel_for(n, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const uint64_t h = mix64(base + static_cast<uint64_t>(i));
      const int64_t s = static_cast<int64_t>(h & 0xffff) + ((h >> 16) & 0xffff) + ((h >> 32) & 0xffff) + (h >> 48);
      store_from_f32(out, dt, i, mean + static_cast<float>(s - 131070) * scale);
    }
  });
}

void write_json(const fs::path& file, const nlohmann::ordered_json& j) {
  std::ofstream out(file);
  if (!out) throw std::runtime_error(file.string() + ": cannot create file");
  out << j.dump(2) << "\n";
  if (!out) throw std::runtime_error(file.string() + ": write failed");
}

void check_spec(const RandomModelSpec& s) {
  auto positive = [](const char* name, int v) { require_positive(std::string("make-model: ") + name, v); };
  positive("hidden_size", s.hidden_size);
  positive("intermediate_size", s.intermediate_size);
  positive("num_layers", s.num_layers);
  positive("num_heads", s.num_heads);
  positive("num_kv_heads", s.num_kv_heads);
  positive("head_dim", s.head_dim);
  positive("vocab_size", s.vocab_size);
  positive("max_position_embeddings", s.max_position_embeddings);
  if (s.num_heads % s.num_kv_heads)
    throw std::invalid_argument("make-model: num_heads " + std::to_string(s.num_heads) +
                                " is not a multiple of num_kv_heads " + std::to_string(s.num_kv_heads));
  if (s.head_dim % 2) throw std::invalid_argument("make-model: head_dim " + std::to_string(s.head_dim) + " must be even");
  if (s.dtype != DType::bf16 && s.dtype != DType::f32 && s.dtype != DType::f16)
    throw std::invalid_argument("make-model: dtype must be bf16, f16 or f32");
  for (int id : s.eos_token_ids)
    if (id < 0 || id >= s.vocab_size)
      throw std::invalid_argument("make-model: eos token id " + std::to_string(id) + " outside the vocabulary of " +
                                  std::to_string(s.vocab_size));
  if (s.bos_token_id && (*s.bos_token_id < 0 || *s.bos_token_id >= s.vocab_size))
    throw std::invalid_argument("make-model: bos token id " + std::to_string(*s.bos_token_id) +
                                " outside the vocabulary of " + std::to_string(s.vocab_size));
}

constexpr int kFp8Block = 128;

// w [N, K] (dtype dt) block-quantized to f8e4m3 in 128 x 128 blocks: q [N, K] and the blocks'
// dequantization scales [ceil(N / 128), ceil(K / 128)] (scale = max |w| / 448, 1 for a zero block).
void quantize_blocks(const void* w, DType dt, int64_t N, int64_t K, uint8_t* q, float* scales) {
  const int64_t sc = (K + kFp8Block - 1) / kFp8Block;
  for (int64_t bn = 0; bn * kFp8Block < N; ++bn)
    for (int64_t bk = 0; bk < sc; ++bk) {
      const int64_t n1 = std::min<int64_t>(N, (bn + 1) * kFp8Block), k1 = std::min<int64_t>(K, (bk + 1) * kFp8Block);
      float amax = 0.0f;
      for (int64_t n = bn * kFp8Block; n < n1; ++n)
        for (int64_t k = bk * kFp8Block; k < k1; ++k) amax = std::fmax(amax, std::fabs(load_as_f32(w, dt, n * K + k)));
      const float s = amax > 0.0f ? amax / 448.0f : 1.0f;
      scales[bn * sc + bk] = s;
      for (int64_t n = bn * kFp8Block; n < n1; ++n)
        for (int64_t k = bk * kFp8Block; k < k1; ++k) q[n * K + k] = f32_to_fp8_e4m3(load_as_f32(w, dt, n * K + k) / s);
    }
}

const char* torch_dtype_name(DType t) {
  return t == DType::bf16 ? "bfloat16" : t == DType::f16 ? "float16" : "float32";
}

// config.json as transformers 4.5x writes it for the family (rope_theta and rope_scaling; Gemma 3's
// rope_local_base_freq and layer_types), which transformers 5 and nanovllm both read.
nlohmann::ordered_json hf_config_json(const RandomModelSpec& s) {
  using json = nlohmann::ordered_json;
  static const char* kTypes[] = {"qwen3", "llama", "qwen2", "mistral", "gemma3_text"};
  const bool gemma = s.arch == ModelArch::gemma3;
  json cfg;
  cfg["architectures"] = {arch_name(s.arch)};
  cfg["model_type"] = kTypes[static_cast<int>(s.arch)];
  cfg["attention_bias"] = s.attention_bias;
  if (s.arch == ModelArch::llama) cfg["mlp_bias"] = false;
  cfg["attention_dropout"] = 0.0;
  cfg["bos_token_id"] = s.bos_token_id ? json(*s.bos_token_id) : json(nullptr);
  cfg["eos_token_id"] = s.eos_token_ids.empty() ? json(nullptr) : json(s.eos_token_ids[0]);
  cfg["head_dim"] = s.head_dim;
  cfg[gemma ? "hidden_activation" : "hidden_act"] = gemma ? "gelu_pytorch_tanh" : "silu";
  cfg["hidden_size"] = s.hidden_size;
  cfg["initializer_range"] = 0.02;
  cfg["intermediate_size"] = s.intermediate_size;
  cfg["max_position_embeddings"] = s.max_position_embeddings;
  cfg["num_attention_heads"] = s.num_heads;
  cfg["num_hidden_layers"] = s.num_layers;
  cfg["num_key_value_heads"] = s.num_kv_heads;
  cfg["rms_norm_eps"] = s.rms_norm_eps;
  cfg["rope_theta"] = s.rope_theta;
  if (s.rope_scaling.type == "default") {
    cfg["rope_scaling"] = nullptr;
  } else {
    json r = {{"rope_type", s.rope_scaling.type}, {"factor", s.rope_scaling.factor}};
    if (s.rope_scaling.type == "llama3") {
      r["low_freq_factor"] = s.rope_scaling.low_freq_factor;
      r["high_freq_factor"] = s.rope_scaling.high_freq_factor;
    }
    if (s.rope_scaling.original_max_position_embeddings > 0)
      r["original_max_position_embeddings"] = s.rope_scaling.original_max_position_embeddings;
    cfg["rope_scaling"] = r;
  }
  if (s.arch == ModelArch::qwen3 || s.arch == ModelArch::qwen2) {
    cfg["max_window_layers"] = s.num_layers;
    cfg["sliding_window"] = nullptr;
    cfg["use_sliding_window"] = false;
  } else if (s.arch == ModelArch::mistral) {
    cfg["sliding_window"] = s.sliding_window > 0 ? json(s.sliding_window) : json(nullptr);
  } else if (gemma) {
    cfg["sliding_window"] = s.sliding_window;
    json types = json::array();
    for (int l = 0; l < s.num_layers; ++l)
      types.push_back((l + 1) % s.sliding_window_pattern ? "sliding_attention" : "full_attention");
    cfg["layer_types"] = types;
    cfg["rope_local_base_freq"] = s.rope_local_base_freq;
    cfg["query_pre_attn_scalar"] = s.query_pre_attn_scalar > 0 ? s.query_pre_attn_scalar : s.head_dim;
    cfg["final_logit_softcapping"] = nullptr;
    cfg["attn_logit_softcapping"] = nullptr;
  }
  cfg["tie_word_embeddings"] = s.tie_word_embeddings;
  cfg["torch_dtype"] = torch_dtype_name(s.dtype);
  cfg["transformers_version"] = "4.51.0";
  cfg["use_cache"] = true;
  cfg["vocab_size"] = s.vocab_size;
  if (s.quantize_fp8)
    cfg["quantization_config"] = {{"activation_scheme", "dynamic"},
                                  {"fmt", "e4m3"},
                                  {"modules_to_not_convert", {"lm_head"}},
                                  {"quant_method", "fp8"},
                                  {"weight_block_size", {kFp8Block, kFp8Block}}};
  return cfg;
}

}  // namespace

void write_random_model(const RandomModelSpec& s, const fs::path& dir) {
  check_spec(s);
  fs::create_directories(dir);
  const int64_t H = s.hidden_size, I = s.intermediate_size, D = s.head_dim, V = s.vocab_size;
  const int64_t Hq = s.num_heads, Hkv = s.num_kv_heads;

  // Norm weights ~1 + N(0, 0.05), or N(0, 0.05) where the family applies them as (1 + w).
  const bool gemma = s.arch == ModelArch::gemma3;
  const bool qkv_bias = s.arch == ModelArch::qwen2 || s.attention_bias, o_bias = s.attention_bias;
  struct Spec { std::string name; std::vector<int64_t> shape; bool norm; bool fp8 = false; };
  std::vector<Spec> specs;
  specs.push_back({"model.embed_tokens.weight", {V, H}, false});
  for (int l = 0; l < s.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    specs.push_back({p + "input_layernorm.weight", {H}, true});
    specs.push_back({p + "self_attn.q_proj.weight", {Hq * D, H}, false, s.quantize_fp8});
    specs.push_back({p + "self_attn.k_proj.weight", {Hkv * D, H}, false, s.quantize_fp8});
    specs.push_back({p + "self_attn.v_proj.weight", {Hkv * D, H}, false, s.quantize_fp8});
    if (qkv_bias) {
      specs.push_back({p + "self_attn.q_proj.bias", {Hq * D}, false});
      specs.push_back({p + "self_attn.k_proj.bias", {Hkv * D}, false});
      specs.push_back({p + "self_attn.v_proj.bias", {Hkv * D}, false});
    }
    specs.push_back({p + "self_attn.o_proj.weight", {H, Hq * D}, false, s.quantize_fp8});
    if (o_bias) specs.push_back({p + "self_attn.o_proj.bias", {H}, false});
    if (s.arch == ModelArch::qwen3 || gemma) {
      specs.push_back({p + "self_attn.q_norm.weight", {D}, true});
      specs.push_back({p + "self_attn.k_norm.weight", {D}, true});
    }
    specs.push_back({p + "post_attention_layernorm.weight", {H}, true});
    if (gemma) {
      specs.push_back({p + "pre_feedforward_layernorm.weight", {H}, true});
      specs.push_back({p + "post_feedforward_layernorm.weight", {H}, true});
    }
    specs.push_back({p + "mlp.gate_proj.weight", {I, H}, false, s.quantize_fp8});
    specs.push_back({p + "mlp.up_proj.weight", {I, H}, false, s.quantize_fp8});
    specs.push_back({p + "mlp.down_proj.weight", {H, I}, false, s.quantize_fp8});
  }
  specs.push_back({"model.norm.weight", {H}, true});
  if (!s.tie_word_embeddings) specs.push_back({"lm_head.weight", {V, H}, false});

  size_t total = 0;
  for (const auto& sp : specs) {
    size_t n = 1;
    for (int64_t d : sp.shape) n *= static_cast<size_t>(d);
    total += n * dtype_size(s.dtype);
  }
  // Not a std::vector: zero-filling 1.2 GB first would cost as much as generating it.
  std::unique_ptr<uint8_t[]> storage(new uint8_t[std::max<size_t>(total, 1)]);
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::vector<std::vector<uint8_t>> fp8_storage;  // quantized matrices
  std::vector<std::vector<float>> scale_storage;  // and their scales
  cpu::ThreadPool pool(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  size_t offset = 0;
  for (size_t k = 0; k < specs.size(); ++k) {
    Tensor t(storage.get() + offset, s.dtype, {});
    for (int64_t d : specs[k].shape) t.shape[t.ndim++] = d;
    fill_random(pool, t.data, s.dtype, t.numel(), s.seed, k, specs[k].norm && !gemma ? 1.0f : 0.0f,
                specs[k].norm ? 0.05f : 0.02f);
    offset += t.nbytes();
    if (!specs[k].fp8) {
      tensors.emplace_back(specs[k].name, t);
      continue;
    }
    // The FP8 checkpoint: the same random weights, block-quantized, and their scales.
    const int64_t N = t.shape[0], K = t.shape[1];
    const int64_t sr = (N + kFp8Block - 1) / kFp8Block, sc = (K + kFp8Block - 1) / kFp8Block;
    uint8_t* q = fp8_storage.emplace_back(static_cast<size_t>(N * K)).data();
    float* scales = scale_storage.emplace_back(static_cast<size_t>(sr * sc)).data();
    quantize_blocks(t.data, s.dtype, N, K, q, scales);
    const std::string module = specs[k].name.substr(0, specs[k].name.size() - 7);  // less ".weight"
    tensors.emplace_back(specs[k].name, Tensor(q, DType::f8e4m3, {N, K}));
    tensors.emplace_back(module + ".weight_scale_inv", Tensor(scales, DType::f32, {sr, sc}));
  }
  save_safetensors(dir / "model.safetensors", tensors);

  const nlohmann::ordered_json cfg = hf_config_json(s);
  write_json(dir / "config.json", cfg);

  nlohmann::ordered_json gen;
  gen["bos_token_id"] = cfg["bos_token_id"];
  gen["eos_token_id"] = s.eos_token_ids.size() > 1 ? nlohmann::ordered_json(s.eos_token_ids) : cfg["eos_token_id"];
  gen["transformers_version"] = "4.51.0";
  write_json(dir / "generation_config.json", gen);
}

}  // namespace nanovllm
