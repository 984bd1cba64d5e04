// BPE tokenizer: encode, decode and the per-thread piece cache (see bpe_tokenizer.h).
#include "tokenizer/bpe_tokenizer.h"

#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <stdexcept>

#include "tokenizer/byte_level.h"
#include "tokenizer/utf8.h"

namespace nanovllm {
namespace {

std::atomic<uint64_t> next_serial{1};

// Pieces repeat a lot in real text ("the", " of", indentation), so each thread keeps the ids of
// the pieces it has seen. Per thread, so encode stays const, lock-free and safe to share.
struct PieceCache {
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return XXH3_64bits(s.data(), s.size()); }
  };
  static constexpr size_t kMaxPiece = 256;      // as HF's BPE cache: longer pieces are rare
  static constexpr size_t kMaxEntries = 1 << 16;  // bounds a thread's cache to a few MB
  uint64_t owner = 0;
  std::unordered_map<std::string, std::pair<uint32_t, uint32_t>, Hash, std::equal_to<>> map;  // -> (offset, count)
  std::vector<int32_t> ids;

  void reset(uint64_t serial) {
    owner = serial;
    map.clear();
    ids.clear();
  }
};

PieceCache& piece_cache(uint64_t serial) {
  thread_local PieceCache cache;
  if (cache.owner != serial || cache.map.size() >= PieceCache::kMaxEntries) cache.reset(serial);
  return cache;
}

}  // namespace

BpeTokenizer::BpeTokenizer(Parts parts) : p_(std::move(parts)), serial_(next_serial.fetch_add(1)) {
  vocab_size_ = p_.model.max_id() + 1;
  byte_level_decode_ = p_.decoder.byte_level_only();
  for (const AddedToken& t : p_.added_tokens) {
    std::string match = t.content;
    if (t.normalized) p_.normalizer.apply(t.content, match);  // normalized tokens are found in normalized text
    added_.add(t, std::move(match));
    added_by_content_[t.content] = t.id;
    added_bytes_[t.id] = byte_level::token_to_bytes(t.content);  // what HF's ByteLevel decoder makes of it
    vocab_size_ = std::max(vocab_size_, t.id + 1);
  }
  id_bytes_.assign(vocab_size_, std::string_view());
  id_token_.assign(vocab_size_, std::string_view());
  id_kind_.assign(vocab_size_, 0);
  if (byte_level_decode_ && !p_.model.byte_level()) owned_bytes_.resize(p_.model.max_id() + 1);
  for (int32_t id = 0; id <= p_.model.max_id(); ++id) {
    if (auto tok = p_.model.id_to_token(id)) {
      id_token_[id] = *tok;
      if (p_.model.byte_level()) {
        id_bytes_[id] = p_.model.id_bytes(id);
      } else if (byte_level_decode_) {
        owned_bytes_[id] = byte_level::token_to_bytes(*tok);
        id_bytes_[id] = owned_bytes_[id];
      }
      id_kind_[id] = 1;
    }
  }
  for (const AddedToken& t : p_.added_tokens) {  // HF: an added token's content wins over the model's entry
    id_bytes_[t.id] = added_bytes_[t.id];
    id_token_[t.id] = t.content;
    id_kind_[t.id] = t.special ? 2 : 1;
  }
  eos_id_ = resolve(p_.eos_token, "eos_token");
  pad_id_ = resolve(p_.pad_token, "pad_token");
  bos_id_ = resolve(p_.bos_token, "bos_token");
  if (p_.add_bos_token || p_.add_eos_token) {
    // transformers (update_post_processor) replaces tokenizer.json's post-processor with
    // "[bos] $A [eos]" when tokenizer_config.json sets either flag; a flag without its token is off.
    if (p_.add_bos_token.value_or(false) && bos_id_) prefix_.push_back(*bos_id_);
    if (p_.add_eos_token.value_or(false) && eos_id_) suffix_.push_back(*eos_id_);
  } else {
    prefix_ = p_.post_processor.prefix;
    suffix_ = p_.post_processor.suffix;
  }
  for (const auto* v : {&prefix_, &suffix_})
    for (int32_t id : *v)
      if (id < 0 || id >= vocab_size_ || id_kind_[id] == 0)
        throw std::runtime_error(p_.where + "/tokenizer.json: post_processor adds token id " + std::to_string(id) +
                                 ", which is not in the vocabulary");
}

std::optional<int32_t> BpeTokenizer::resolve(const std::optional<std::string>& token, const char* field) const {
  if (!token) return std::nullopt;
  auto id = token_to_id(*token);
  if (!id)
    throw std::runtime_error(p_.where + "/tokenizer_config.json: " + field + " \"" + *token +
                             "\" is not in the vocabulary");
  return id;
}

std::optional<int32_t> BpeTokenizer::token_to_id(std::string_view token) const {
  auto it = added_by_content_.find(std::string(token));
  if (it != added_by_content_.end()) return it->second;
  return p_.model.token_to_id(token);
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  encode_into(text, out);
  return out;
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (!add_special_tokens) return encode(text);
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4 + prefix_.size() + suffix_.size());
  out.insert(out.end(), prefix_.begin(), prefix_.end());
  encode_into(text, out);
  out.insert(out.end(), suffix_.begin(), suffix_.end());
  return out;
}

// Non-normalized added tokens are found in the raw text; each span between them is then
// normalized on its own (so Llama 2's Prepend puts a "▁" after every special token too).
void BpeTokenizer::encode_into(std::string_view text, std::vector<int32_t>& out) const {
  utf8::validate(text, "encode");
  if (!added_.has(false)) {
    encode_segment(text, out);
    return;
  }
  std::vector<Segment> segs;
  added_.split(text, false, segs);
  for (const Segment& s : segs) {
    if (s.id >= 0) out.push_back(s.id);
    else encode_segment(text.substr(s.begin, s.end - s.begin), out);
  }
}

// Text between non-normalized added tokens: normalize, then find the normalized added tokens.
void BpeTokenizer::encode_segment(std::string_view text, std::vector<int32_t>& out) const {
  std::string normalized;
  if (p_.normalizer.apply(text, normalized)) text = normalized;
  if (!added_.has(true)) {
    encode_plain(text, out);
    return;
  }
  std::vector<Segment> segs;
  added_.split(text, true, segs);
  for (const Segment& s : segs) {
    if (s.id >= 0) out.push_back(s.id);
    else encode_plain(text.substr(s.begin, s.end - s.begin), out);
  }
}

void BpeTokenizer::encode_plain(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::string prefixed;
  if (p_.pre_tokenizer.add_prefix_space() && text[0] != ' ') {
    prefixed.reserve(text.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(text);
    text = prefixed;
  }
  std::vector<Range> pieces;
  pieces.reserve(text.size() / 4 + 4);
  p_.pre_tokenizer.split(text, pieces);
  for (Range r : pieces) encode_piece(text.substr(r.begin, r.end - r.begin), out);
}

void BpeTokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.size() > PieceCache::kMaxPiece) {
    p_.model.encode_word(piece, out);
    return;
  }
  PieceCache& cache = piece_cache(serial_);
  auto it = cache.map.find(piece);
  if (it != cache.map.end()) {
    const int32_t* ids = cache.ids.data() + it->second.first;
    out.insert(out.end(), ids, ids + it->second.second);
    return;
  }
  size_t before = out.size();
  p_.model.encode_word(piece, out);
  auto offset = static_cast<uint32_t>(cache.ids.size());
  cache.ids.insert(cache.ids.end(), out.begin() + before, out.end());
  cache.map.emplace(std::string(piece), std::make_pair(offset, static_cast<uint32_t>(out.size() - before)));
}

std::string_view BpeTokenizer::id_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size_ || id_kind_[id] == 0)
    throw std::out_of_range("decode: token id " + std::to_string(id) + " is not in the vocabulary (size " +
                            std::to_string(vocab_size_) + ")");
  return id_bytes_[id];
}

std::string_view BpeTokenizer::id_token(int32_t id) const {
  if (id < 0 || id >= vocab_size_ || id_kind_[id] == 0)
    throw std::out_of_range("decode: token id " + std::to_string(id) + " is not in the vocabulary (size " +
                            std::to_string(vocab_size_) + ")");
  return id_token_[id];
}

// A token stands for at most the bytes of its own string: byte-level strings spell each byte as
// one character of one or two UTF-8 bytes, SentencePiece's spell a space as three.
size_t BpeTokenizer::max_token_bytes() const {
  size_t most = 1;
  for (int32_t id = 0; id < vocab_size_; ++id)
    if (id_kind_[id] != 0) most = std::max(most, id_token_[id].size());
  return most;
}

bool BpeTokenizer::is_special(int32_t id) const { return id >= 0 && id < vocab_size_ && id_kind_[id] == 2; }

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  if (!byte_level_decode_) {  // the decoder chain over the token strings, as HF's decode
    DecodeStream stream(p_.decoder);
    std::string out;
    for (int32_t id : ids) {
      std::string_view t = id_token(id);
      if (skip_special_tokens && id_kind_[id] == 2) continue;
      stream.push(t, out);
    }
    stream.finish(out);
    return out;
  }
  std::string bytes;
  bytes.reserve(ids.size() * 4);
  for (int32_t id : ids) {
    std::string_view b = id_bytes(id);
    if (skip_special_tokens && id_kind_[id] == 2) continue;
    bytes.append(b);
  }
  std::string out;
  out.reserve(bytes.size());
  utf8::append_lossy(out, bytes);
  return out;
}

std::string BpeTokenizer::apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                              bool enable_thinking) const {
  return p_.chat_template.render(messages, add_generation_prompt, enable_thinking);
}

std::string BpeTokenizer::render_chat_template(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                                               bool add_generation_prompt, const nlohmann::ordered_json& kwargs) const {
  return p_.chat_template.render(messages, tools, add_generation_prompt, kwargs);
}

}  // namespace nanovllm
