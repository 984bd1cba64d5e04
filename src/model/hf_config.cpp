// load_model_config: reads a Hugging Face config.json of a family nanovllm runs (+ generation_config.json's eos ids).
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

// Sizes far beyond any released model's (the largest have ~128 layers, hidden 16-25k, vocabularies
// of ~260k): a config past them would otherwise end in an unnamed std::bad_alloc, or take all
// memory first. Each field is bounded, and so are the weights they describe together.
void check_plausible_sizes(const ModelConfig& c, const fs::path& file) {
  const struct {
    const char* field;
    int64_t value, most;
  } bounds[] = {{"vocab_size", c.vocab_size, 1 << 24},        {"hidden_size", c.hidden_size, 1 << 17},
                {"intermediate_size", c.intermediate_size, 1 << 20}, {"num_hidden_layers", c.num_hidden_layers, 1024},
                {"num_attention_heads", c.num_attention_heads, 1024}, {"num_key_value_heads", c.num_key_value_heads, 1024},
                {"head_dim", c.head_dim, 4096},                {"max_position_embeddings", c.max_position_embeddings, 1 << 27}};
  for (const auto& b : bounds)
    if (b.value > b.most)
      fail(file, std::string("field '") + b.field + "' = " + std::to_string(b.value) + " is beyond any model's (at most " +
                     std::to_string(b.most) + " here): the weights and caches it implies would need absurd memory");
  const double h = c.hidden_size, q = double(c.num_attention_heads) * c.head_dim, kv = double(c.num_key_value_heads) * c.head_dim;
  const double per_layer = h * (q + 2 * kv) + q * h + 3 * h * c.intermediate_size;
  const double params = double(c.vocab_size) * h * (c.tie_word_embeddings ? 1 : 2) + c.num_hidden_layers * per_layer;
  if (params > 4e12)
    fail(file, "fields num_hidden_layers = " + std::to_string(c.num_hidden_layers) + ", hidden_size = " +
                   std::to_string(c.hidden_size) + ", intermediate_size = " + std::to_string(c.intermediate_size) +
                   " and vocab_size = " + std::to_string(c.vocab_size) + " describe " + std::to_string(params / 1e12) +
                   " trillion parameters: beyond any model (and any machine's memory)");
}

// A positive number, or `def` when missing or null (or, with zero_is_none, 0 meaning "none").
double get_number(const json& j, const fs::path& file, const char* field, double def, bool zero_is_none = false) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_number()) fail(file, std::string("field '") + field + "' must be a number, got " + it->dump());
  double v = it->get<double>();
  if (zero_is_none && v == 0) return 0;
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

// The architectures nanovllm runs, by config.json's "architectures" entry and its model_type.
struct Known {
  const char* architecture;
  const char* model_type;
  ModelArch arch;
};
constexpr Known kKnown[] = {
    {"Qwen3ForCausalLM", "qwen3", ModelArch::qwen3},       {"LlamaForCausalLM", "llama", ModelArch::llama},
    {"Qwen2ForCausalLM", "qwen2", ModelArch::qwen2},       {"MistralForCausalLM", "mistral", ModelArch::mistral},
    {"Gemma3ForCausalLM", "gemma3_text", ModelArch::gemma3},
};
const char* kRunnable = "Qwen3ForCausalLM, LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM, Gemma3ForCausalLM";

// ---- quantization_config: FP8 weights ("fp8", "compressed-tensors"); anything else is refused ----

// "quantization_config.<path>" = <value>: <why>, naming config.json.
[[noreturn]] void quant_fail(const fs::path& file, const std::string& path, const json& value, const std::string& why) {
  fail(file, "field 'quantization_config." + path + "' = " + value.dump() + ": " + why);
}

std::vector<std::string> string_list(const json& q, const fs::path& file, const char* field) {
  std::vector<std::string> out;
  auto it = q.find(field);
  if (it == q.end() || it->is_null()) return out;
  if (!it->is_array()) quant_fail(file, field, *it, "expected a list of module names");
  for (const auto& v : *it) {
    if (!v.is_string()) quant_fail(file, field, *it, "expected a list of module names");
    out.push_back(v.get<std::string>());
  }
  return out;
}

// A [rows, cols] block size of positive integers.
void read_block(const json& v, const fs::path& file, const std::string& path, QuantConfig& qc) {
  if (!v.is_array() || v.size() != 2 || !v[0].is_number_integer() || !v[1].is_number_integer() ||
      v[0].get<long long>() < 1 || v[1].get<long long>() < 1 || v[0].get<long long>() > (1 << 20) ||
      v[1].get<long long>() > (1 << 20))
    quant_fail(file, path, v, "expected [rows, cols], two positive integers (e.g. [128, 128])");
  qc.block_rows = static_cast<int>(v[0].get<long long>());
  qc.block_cols = static_cast<int>(v[1].get<long long>());
}

// Qwen3-FP8 / DeepSeek-V3: {quant_method: fp8, fmt: e4m3, activation_scheme: dynamic,
// weight_block_size: [128, 128] (absent: one scale per tensor), modules_to_not_convert}.
void read_fp8_method(const json& q, const fs::path& file, QuantConfig& qc) {
  qc.method = QuantMethod::fp8;
  if (auto it = q.find("fmt"); it != q.end() && !it->is_null() && *it != "e4m3")
    quant_fail(file, "fmt", *it, "nanovllm reads FP8 weights in e4m3 only");
  auto scheme = q.find("activation_scheme");
  if (scheme != q.end() && !scheme->is_null() && *scheme != "dynamic")
    quant_fail(file, "activation_scheme", *scheme,
               "static activation scales are not supported (expected \"dynamic\": activations quantized per token "
               "at run time)");
  qc.dynamic_activations = true;
  auto block = q.find("weight_block_size");
  if (block == q.end() || block->is_null()) {
    qc.strategy = ScaleStrategy::tensor;
  } else {
    qc.strategy = ScaleStrategy::block;
    read_block(*block, file, "weight_block_size", qc);
  }
  for (const char* field : {"modules_to_not_convert", "ignored_layers"})
    for (std::string& m : string_list(q, file, field)) qc.ignore.push_back(std::move(m));
  // DeepSeek's and transformers' name for block scales, vLLM's for per-tensor ones; both multiply.
  qc.scale_names = {"weight_scale_inv", "weight_scale"};
}

// llm-compressor: {quant_method: compressed-tensors, format: float-quantized, config_groups: {g:
// {targets, weights: {num_bits: 8, type: float, strategy: tensor|channel|block, block_structure},
// input_activations: null or dynamic}}, ignore}.
void read_compressed_tensors(const json& q, const fs::path& file, QuantConfig& qc) {
  qc.method = QuantMethod::compressed_tensors;
  if (auto it = q.find("format"); it != q.end() && !it->is_null() && *it != "float-quantized" &&
                                  *it != "naive-quantized")
    quant_fail(file, "format", *it, "nanovllm reads FP8 weights (expected \"float-quantized\" or \"naive-quantized\")");
  auto groups = q.find("config_groups");
  if (groups == q.end() || !groups->is_object() || groups->empty())
    quant_fail(file, "config_groups", groups == q.end() ? json(nullptr) : *groups, "expected an object of quantization groups");
  bool first = true;
  for (const auto& [gname, g] : groups->items()) {
    const std::string at = "config_groups." + gname;
    if (!g.is_object()) quant_fail(file, at, g, "expected an object");
    auto w = g.find("weights");
    if (w == g.end() || !w->is_object()) quant_fail(file, at + ".weights", w == g.end() ? json(nullptr) : *w, "expected an object");
    if (w->value("num_bits", json(nullptr)) != json(8)) quant_fail(file, at + ".weights.num_bits", w->value("num_bits", json(nullptr)),
                                                 "nanovllm reads 8-bit float weights only (no int4/int8/fp4 schemes)");
    if (w->value("type", json(nullptr)) != json("float"))
      quant_fail(file, at + ".weights.type", w->value("type", json(nullptr)), "nanovllm reads float (FP8) weights only");
    if (w->value("dynamic", json(false)) != json(false))
      quant_fail(file, at + ".weights.dynamic", w->value("dynamic", json(nullptr)), "dynamic weight scales are not supported");
    const json strategy = w->value("strategy", json(nullptr));
    QuantConfig g_qc;
    if (strategy == "tensor") g_qc.strategy = ScaleStrategy::tensor;
    else if (strategy == "channel") g_qc.strategy = ScaleStrategy::channel;
    else if (strategy == "block") {
      g_qc.strategy = ScaleStrategy::block;
      auto bs = w->find("block_structure");
      read_block(bs == w->end() ? json(nullptr) : *bs, file, at + ".weights.block_structure", g_qc);
    } else {
      quant_fail(file, at + ".weights.strategy", w->value("strategy", json(nullptr)),
                 "expected \"tensor\", \"channel\" or \"block\"");
    }
    bool dynamic = false;
    if (auto a = g.find("input_activations"); a != g.end() && !a->is_null()) {
      if (!a->is_object() || a->value("dynamic", json(false)) != json(true))
        quant_fail(file, at + ".input_activations", *a,
                   "static activation scales are not supported (expected dynamic activations, or none)");
      if (a->value("num_bits", json(8)) != json(8) || a->value("type", json("float")) != json("float"))
        quant_fail(file, at + ".input_activations", *a, "expected 8-bit float activations");
      dynamic = true;
    }
    if (!first && (g_qc.strategy != qc.strategy || g_qc.block_rows != qc.block_rows ||
                   g_qc.block_cols != qc.block_cols || dynamic != qc.dynamic_activations))
      quant_fail(file, at, g, "every group must share one weight scheme (nanovllm runs one per model)");
    qc.strategy = g_qc.strategy, qc.block_rows = g_qc.block_rows, qc.block_cols = g_qc.block_cols;
    qc.dynamic_activations = dynamic;
    first = false;
  }
  qc.ignore = string_list(q, file, "ignore");
  qc.scale_names = {"weight_scale"};
}

void read_quantization_config(const json& j, const fs::path& file, ModelConfig& c) {
  auto it = j.find("quantization_config");
  if (it == j.end() || it->is_null()) return;
  if (!it->is_object()) fail(file, "field 'quantization_config' must be an object, got " + it->dump());
  const json& q = *it;
  const json method = q.value("quant_method", json(nullptr));
  if (method == "fp8") read_fp8_method(q, file, c.quant);
  else if (method == "compressed-tensors") read_compressed_tensors(q, file, c.quant);
  else
    quant_fail(file, "quant_method", method,
               "nanovllm reads FP8 weight checkpoints only (quant_method \"fp8\" or \"compressed-tensors\" with "
               "8-bit float weights); use the bf16/fp16/fp32 checkpoint");
}

void check_architecture(const json& j, const fs::path& file, ModelConfig& c) {
  // What cannot run says so by name rather than loading wrong.
  for (const char* field : {"vision_config", "audio_config", "text_config"})
    if (j.contains(field) && !j[field].is_null())
      fail(file, std::string("field '") + field +
                     "': a multimodal checkpoint; nanovllm runs text-only models (for Gemma 3: Gemma3ForCausalLM, "
                     "e.g. google/gemma-3-1b-it)");
  auto arch = j.find("architectures");
  if (arch != j.end() && !arch->is_null()) {
    if (!arch->is_array() || arch->empty()) fail(file, "field 'architectures' must be a non-empty list of names");
    for (const auto& a : *arch)
      for (const Known& k : kKnown)
        if (a.is_string() && a.get<std::string>() == k.architecture) {
          c.arch = k.arch;
          c.architecture = k.architecture;
          return;
        }
    fail(file, "unsupported architecture " + (*arch)[0].dump() + " (nanovllm runs " + kRunnable + ")");
  }
  auto mt = j.find("model_type");
  if (mt == j.end() || !mt->is_string())
    fail(file, "missing field 'architectures' (and no 'model_type' to tell the architecture)");
  for (const Known& k : kKnown)
    if (mt->get<std::string>() == k.model_type) {
      c.arch = k.arch;
      c.architecture = k.architecture;
      return;
    }
  fail(file, "unsupported model_type \"" + mt->get<std::string>() + "\" (nanovllm runs " + kRunnable + ")");
}

double positive(const json& v, const fs::path& file, const std::string& field) {
  if (!v.is_number() || !(v.get<double>() > 0)) fail(file, "field '" + field + "' must be a positive number, got " + v.dump());
  return v.get<double>();
}

// One rope_scaling / rope_parameters object (transformers 4 and 5 spell it differently) over `r`.
void read_rope_object(const json& o, const fs::path& file, const std::string& field, RopeConfig& r) {
  if (!o.is_object()) fail(file, "field '" + field + "' must be an object, got " + o.dump());
  if (auto t = o.find("rope_type"); t != o.end() && t->is_string()) r.type = t->get<std::string>();
  else if (auto t2 = o.find("type"); t2 != o.end() && t2->is_string()) r.type = t2->get<std::string>();
  if (r.type == "su" || r.type == "longrope" || r.type == "mrope" || r.type == "proportional")
    fail(file, "field '" + field + "' asks for rope_type \"" + r.type +
                   "\"; supported: default, linear, dynamic, yarn, llama3");
  if (r.type != "default" && r.type != "linear" && r.type != "dynamic" && r.type != "yarn" && r.type != "llama3")
    fail(file, "field '" + field + "' has an unknown rope_type \"" + r.type + "\"");
  auto num = [&](const char* key, double& dst) {
    if (auto it = o.find(key); it != o.end() && !it->is_null()) dst = positive(*it, file, field + "." + key);
  };
  num("rope_theta", r.theta);
  num("factor", r.factor);
  num("low_freq_factor", r.low_freq_factor);
  num("high_freq_factor", r.high_freq_factor);
  num("beta_fast", r.beta_fast);
  num("beta_slow", r.beta_slow);
  num("mscale", r.mscale);
  num("mscale_all_dim", r.mscale_all_dim);
  if (auto it = o.find("attention_factor"); it != o.end() && !it->is_null())
    r.attention_factor = positive(*it, file, field + ".attention_factor");
  if (auto it = o.find("original_max_position_embeddings"); it != o.end() && !it->is_null())
    r.original_max_position_embeddings = static_cast<int>(positive(*it, file, field + ".original_max_position_embeddings"));
  if (auto it = o.find("truncate"); it != o.end() && it->is_boolean()) r.truncate = it->get<bool>();
  if (r.type == "llama3" && (r.high_freq_factor <= r.low_freq_factor))
    fail(file, "field '" + field + "': llama3 rope needs high_freq_factor > low_freq_factor");
}

// RoPE for full and sliding layers: rope_theta (+ Gemma 3's rope_local_base_freq) and
// rope_scaling (transformers 4: for the full layers), or rope_parameters (transformers 5: one
// object, or one per layer type).
void read_rope(const json& j, const fs::path& file, ModelConfig& c) {
  c.rope.theta = get_number(j, file, "rope_theta", c.arch == ModelArch::gemma3 ? 1000000.0 : 10000.0);
  c.rope_sliding = c.rope;
  if (c.arch == ModelArch::gemma3) c.rope_sliding.theta = get_number(j, file, "rope_local_base_freq", 10000.0);
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) read_rope_object(*it, file, "rope_scaling", c.rope);
  if (c.arch != ModelArch::gemma3) c.rope_sliding = c.rope;
  auto it = j.find("rope_parameters");
  if (it == j.end() || it->is_null()) return;
  if (!it->is_object()) fail(file, "field 'rope_parameters' must be an object, got " + it->dump());
  if (it->contains("full_attention") || it->contains("sliding_attention")) {
    if (it->contains("full_attention")) read_rope_object((*it)["full_attention"], file, "rope_parameters.full_attention", c.rope);
    if (it->contains("sliding_attention"))
      read_rope_object((*it)["sliding_attention"], file, "rope_parameters.sliding_attention", c.rope_sliding);
    return;
  }
  read_rope_object(*it, file, "rope_parameters", c.rope);
  c.rope_sliding = c.rope;
}

// Which layers slide: layer_types when given; else the family's rule (Gemma 3: every
// sliding_window_pattern-th layer is global; Mistral: all when sliding_window is set; Qwen2: with
// use_sliding_window, the layers from max_window_layers on).
void read_layers(const json& j, const fs::path& file, ModelConfig& c) {
  const int L = c.num_hidden_layers;
  auto window = j.find("sliding_window");
  const bool has_window = window != j.end() && !window->is_null();
  if (has_window) c.sliding_window = get_int(j, file, "sliding_window");
  c.layer_sliding.assign(L, false);
  if (auto lt = j.find("layer_types"); lt != j.end() && !lt->is_null()) {
    if (!lt->is_array() || static_cast<int>(lt->size()) != L)
      fail(file, "field 'layer_types' must list num_hidden_layers = " + std::to_string(L) + " entries");
    for (int l = 0; l < L; ++l) {
      const json& t = (*lt)[l];
      if (t == "sliding_attention") c.layer_sliding[l] = true;
      else if (t != "full_attention")
        fail(file, "field 'layer_types[" + std::to_string(l) + "]' = " + t.dump() +
                       " (expected \"full_attention\" or \"sliding_attention\")");
    }
  } else if (c.arch == ModelArch::gemma3) {
    const int pattern = get_int(j, file, "sliding_window_pattern", 6);
    for (int l = 0; l < L; ++l) c.layer_sliding[l] = (l + 1) % pattern != 0;
  } else if (c.arch == ModelArch::mistral) {
    c.layer_sliding.assign(L, has_window);
  } else if (get_bool(j, file, "use_sliding_window", false)) {
    const int from = get_int(j, file, "max_window_layers", L, 0);
    for (int l = from; l < L; ++l) c.layer_sliding[l] = true;
  }
  // Qwen2/Qwen3 write sliding_window beside use_sliding_window false: no layer slides then.
  if (c.arch == ModelArch::qwen2 || c.arch == ModelArch::qwen3)
    if (!get_bool(j, file, "use_sliding_window", false)) c.layer_sliding.assign(L, false);
  if (c.any_sliding() && c.sliding_window <= 0)
    fail(file, "layers slide but field 'sliding_window' is missing or not positive");
  if (!c.any_sliding()) c.sliding_window = 0;
}

// The activation of the gated MLP: hidden_act (or Gemma's hidden_activation).
Activation read_activation(const json& j, const fs::path& file, ModelConfig& c) {
  const char* field = c.arch == ModelArch::gemma3 ? "hidden_activation" : "hidden_act";
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return c.arch == ModelArch::gemma3 ? Activation::gelu_tanh : Activation::silu;
  if (*it == "silu" || *it == "swish") return Activation::silu;
  if (*it == "gelu_pytorch_tanh" || *it == "gelu_tanh" || *it == "gelu_new") return Activation::gelu_tanh;
  fail(file, std::string("field '") + field + "' = " + it->dump() + " is not supported (silu or gelu_pytorch_tanh)");
}

// The family's layer shape, and its own fields.
void read_family(const json& j, const fs::path& file, ModelConfig& c) {
  c.activation = read_activation(j, file, c);
  switch (c.arch) {
    case ModelArch::qwen3:
      c.qk_norm = true;
      if (get_bool(j, file, "attention_bias", false))
        fail(file, "attention_bias = true is not supported for Qwen3 (its attention projections have no bias)");
      break;
    case ModelArch::qwen2:
      c.qkv_bias = true;  // Qwen2 always has q/k/v biases, no o bias, no q/k norm
      break;
    case ModelArch::llama:
    case ModelArch::mistral:
      c.qkv_bias = c.o_bias = get_bool(j, file, "attention_bias", false);
      c.mlp_bias = get_bool(j, file, "mlp_bias", false);
      break;
    case ModelArch::gemma3:
      c.qk_norm = c.norm_plus_one = c.embedding_scaled = c.sandwich_norms = true;
      c.qkv_bias = c.o_bias = get_bool(j, file, "attention_bias", false);
      c.query_pre_attn_scalar = get_number(j, file, "query_pre_attn_scalar", c.head_dim);
      // Gemma 2 soft-caps attention scores; transformers' Gemma 3 reads attn_logit_softcapping
      // but does not apply it (measured against its output: tests/fixtures/models/gemma3-window
      // sets 50.0), and neither do we.
      get_number(j, file, "attn_logit_softcapping", 0.0, true);
      c.final_logit_softcapping = static_cast<float>(get_number(j, file, "final_logit_softcapping", 0.0, true));
      break;
  }
}

}  // namespace

const char* arch_name(ModelArch a) {
  for (const Known& k : kKnown)
    if (k.arch == a) return k.architecture;
  return "?";
}

const char* quant_method_name(QuantMethod m) {
  switch (m) {
    case QuantMethod::fp8: return "fp8";
    case QuantMethod::compressed_tensors: return "compressed-tensors";
    case QuantMethod::none: break;
  }
  return "none";
}

ModelConfig load_model_config(const fs::path& dir) {
  if (!fs::exists(dir)) throw std::runtime_error("model directory " + dir.string() + " does not exist");
  if (!fs::is_directory(dir)) throw std::runtime_error("model path " + dir.string() + " is not a directory");
  const fs::path file = dir / "config.json";
  if (!fs::exists(file)) throw std::runtime_error("model directory " + dir.string() + " has no config.json");
  const json j = read_json(file);

  ModelConfig c;
  check_architecture(j, file, c);
  read_quantization_config(j, file, c);
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
  // Qwen3Config's and Llama's default is false; Gemma's true; small Qwen3 and Llama 3.2 set it.
  c.tie_word_embeddings = get_bool(j, file, "tie_word_embeddings", c.arch == ModelArch::gemma3);
  check_plausible_sizes(c, file);
  read_family(j, file, c);
  read_rope(j, file, c);
  read_layers(j, file, c);
  if (auto p = j.find("partial_rotary_factor"); p != j.end() && !p->is_null() && p->get<double>() != 1.0)
    fail(file, "field 'partial_rotary_factor' = " + p->dump() + " is not supported (RoPE over the whole head)");

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
