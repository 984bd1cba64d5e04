// The post-processor: the special tokens that encode(text, add_special_tokens=true) puts around
// the text's ids. From tokenizer.json's "post_processor" (TemplateProcessing's single template,
// BertProcessing, RobertaProcessing, ByteLevel, Sequence), unless tokenizer_config.json sets
// add_bos_token / add_eos_token, in which case transformers replaces it with "[bos] $A [eos]".
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string_view>
#include <vector>

namespace nanovllm {

struct PostProcessor {
  std::vector<int32_t> prefix, suffix;  // ids before and after the text's

  // From the "post_processor" field (null: none). Throws naming any type it does not support.
  static PostProcessor from_json(const nlohmann::json& j, std::string_view where);
};

}  // namespace nanovllm
