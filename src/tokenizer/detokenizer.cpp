// IncrementalDetokenizer: streams text as ids arrive without ever splitting a UTF-8 character,
// so the pieces concatenate to exactly decode(all ids). ByteLevel tokenizers stream bytes here;
// any other decoder chain (SentencePiece's Replace/ByteFallback/Fuse/Strip, Metaspace) runs as a
// DecodeStream, the very computation decode() does.
#include <stdexcept>

#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/decoder.h"
#include "tokenizer/utf8.h"

namespace nanovllm {
namespace {

// For a byte-level tokenizer, decode(ids) is the lossy UTF-8 reading of the ids' bytes joined.
// That reading can still change only over a trailing valid-but-incomplete sequence (at most 3
// bytes), so everything before it is final. Returns where that pending tail starts.
size_t final_prefix(std::string_view bytes) {
  size_t i = 0, len;
  while (i < bytes.size()) {
    if (utf8::step(bytes, i, len) == utf8::Step::incomplete) return i;
    i += len;
  }
  return i;
}

}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tok, bool skip_special_tokens)
    : tok_(tok), skip_special_(skip_special_tokens) {}
IncrementalDetokenizer::~IncrementalDetokenizer() = default;
IncrementalDetokenizer::IncrementalDetokenizer(IncrementalDetokenizer&&) noexcept = default;

// ids_[read_offset_..] are the ids whose bytes have not all been emitted; prefix_offset_ counts
// the bytes of ids_[read_offset_] that already have been (a token can end mid-character).
std::string IncrementalDetokenizer::push(int32_t id) {
  std::string out;
  const auto* bpe = dynamic_cast<const BpeTokenizer*>(&tok_);
  if (bpe && !bpe->byte_level_decode()) {
    std::string_view token = bpe->id_token(id);  // an unknown id throws here, before it joins the stream
    if (!stream_) stream_ = std::make_unique<DecodeStream>(bpe->decoder());
    if (!(skip_special_ && bpe->is_special(id))) stream_->push(token, out);
    return out;
  }
  if (bpe) {
    auto bytes_of = [&](int32_t t) {
      std::string_view b = bpe->id_bytes(t);  // throws for an unknown id, as decode does
      return skip_special_ && bpe->is_special(t) ? std::string_view() : b;
    };
    bytes_of(id);  // an unknown id throws here, before it joins the stream
    ids_.push_back(id);
    std::string pending;
    for (size_t k = read_offset_; k < ids_.size(); ++k) pending.append(bytes_of(ids_[k]));
    std::string_view fresh = std::string_view(pending).substr(prefix_offset_);
    size_t done = final_prefix(fresh);
    utf8::append_lossy(out, fresh.substr(0, done));
    // Step past the ids whose bytes are now all out; remember how far into the next one we are.
    size_t emitted = prefix_offset_ + done;
    while (read_offset_ < ids_.size()) {
      size_t len = bytes_of(ids_[read_offset_]).size();
      if (emitted < len) break;
      emitted -= len;
      ++read_offset_;
    }
    prefix_offset_ = emitted;
    return out;
  }
  // Any other Tokenizer: decode the pending ids and hold them back while the text ends in U+FFFD
  // (which may be an incomplete character); once it does not, their bytes ended on a boundary.
  ids_.push_back(id);
  std::vector<int32_t> pending(ids_.begin() + static_cast<std::ptrdiff_t>(read_offset_), ids_.end());
  std::string text;
  try {
    text = tok_.decode(pending, skip_special_);
  } catch (...) {
    ids_.pop_back();  // keep the stream usable after a bad id
    throw;
  }
  if (text.size() >= 3 && text.compare(text.size() - 3, 3, "\xEF\xBF\xBD") == 0) return out;
  read_offset_ = ids_.size();
  return text;
}

std::string IncrementalDetokenizer::flush() {
  std::string out;
  if (stream_) {  // the end of this text: a later push starts a new one, as a new decode would
    stream_->finish(out);
    stream_.reset();
    return out;
  }
  if (read_offset_ >= ids_.size()) return out;
  if (const auto* bpe = dynamic_cast<const BpeTokenizer*>(&tok_)) {
    std::string pending;
    for (size_t k = read_offset_; k < ids_.size(); ++k) {
      std::string_view b = bpe->id_bytes(ids_[k]);
      if (skip_special_ && bpe->is_special(ids_[k])) b = {};
      if (k == read_offset_) b.remove_prefix(prefix_offset_);
      pending.append(b);
    }
    utf8::append_lossy(out, pending);
  } else {
    std::vector<int32_t> pending(ids_.begin() + static_cast<std::ptrdiff_t>(read_offset_), ids_.end());
    out = tok_.decode(pending, skip_special_);
  }
  read_offset_ = ids_.size();
  prefix_offset_ = 0;
  return out;
}

}  // namespace nanovllm
