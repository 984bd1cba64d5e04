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
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
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
  EXPECT_DOUBLE_EQ(load_model_config(dir).rope_theta, 5e5);
  write_with("rope_theta", "");  // absent everywhere: HF's default
  EXPECT_DOUBLE_EQ(load_model_config(dir).rope_theta, 10000.0);
  write_with("rope_scaling", R"({"rope_type": "yarn", "factor": 4.0})");
  EXPECT_THAT(error(), HasSubstr("yarn"));
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
  write_with("architectures", R"(["LlamaForCausalLM"])");
  EXPECT_THAT(error(), HasSubstr("LlamaForCausalLM"));
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
  write_with("use_sliding_window", "true");
  EXPECT_THAT(error(), HasSubstr("use_sliding_window"));
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
