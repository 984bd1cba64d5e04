// TextStream: incremental detokenizing plus stop-string search over the released text.
#include "engine/text_stream.h"

#include <algorithm>
#include <string_view>
#include <utility>

namespace nanovllm {

TextStream::TextStream(const Tokenizer& tok, std::vector<std::string> stop, bool include_stop_str,
                       bool skip_special_tokens)
    : tok_(tok), detok_(tok, skip_special_tokens), stop_(std::move(stop)), include_stop_str_(include_stop_str) {
  for (const auto& s : stop_) max_stop_len_ = std::max(max_stop_len_, s.size());
}

std::string TextStream::push(int32_t id, bool check_stop) {
  if (stopped()) return "";
  // The model's vocabulary can be larger than the tokenizer's (padding rows); HF decodes such ids
  // to nothing, and so do we.
  if (id >= 0 && id < tok_.vocab_size()) pending_ += detok_.push(id);
  if (!check_stop) return std::exchange(pending_, std::string());
  return scan(false);
}

std::string TextStream::finish() {
  if (stopped()) return "";
  pending_ += detok_.flush();
  return scan(true);
}

std::string TextStream::scan(bool at_end) {
  // The earliest stop string in the pending text wins. Released text never holds the start of a
  // match: the longest pending suffix that is a prefix of a stop string is always held back.
  size_t best = std::string::npos;
  const std::string* best_stop = nullptr;
  for (const auto& s : stop_) {
    size_t at = pending_.find(s);
    if (at != std::string::npos && at < best) best = at, best_stop = &s;
  }
  std::string out;
  if (best_stop) {
    matched_ = *best_stop;
    out = pending_.substr(0, include_stop_str_ ? best + best_stop->size() : best);
    pending_.clear();
    return out;
  }
  size_t hold = 0;
  if (!at_end) {
    size_t longest = std::min(max_stop_len_ > 0 ? max_stop_len_ - 1 : 0, pending_.size());
    for (size_t h = longest; h > 0 && hold == 0; --h) {
      std::string_view tail(pending_.data() + pending_.size() - h, h);
      for (const auto& s : stop_)
        if (s.size() > h && std::string_view(s).substr(0, h) == tail) {
          hold = h;
          break;
        }
    }
  }
  out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

}  // namespace nanovllm
