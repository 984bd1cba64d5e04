// TextStream: one sample's generated ids turned into text deltas, with stop strings applied on the
// detokenized text (vLLM's semantics: output cut before the stop string, or after it with
// include_stop_str_in_output). The engine runs one per sample, in postprocess.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace nanovllm {

class TextStream {
 public:
  TextStream(const Tokenizer& tok, std::vector<std::string> stop, bool include_stop_str, bool skip_special_tokens);

  // Feeds one generated id; returns the text that is final now. Text that could still become the
  // start of a stop string is held back until it cannot. After a stop string matched, stopped()
  // is true and further ids are ignored. check_stop false (before min_tokens): no stop string is
  // looked for, and the text is released at once.
  std::string push(int32_t id, bool check_stop = true);
  // The sample ended (any reason): returns whatever text was held back.
  std::string finish();

  bool stopped() const { return !matched_.empty(); }
  const std::string& matched_stop() const { return matched_; }  // the stop string that ended it

 private:
  std::string scan(bool at_end);

  const Tokenizer& tok_;
  IncrementalDetokenizer detok_;
  std::vector<std::string> stop_;
  bool include_stop_str_;
  size_t max_stop_len_ = 0;
  std::string pending_;  // detokenized, not yet released
  std::string matched_;
};

}  // namespace nanovllm
