// write_random_model: seeded random Qwen3 checkpoints. Weights come from a counter-based hash of
// (seed, tensor, element), so generation is parallel and the output does not depend on threads.
#include "model/random_model.h"

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

RandomModelSpec random_model_preset(const std::string& name) {
  RandomModelSpec s;
  if (name == "tiny") return s;  // the defaults
  if (name == "qwen3-0.6b") {
    s.hidden_size = 1024;
    s.intermediate_size = 3072;
    s.num_layers = 28;
    s.num_heads = 16;
    s.num_kv_heads = 8;
    s.head_dim = 128;
    s.vocab_size = 151936;
    s.max_position_embeddings = 40960;
    s.tie_word_embeddings = true;
    s.rope_theta = 1000000.0;
    s.rms_norm_eps = 1e-6;
    return s;
  }
  throw std::invalid_argument("unknown model preset '" + name + "' (expected tiny or qwen3-0.6b)");
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

const char* torch_dtype_name(DType t) {
  return t == DType::bf16 ? "bfloat16" : t == DType::f16 ? "float16" : "float32";
}

}  // namespace

void write_random_model(const RandomModelSpec& s, const fs::path& dir) {
  check_spec(s);
  fs::create_directories(dir);
  const int64_t H = s.hidden_size, I = s.intermediate_size, D = s.head_dim, V = s.vocab_size;
  const int64_t Hq = s.num_heads, Hkv = s.num_kv_heads;

  struct Spec { std::string name; std::vector<int64_t> shape; bool norm; };
  std::vector<Spec> specs;
  specs.push_back({"model.embed_tokens.weight", {V, H}, false});
  for (int l = 0; l < s.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    specs.push_back({p + "input_layernorm.weight", {H}, true});
    specs.push_back({p + "self_attn.q_proj.weight", {Hq * D, H}, false});
    specs.push_back({p + "self_attn.k_proj.weight", {Hkv * D, H}, false});
    specs.push_back({p + "self_attn.v_proj.weight", {Hkv * D, H}, false});
    specs.push_back({p + "self_attn.o_proj.weight", {H, Hq * D}, false});
    specs.push_back({p + "self_attn.q_norm.weight", {D}, true});
    specs.push_back({p + "self_attn.k_norm.weight", {D}, true});
    specs.push_back({p + "post_attention_layernorm.weight", {H}, true});
    specs.push_back({p + "mlp.gate_proj.weight", {I, H}, false});
    specs.push_back({p + "mlp.up_proj.weight", {I, H}, false});
    specs.push_back({p + "mlp.down_proj.weight", {H, I}, false});
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
  cpu::ThreadPool pool(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  size_t offset = 0;
  for (size_t k = 0; k < specs.size(); ++k) {
    Tensor t(storage.get() + offset, s.dtype, {});
    for (int64_t d : specs[k].shape) t.shape[t.ndim++] = d;
    fill_random(pool, t.data, s.dtype, t.numel(), s.seed, k, specs[k].norm ? 1.0f : 0.0f, specs[k].norm ? 0.05f : 0.02f);
    offset += t.nbytes();
    tensors.emplace_back(specs[k].name, t);
  }
  save_safetensors(dir / "model.safetensors", tensors);

  nlohmann::ordered_json cfg;
  cfg["architectures"] = {"Qwen3ForCausalLM"};
  cfg["attention_bias"] = false;
  cfg["attention_dropout"] = 0.0;
  cfg["bos_token_id"] = s.bos_token_id ? nlohmann::ordered_json(*s.bos_token_id) : nlohmann::ordered_json(nullptr);
  cfg["eos_token_id"] = s.eos_token_ids.empty() ? nlohmann::ordered_json(nullptr)
                                                : nlohmann::ordered_json(s.eos_token_ids[0]);
  cfg["head_dim"] = s.head_dim;
  cfg["hidden_act"] = "silu";
  cfg["hidden_size"] = s.hidden_size;
  cfg["initializer_range"] = 0.02;
  cfg["intermediate_size"] = s.intermediate_size;
  cfg["max_position_embeddings"] = s.max_position_embeddings;
  cfg["max_window_layers"] = s.num_layers;
  cfg["model_type"] = "qwen3";
  cfg["num_attention_heads"] = s.num_heads;
  cfg["num_hidden_layers"] = s.num_layers;
  cfg["num_key_value_heads"] = s.num_kv_heads;
  cfg["rms_norm_eps"] = s.rms_norm_eps;
  cfg["rope_scaling"] = nullptr;
  cfg["rope_theta"] = s.rope_theta;
  cfg["sliding_window"] = nullptr;
  cfg["tie_word_embeddings"] = s.tie_word_embeddings;
  cfg["torch_dtype"] = torch_dtype_name(s.dtype);
  cfg["transformers_version"] = "4.51.0";
  cfg["use_cache"] = true;
  cfg["use_sliding_window"] = false;
  cfg["vocab_size"] = s.vocab_size;
  write_json(dir / "config.json", cfg);

  nlohmann::ordered_json gen;
  gen["bos_token_id"] = cfg["bos_token_id"];
  gen["eos_token_id"] = s.eos_token_ids.size() > 1 ? nlohmann::ordered_json(s.eos_token_ids) : cfg["eos_token_id"];
  gen["transformers_version"] = "4.51.0";
  write_json(dir / "generation_config.json", gen);
}

}  // namespace nanovllm
