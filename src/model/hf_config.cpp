// load_model_config: reads a Hugging Face Qwen3 config.json (+ generation_config.json's eos ids).
#include "model/hf_config.h"

#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "util/files.h"

namespace nanovllm {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

[[noreturn]] void fail(const fs::path& file, const std::string& what) {
  throw std::runtime_error(file.string() + ": " + what);
}

json read_json(const fs::path& file) {
  json j = read_json_file(file);
  if (!j.is_object()) fail(file, "expected a JSON object at the top level");
  return j;
}

// A required (or defaulted, when `def` is given) positive integer field.
int get_int(const json& j, const fs::path& file, const char* field, std::optional<int> def = std::nullopt,
            int min_value = 1) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    if (def) return *def;
    fail(file, std::string("missing field '") + field + "'");
  }
  if (!it->is_number_integer()) fail(file, std::string("field '") + field + "' must be an integer, got " + it->dump());
  long long v = it->get<long long>();
  if (v < min_value || v > (1LL << 31) - 1)
    fail(file, std::string("field '") + field + "' = " + std::to_string(v) + " is out of range (expected >= " +
                   std::to_string(min_value) + ")");
  return static_cast<int>(v);
}

double get_number(const json& j, const fs::path& file, const char* field, double def) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_number()) fail(file, std::string("field '") + field + "' must be a number, got " + it->dump());
  double v = it->get<double>();
  if (!(v > 0)) fail(file, std::string("field '") + field + "' = " + it->dump() + " must be positive");
  return v;
}

bool get_bool(const json& j, const fs::path& file, const char* field, bool def) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_boolean()) fail(file, std::string("field '") + field + "' must be true or false, got " + it->dump());
  return it->get<bool>();
}

// eos_token_id as int, list of ints, or null; appended to `ids` without duplicates.
void read_token_ids(const json& j, const fs::path& file, const char* field, std::vector<int>& ids) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return;
  auto add = [&](const json& v) {
    if (!v.is_number_integer() || v.get<long long>() < 0 || v.get<long long>() > (1LL << 31) - 1)
      fail(file, std::string("field '") + field + "' must hold non-negative integer token ids, got " + it->dump());
    int id = static_cast<int>(v.get<long long>());
    for (int x : ids)
      if (x == id) return;
    ids.push_back(id);
  };
  if (it->is_array()) {
    for (const auto& v : *it) add(v);
  } else {
    add(*it);
  }
}

void check_architecture(const json& j, const fs::path& file, ModelConfig& c) {
  auto arch = j.find("architectures");
  if (arch != j.end() && !arch->is_null()) {
    if (!arch->is_array() || arch->empty()) fail(file, "field 'architectures' must be a non-empty list of names");
    for (const auto& a : *arch) {
      if (a.is_string() && a.get<std::string>() == "Qwen3ForCausalLM") {
        c.architecture = "Qwen3ForCausalLM";
        return;
      }
    }
    fail(file, "unsupported architecture " + (*arch)[0].dump() +
                   " (nanovllm runs Qwen3ForCausalLM, the dense Qwen3 models)");
  }
  auto mt = j.find("model_type");
  if (mt == j.end() || !mt->is_string())
    fail(file, "missing field 'architectures' (and no 'model_type' to tell the architecture)");
  if (mt->get<std::string>() != "qwen3")
    fail(file, "unsupported model_type \"" + mt->get<std::string>() + "\" (nanovllm runs qwen3, the dense Qwen3 models)");
  c.architecture = "Qwen3ForCausalLM";
}

// rope_theta (transformers 4) or rope_parameters.rope_theta (transformers 5). Scaled RoPE
// variants (yarn, linear, dynamic...) change the rotary table and are not implemented.
void read_rope(const json& j, const fs::path& file, ModelConfig& c) {
  c.rope_theta = get_number(j, file, "rope_theta", 10000.0);
  for (const char* field : {"rope_scaling", "rope_parameters"}) {
    auto it = j.find(field);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_object()) fail(file, std::string("field '") + field + "' must be an object, got " + it->dump());
    std::string type = "default";
    if (auto t = it->find("rope_type"); t != it->end() && t->is_string()) type = t->get<std::string>();
    else if (auto t2 = it->find("type"); t2 != it->end() && t2->is_string()) type = t2->get<std::string>();
    if (type != "default")
      fail(file, std::string("field '") + field + "' asks for rope_type \"" + type +
                     "\"; only the default (unscaled) RoPE is supported");
    if (it->contains("rope_theta")) {
      const json& t = (*it)["rope_theta"];
      if (!t.is_number() || !(t.get<double>() > 0))
        fail(file, std::string("field '") + field + ".rope_theta' must be a positive number, got " + t.dump());
      c.rope_theta = t.get<double>();
    }
  }
}

}  // namespace

ModelConfig load_model_config(const fs::path& dir) {
  if (!fs::exists(dir)) throw std::runtime_error("model directory " + dir.string() + " does not exist");
  if (!fs::is_directory(dir)) throw std::runtime_error("model path " + dir.string() + " is not a directory");
  const fs::path file = dir / "config.json";
  if (!fs::exists(file)) throw std::runtime_error("model directory " + dir.string() + " has no config.json");
  const json j = read_json(file);

  ModelConfig c;
  check_architecture(j, file, c);
  c.vocab_size = get_int(j, file, "vocab_size");
  c.hidden_size = get_int(j, file, "hidden_size");
  c.intermediate_size = get_int(j, file, "intermediate_size");
  c.num_hidden_layers = get_int(j, file, "num_hidden_layers");
  c.num_attention_heads = get_int(j, file, "num_attention_heads");
  // HF: a missing num_key_value_heads means plain multi-head attention.
  c.num_key_value_heads = get_int(j, file, "num_key_value_heads", c.num_attention_heads);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail(file, "num_attention_heads = " + std::to_string(c.num_attention_heads) +
                   " is not a multiple of num_key_value_heads = " + std::to_string(c.num_key_value_heads));
  if (!j.contains("head_dim") || j["head_dim"].is_null()) {
    if (c.hidden_size % c.num_attention_heads != 0)
      fail(file, "no 'head_dim', and hidden_size = " + std::to_string(c.hidden_size) +
                     " is not a multiple of num_attention_heads = " + std::to_string(c.num_attention_heads));
    c.head_dim = c.hidden_size / c.num_attention_heads;
  } else {
    c.head_dim = get_int(j, file, "head_dim");
  }
  if (c.head_dim % 2 != 0) fail(file, "head_dim = " + std::to_string(c.head_dim) + " must be even for RoPE");
  c.max_position_embeddings = get_int(j, file, "max_position_embeddings");
  c.rms_norm_eps = static_cast<float>(get_number(j, file, "rms_norm_eps", 1e-6));
  read_rope(j, file, c);
  // Qwen3Config's default is false; Qwen3-0.6B/1.7B/4B set it to true.
  c.tie_word_embeddings = get_bool(j, file, "tie_word_embeddings", false);
  if (get_bool(j, file, "attention_bias", false))
    fail(file, "attention_bias = true is not supported (Qwen3's attention projections have no bias)");
  if (get_bool(j, file, "use_sliding_window", false))
    fail(file, "use_sliding_window = true is not supported (every layer attends to the full context)");
  if (auto act = j.find("hidden_act"); act != j.end() && !act->is_null() && *act != "silu")
    fail(file, "hidden_act = " + act->dump() + " is not supported (Qwen3 uses \"silu\")");

  if (auto it = j.find("bos_token_id"); it != j.end() && !it->is_null()) {
    std::vector<int> bos;
    read_token_ids(j, file, "bos_token_id", bos);
    if (!bos.empty()) c.bos_token_id = bos[0];
  }
  read_token_ids(j, file, "eos_token_id", c.eos_token_ids);
  for (const char* field : {"torch_dtype", "dtype"}) {  // transformers 5 renamed it to "dtype"
    if (auto it = j.find(field); it != j.end() && it->is_string()) {
      c.torch_dtype = it->get<std::string>();
      break;
    }
  }

  const fs::path gen = dir / "generation_config.json";
  if (fs::exists(gen)) {
    const json g = read_json(gen);
    read_token_ids(g, gen, "eos_token_id", c.eos_token_ids);
    if (!c.bos_token_id) {
      std::vector<int> bos;
      read_token_ids(g, gen, "bos_token_id", bos);
      if (!bos.empty()) c.bos_token_id = bos[0];
    }
  }
  for (int id : c.eos_token_ids)
    if (id >= c.vocab_size)
      fail(file, "eos_token_id " + std::to_string(id) + " is outside the vocabulary (vocab_size = " +
                     std::to_string(c.vocab_size) + ")");
  return c;
}

}  // namespace nanovllm
