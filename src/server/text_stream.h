// TextStream: one choice's generated ids turned into text deltas, with stop strings and stop token
// ids applied on the detokenized text (vLLM's semantics: output truncated before the stop string).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace nanovllm::server {

class TextStream {
 public:
  TextStream(const Tokenizer& tok, std::vector<std::string> stop, std::vector<int32_t> stop_token_ids,
             bool include_stop_str, bool skip_special_tokens);

  // Feeds one generated id; returns the text that is final now. Text that could still become the
  // start of a stop string is held back until it cannot.
  std::string push(int32_t id);
  // The engine finished the sequence: returns whatever text was held back.
  std::string finish();

  bool stopped() const { return stopped_; }  // a stop string or stop token id ended the output
  int num_tokens() const { return num_tokens_; }  // ids consumed, up to and including the stopping one

 private:
  std::string scan(bool at_end);

  const Tokenizer& tok_;
  IncrementalDetokenizer detok_;
  std::vector<std::string> stop_;
  std::vector<int32_t> stop_token_ids_;
  bool include_stop_str_;
  size_t max_stop_len_ = 0;
  std::string pending_;  // detokenized, not yet released
  bool stopped_ = false;
  int num_tokens_ = 0;
};

}  // namespace nanovllm::server
