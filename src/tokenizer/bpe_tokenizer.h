// The byte-level BPE tokenizer (GPT-2 / Llama-3 / Qwen2 / Qwen3 style) behind Tokenizer:
// added tokens, then normalizer, pre-tokenizer and BPE per piece, with a per-thread cache of
// piece -> ids; decoding through the byte-level alphabet.
#pragma once
#include <string>
#include <unordered_map>

#include "tokenizer/added_vocabulary.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"

namespace nanovllm {

class BpeTokenizer final : public Tokenizer {
 public:
  // Everything read from tokenizer.json and tokenizer_config.json.
  struct Parts {
    Normalizer normalizer;
    PreTokenizer pre_tokenizer;
    BpeModel model;
    std::vector<AddedToken> added_tokens;
    std::optional<std::string> eos_token, pad_token, bos_token;
    ChatTemplate chat_template;
    std::string where;  // the directory, for errors
  };
  explicit BpeTokenizer(Parts parts);

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const override;
  int vocab_size() const override { return vocab_size_; }
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::optional<int32_t> eos_token_id() const override { return eos_id_; }
  std::optional<int32_t> pad_token_id() const override { return pad_id_; }
  std::optional<int32_t> bos_token_id() const override { return bos_id_; }
  std::string apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                  bool enable_thinking) const override;

  // The bytes id decodes to, and whether it is a special token: what incremental detokenizing
  // needs. Throws std::out_of_range for an unknown id.
  std::string_view id_bytes(int32_t id) const;
  bool is_special(int32_t id) const;
  const ChatTemplate& chat_template() const { return p_.chat_template; }

 private:
  void encode_segment(std::string_view text, std::vector<int32_t>& out) const;
  void encode_plain(std::string_view text, std::vector<int32_t>& out) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  std::optional<int32_t> resolve(const std::optional<std::string>& token, const char* field) const;

  Parts p_;
  AddedVocabulary added_;
  std::unordered_map<std::string, int32_t> added_by_content_;
  std::unordered_map<int32_t, std::string> added_bytes_;  // what each added token decodes to
  std::vector<std::string_view> id_bytes_;                // every id's bytes, for decode
  std::vector<uint8_t> id_kind_;                          // 0 unknown id, 1 normal, 2 special
  int vocab_size_ = 0;
  std::optional<int32_t> eos_id_, pad_id_, bos_id_;
  uint64_t serial_;  // tells this tokenizer's per-thread cache apart from another's
};

}  // namespace nanovllm
