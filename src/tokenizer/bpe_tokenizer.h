// The BPE tokenizer behind Tokenizer, byte-level (GPT-2 / Llama 3 / Qwen / DeepSeek-V3) or
// SentencePiece-style (Llama 2 / Gemma: byte fallback, "▁" for spaces): added tokens, then
// normalizer, pre-tokenizer and BPE per piece, with a per-thread cache of piece -> ids; the
// post-processor's special tokens around them on request; decoding through the decoder chain
// (ByteLevel's straight from precomputed bytes).
#pragma once
#include <string>
#include <unordered_map>

#include "tokenizer/added_vocabulary.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/decoder.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/post_processor.h"
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
    Decoder decoder;
    PostProcessor post_processor;
    std::optional<std::string> eos_token, pad_token, bos_token;
    std::optional<bool> add_bos_token, add_eos_token;  // tokenizer_config.json, when it sets them
    ChatTemplate chat_template;
    std::string where;  // the directory, for errors
  };
  explicit BpeTokenizer(Parts parts);

  std::vector<int32_t> encode(std::string_view text) const override;
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const override;
  int vocab_size() const override { return vocab_size_; }
  size_t max_token_bytes() const override;
  void check_chat_template() const override { p_.chat_template.check(); }
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::optional<int32_t> eos_token_id() const override { return eos_id_; }
  std::optional<int32_t> pad_token_id() const override { return pad_id_; }
  std::optional<int32_t> bos_token_id() const override { return bos_id_; }
  std::string apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                  bool enable_thinking) const override;
  using Tokenizer::apply_chat_template;  // the general (JSON) form too

  // What incremental detokenizing needs. With a ByteLevel decoder (byte_level_decode()), the
  // bytes id decodes to; with any other, the token string the decoder chain takes. Both throw
  // std::out_of_range for an unknown id.
  bool byte_level_decode() const { return byte_level_decode_; }
  std::string_view id_bytes(int32_t id) const;
  std::string_view id_token(int32_t id) const;
  bool is_special(int32_t id) const;
  const Decoder& decoder() const { return p_.decoder; }
  // The ids encode(text, true) puts before and after the text's.
  const std::vector<int32_t>& special_prefix() const { return prefix_; }
  const std::vector<int32_t>& special_suffix() const { return suffix_; }
  const ChatTemplate& chat_template() const { return p_.chat_template; }

 private:
  std::string render_chat_template(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                                   bool add_generation_prompt, const nlohmann::ordered_json& kwargs) const override;
  void encode_into(std::string_view text, std::vector<int32_t>& out) const;
  void encode_segment(std::string_view text, std::vector<int32_t>& out) const;
  void encode_plain(std::string_view text, std::vector<int32_t>& out) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  std::optional<int32_t> resolve(const std::optional<std::string>& token, const char* field) const;

  Parts p_;
  AddedVocabulary added_;
  std::unordered_map<std::string, int32_t> added_by_content_;
  std::unordered_map<int32_t, std::string> added_bytes_;  // what each added token decodes to
  std::vector<std::string_view> id_bytes_;                // every id's bytes, for a ByteLevel decode
  std::vector<std::string> owned_bytes_;                  // those not in the model (odd decoder pairings)
  std::vector<std::string_view> id_token_;                // every id's token string, for other decoders
  std::vector<uint8_t> id_kind_;                          // 0 unknown id, 1 normal, 2 special
  bool byte_level_decode_ = true;
  std::vector<int32_t> prefix_, suffix_;                  // the post-processor's special tokens
  int vocab_size_ = 0;
  std::optional<int32_t> eos_id_, pad_id_, bos_id_;
  uint64_t serial_;  // tells this tokenizer's per-thread cache apart from another's
};

}  // namespace nanovllm
