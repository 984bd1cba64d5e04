// load_model_config: Qwen3 config.json variants (transformers 4 and 5), defaults, and each error.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "model/hf_config.h"

namespace nanovllm {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Qwen3-0.6B's config.json as published (transformers 4.51).
const char* kQwen3_06B = R"({
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
  "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
  "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
  "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
  "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})";

class HfConfig : public ::testing::Test {
 protected:
  fs::path dir;
  void SetUp() override {
    dir = fs::temp_directory_path() / ("nanovllm_hf_config_" + std::to_string(::getpid()) + "_" +
                                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  void TearDown() override { fs::remove_all(dir); }
  void write(const std::string& name, const std::string& text) { std::ofstream(dir / name) << text; }
  // Qwen3-0.6B's config with one field replaced (or removed when value is empty).
  void write_with(const std::string& field, const std::string& value) {
    std::string s = kQwen3_06B;
    size_t at = s.find("\"" + field + "\"");
    if (at == std::string::npos) {
      s.insert(1, "\"" + field + "\": " + value + ", ");
    } else {
      size_t end = s.find_first_of(",}", s.find(':', at));
      if (s[s.find(':', at) + 2] == '[') end = s.find(']', at) + 1;
      if (value.empty()) {
        if (s[end] == ',') ++end;
        s.erase(at, end - at);
      } else {
        s.replace(at, end - at, "\"" + field + "\": " + value);
      }
    }
    write("config.json", s);
  }
  std::string error() {
    try {
      load_model_config(dir);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "(no error)";
  }
};

TEST_F(HfConfig, ReadsQwen3_06B) {
  write("config.json", kQwen3_06B);
  ModelConfig c = load_model_config(dir);
  EXPECT_EQ(c.architecture, "Qwen3ForCausalLM");
  EXPECT_EQ(c.vocab_size, 151936);
  EXPECT_EQ(c.hidden_size, 1024);
  EXPECT_EQ(c.intermediate_size, 3072);
  EXPECT_EQ(c.num_hidden_layers, 28);
  EXPECT_EQ(c.num_attention_heads, 16);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.max_position_embeddings, 40960);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-6f);
  EXPECT_DOUBLE_EQ(c.rope.theta, 1e6);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 151643);
  EXPECT_EQ(c.eos_token_ids, std::vector<int>{151645});
  EXPECT_EQ(c.torch_dtype, "bfloat16");
}

TEST_F(HfConfig, GenerationConfigEosIdsAreMerged) {
  write("config.json", kQwen3_06B);
  write("generation_config.json", R"({"bos_token_id": 151643, "eos_token_id": [151645, 151643], "top_k": 20})");
  EXPECT_EQ(load_model_config(dir).eos_token_ids, (std::vector<int>{151645, 151643}));
}

TEST_F(HfConfig, EosAsListOrNull) {
  write_with("eos_token_id", "[3, 7, 3]");
  EXPECT_EQ(load_model_config(dir).eos_token_ids, (std::vector<int>{3, 7}));
  write_with("eos_token_id", "null");
  EXPECT_TRUE(load_model_config(dir).eos_token_ids.empty());
  write_with("bos_token_id", "null");
  EXPECT_FALSE(load_model_config(dir).bos_token_id.has_value());
  write_with("eos_token_id", "\"x\"");
  EXPECT_THAT(error(), HasSubstr("eos_token_id"));
}

TEST_F(HfConfig, RopeThetaFromTransformers5RopeParameters) {
  std::string s = kQwen3_06B;
  s.replace(s.find("\"rope_theta\": 1000000"), 21, "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 5e5}");
  write("config.json", s);
  EXPECT_DOUBLE_EQ(load_model_config(dir).rope.theta, 5e5);
  write_with("rope_theta", "");  // absent everywhere: HF's default
  EXPECT_DOUBLE_EQ(load_model_config(dir).rope.theta, 10000.0);
  write_with("rope_scaling", R"({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096})");
  EXPECT_EQ(load_model_config(dir).rope.type, "yarn");
  EXPECT_EQ(load_model_config(dir).rope.original_max_position_embeddings, 4096);
  write_with("rope_scaling", R"({"rope_type": "longrope", "factor": 4.0})");
  EXPECT_THAT(error(), HasSubstr("longrope"));
  write_with("rope_scaling", R"({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4, "high_freq_factor": 1})");
  EXPECT_THAT(error(), HasSubstr("high_freq_factor"));
}

TEST_F(HfConfig, HeadDimDerivedAndDefaults) {
  write_with("head_dim", "");
  ModelConfig c = load_model_config(dir);
  EXPECT_EQ(c.head_dim, 1024 / 16);
  write_with("num_key_value_heads", "");
  EXPECT_EQ(load_model_config(dir).num_key_value_heads, 16);  // MHA when absent
  write_with("tie_word_embeddings", "");
  EXPECT_FALSE(load_model_config(dir).tie_word_embeddings);   // Qwen3Config's default
  write_with("tie_word_embeddings", "false");
  EXPECT_FALSE(load_model_config(dir).tie_word_embeddings);
}

TEST_F(HfConfig, ModelTypeAloneIdentifiesQwen3) {
  write_with("architectures", "");
  EXPECT_EQ(load_model_config(dir).architecture, "Qwen3ForCausalLM");
}

// Llama 3.2-1B's, Gemma 3 1B's and Mistral 7B v0.1's config.json (the fields nanovllm reads).
constexpr const char* kLlama32_1B = R"({"architectures": ["LlamaForCausalLM"], "attention_bias": false,
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64, "hidden_act": "silu",
  "hidden_size": 2048, "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": false,
  "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
  "original_max_position_embeddings": 8192, "rope_type": "llama3"}, "rope_theta": 500000.0,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "vocab_size": 128256})";
constexpr const char* kGemma3_1B = R"({"architectures": ["Gemma3ForCausalLM"], "attn_logit_softcapping": null,
  "bos_token_id": 2, "eos_token_id": [1, 106], "final_logit_softcapping": null, "head_dim": 256,
  "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 1152, "intermediate_size": 6912,
  "max_position_embeddings": 32768, "model_type": "gemma3_text", "num_attention_heads": 4,
  "num_hidden_layers": 26, "num_key_value_heads": 1, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
  "rope_local_base_freq": 10000, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": 512,
  "sliding_window_pattern": 6, "vocab_size": 262144})";
constexpr const char* kMistral7B = R"({"architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
  "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336, "max_position_embeddings": 32768,
  "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": false,
  "vocab_size": 32000})";

TEST_F(HfConfig, Families) {
  write("config.json", kLlama32_1B);
  ModelConfig l = load_model_config(dir);
  EXPECT_EQ(l.arch, ModelArch::llama);
  EXPECT_FALSE(l.qk_norm || l.qkv_bias || l.o_bias || l.mlp_bias || l.any_sliding());
  EXPECT_EQ(l.rope.type, "llama3");
  EXPECT_EQ(l.rope.original_max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(l.rope.factor, 32.0);
  EXPECT_TRUE(l.tie_word_embeddings);
  EXPECT_EQ(l.eos_token_ids, (std::vector<int>{128001, 128008, 128009}));
  write("config.json", kGemma3_1B);
  ModelConfig g = load_model_config(dir);
  EXPECT_EQ(g.arch, ModelArch::gemma3);
  EXPECT_TRUE(g.qk_norm && g.norm_plus_one && g.embedding_scaled && g.sandwich_norms);
  EXPECT_EQ(g.activation, Activation::gelu_tanh);
  EXPECT_TRUE(g.tie_word_embeddings);  // Gemma's default
  EXPECT_EQ(g.sliding_window, 512);
  for (int i = 0; i < 26; ++i) EXPECT_EQ(g.layer_sliding[i], (i + 1) % 6 != 0) << "layer " << i;
  EXPECT_DOUBLE_EQ(g.rope.theta, 1e6);
  EXPECT_DOUBLE_EQ(g.rope_sliding.theta, 1e4);
  EXPECT_DOUBLE_EQ(g.query_pre_attn_scalar, 256);
  EXPECT_EQ(g.attn_logit_softcapping, 0.0f);
  // transformers 5 writes layer_types and one rope_parameters object per layer type.
  std::string g5 = kGemma3_1B;
  const std::string old_rope = R"("rope_local_base_freq": 10000, "rope_scaling": null, "rope_theta": 1000000)";
  g5.replace(g5.find(old_rope), old_rope.size(),
             R"("rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                 "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
                "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "sliding_attention",
                 "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention",
                 "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention",
                 "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention",
                 "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention",
                 "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention",
                 "sliding_attention", "full_attention"])");
  write("config.json", g5);
  ModelConfig g2 = load_model_config(dir);
  EXPECT_EQ(g2.rope.type, "linear");
  EXPECT_DOUBLE_EQ(g2.rope.factor, 8.0);
  EXPECT_EQ(g2.rope_sliding.type, "default");
  EXPECT_DOUBLE_EQ(g2.rope_sliding.theta, 1e4);
  EXPECT_FALSE(g2.layer_sliding[1]);
  EXPECT_TRUE(g2.layer_sliding[2]);
  write("config.json", kMistral7B);
  ModelConfig m = load_model_config(dir);
  EXPECT_EQ(m.arch, ModelArch::mistral);
  EXPECT_TRUE(m.all_sliding());
  EXPECT_EQ(m.sliding_window, 4096);
  EXPECT_EQ(m.head_dim, 128);
}

// FP8 weights as Qwen3-FP8 / DeepSeek ("fp8") and llm-compressor ("compressed-tensors") write them.
TEST_F(HfConfig, Fp8QuantizationConfigs) {
  write_with("quantization_config", R"({"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
      "weight_block_size": [128, 128], "modules_to_not_convert": ["lm_head"]})");
  ModelConfig c = load_model_config(dir);
  EXPECT_EQ(c.quant.method, QuantMethod::fp8);
  EXPECT_EQ(c.quant.weight_dtype, DType::f8e4m3);
  EXPECT_EQ(c.quant.strategy, ScaleStrategy::block);
  EXPECT_EQ(c.quant.block_rows, 128);
  EXPECT_EQ(c.quant.block_cols, 128);
  EXPECT_TRUE(c.quant.dynamic_activations);
  EXPECT_EQ(c.quant.ignore, std::vector<std::string>{"lm_head"});
  EXPECT_EQ(c.quant.scale_names.front(), "weight_scale_inv");
  // Without weight_block_size: one scale per tensor; ignored_layers joins the ignore list.
  write_with("quantization_config", R"({"quant_method": "fp8", "activation_scheme": "dynamic",
      "ignored_layers": ["model.layers.0.mlp.down_proj"]})");
  c = load_model_config(dir);
  EXPECT_EQ(c.quant.strategy, ScaleStrategy::tensor);
  EXPECT_EQ(c.quant.ignore, std::vector<std::string>{"model.layers.0.mlp.down_proj"});
  write_with("quantization_config", "null");
  EXPECT_FALSE(load_model_config(dir).quant.quantized());

  // llm-compressor's FP8_DYNAMIC (per channel, dynamic per-token activations) and FP8_BLOCK.
  const std::string channel = R"({"quant_method": "compressed-tensors", "format": "float-quantized",
      "config_groups": {"group_0": {"targets": ["Linear"],
        "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": true, "dynamic": false},
        "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": true}}},
      "ignore": ["lm_head"], "quantization_status": "compressed"})";
  write_with("quantization_config", channel);
  c = load_model_config(dir);
  EXPECT_EQ(c.quant.method, QuantMethod::compressed_tensors);
  EXPECT_EQ(c.quant.strategy, ScaleStrategy::channel);
  EXPECT_TRUE(c.quant.dynamic_activations);
  EXPECT_EQ(c.quant.ignore, std::vector<std::string>{"lm_head"});
  EXPECT_EQ(c.quant.scale_names, std::vector<std::string>{"weight_scale"});
  write_with("quantization_config", R"({"quant_method": "compressed-tensors", "format": "naive-quantized",
      "config_groups": {"g": {"weights": {"num_bits": 8, "type": "float", "strategy": "block",
        "block_structure": [128, 64]}, "input_activations": null}}})");
  c = load_model_config(dir);
  EXPECT_EQ(c.quant.strategy, ScaleStrategy::block);
  EXPECT_EQ(c.quant.block_rows, 128);
  EXPECT_EQ(c.quant.block_cols, 64);
  EXPECT_FALSE(c.quant.dynamic_activations);  // weight-only

  // What is refused names config.json, the field and the value.
  const struct {
    const char* quant;
    const char* expected;
  } refused[] = {
      {R"({"quant_method": "gptq", "bits": 4})", "'quantization_config.quant_method' = \"gptq\""},
      {R"({"quant_method": "bitsandbytes", "load_in_4bit": true})", "quant_method' = \"bitsandbytes\""},
      {R"({"bits": 4})", "quant_method' = null"},
      {R"({"quant_method": "fp8", "activation_scheme": "static"})",
       "'quantization_config.activation_scheme' = \"static\": static activation scales are not supported"},
      {R"({"quant_method": "fp8", "fmt": "e5m2"})", "'quantization_config.fmt' = \"e5m2\""},
      {R"({"quant_method": "fp8", "weight_block_size": [128]})", "'quantization_config.weight_block_size' = [128]"},
      {R"({"quant_method": "fp8", "weight_block_size": [0, 128]})", "weight_block_size' = [0,128]: expected [rows, cols]"},
      {R"({"quant_method": "fp8", "weight_block_size": "128"})", "weight_block_size' = \"128\""},
      {R"({"quant_method": "fp8", "modules_to_not_convert": "lm_head"})", "modules_to_not_convert' = \"lm_head\""},
      {R"({"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {}})",
       "'quantization_config.format' = \"pack-quantized\""},
      {R"({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 4, "type": "int",
          "strategy": "group"}}}})",
       "'quantization_config.config_groups.g.weights.num_bits' = 4"},
      {R"({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 8, "type": "int",
          "strategy": "channel"}}}})",
       "config_groups.g.weights.type' = \"int\""},
      {R"({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 8, "type": "float",
          "strategy": "tensor"}, "input_activations": {"num_bits": 8, "type": "float", "strategy": "tensor",
          "dynamic": false}}}})",
       "config_groups.g.input_activations' = {"},
      {R"({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 8, "type": "float",
          "strategy": "block", "block_structure": [128, -1]}}}})",
       "config_groups.g.weights.block_structure' = [128,-1]"},
      {R"({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 8, "type": "float",
          "strategy": "group", "group_size": 128}}}})",
       "config_groups.g.weights.strategy' = \"group\""},
  };
  for (const auto& r : refused) {
    write_with("quantization_config", r.quant);
    const std::string e = error();
    EXPECT_THAT(e, HasSubstr("config.json")) << r.quant;
    EXPECT_THAT(e, HasSubstr(r.expected)) << r.quant;
  }
}

TEST_F(HfConfig, Errors) {
  EXPECT_THAT(error(), HasSubstr("has no config.json"));
  fs::path missing = dir / "nope";
  try {
    load_model_config(missing);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("does not exist"));
    EXPECT_THAT(e.what(), HasSubstr("nope"));
  }
  write("config.json", "{\"vocab_size\": 12,");
  EXPECT_THAT(error(), HasSubstr("malformed JSON"));
  EXPECT_THAT(error(), HasSubstr("config.json"));
  write_with("architectures", R"(["Gemma3ForConditionalGeneration"])");
  EXPECT_THAT(error(), HasSubstr("Gemma3ForConditionalGeneration"));
  write_with("architectures", R"(["Qwen3MoeForCausalLM"])");
  EXPECT_THAT(error(), HasSubstr("Qwen3MoeForCausalLM"));
  write_with("hidden_size", "");
  EXPECT_THAT(error(), HasSubstr("missing field 'hidden_size'"));
  write_with("num_hidden_layers", "\"28\"");
  EXPECT_THAT(error(), HasSubstr("'num_hidden_layers' must be an integer"));
  write_with("vocab_size", "0");
  EXPECT_THAT(error(), HasSubstr("'vocab_size' = 0"));
  write_with("num_key_value_heads", "5");
  EXPECT_THAT(error(), HasSubstr("not a multiple of num_key_value_heads = 5"));
  write_with("attention_bias", "true");
  EXPECT_THAT(error(), HasSubstr("attention_bias"));
  write_with("use_sliding_window", "true");  // layers from max_window_layers = 28 on slide: none
  EXPECT_FALSE(load_model_config(dir).any_sliding());
  std::string no_window = kGemma3_1B;
  no_window.replace(no_window.find(R"("sliding_window": 512)"), 21, R"("sliding_window": null)");
  write("config.json", no_window);
  EXPECT_THAT(error(), HasSubstr("sliding_window"));
  write_with("quantization_config", R"({"quant_method": "awq", "bits": 4})");
  EXPECT_THAT(error(), HasSubstr("quantization_config.quant_method' = \"awq\""));
  write_with("vision_config", R"({"hidden_size": 1152})");
  EXPECT_THAT(error(), HasSubstr("vision_config"));
  write_with("hidden_act", R"("gelu")");
  EXPECT_THAT(error(), HasSubstr("hidden_act"));
  write_with("rms_norm_eps", "-1");
  EXPECT_THAT(error(), HasSubstr("rms_norm_eps"));
  write_with("eos_token_id", "200000");
  EXPECT_THAT(error(), HasSubstr("outside the vocabulary"));
  write("config.json", kQwen3_06B);
  write("generation_config.json", "[1,");
  EXPECT_THAT(error(), HasSubstr("generation_config.json"));
}

}  // namespace
}  // namespace nanovllm
