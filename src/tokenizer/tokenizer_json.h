// Reading tokenizer.json. The file is ~11 MB for Qwen3, nearly all of it model.vocab and
// model.merges; a general JSON DOM takes ~200 ms over it, so a small dedicated reader streams
// those two straight into the BPE model and builds nlohmann::json only for the small rest.
#pragma once
#include <string>
#include <string_view>

#include "tokenizer/bpe_tokenizer.h"

namespace nanovllm {

// Parses tokenizer.json text. Throws std::runtime_error naming `where`, the field and (for
// malformed JSON) the byte offset.
BpeTokenizer::Parts load_tokenizer_json(std::string_view text, const std::string& where);

}  // namespace nanovllm
