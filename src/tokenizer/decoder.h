// Decoders from tokenizer.json (HF's Decoder::decode_chain, then join): ByteLevel, Replace,
// ByteFallback, Fuse, Strip, Metaspace and Sequence of them, run as a stream so that decode and
// incremental detokenizing are one and the same computation: tokens go in one at a time, and text
// comes out as soon as no later token can change it.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace nanovllm {

class Regex;

class Decoder {
 public:
  // One decoder of the chain (a Sequence is flattened into its members).
  struct Step {
    enum class Kind { byte_level, replace, byte_fallback, fuse, strip, metaspace };
    Kind kind = Kind::fuse;
    // True when the step's input is no longer a list of tokens but pieces of one string: after a
    // Fuse or ByteLevel (HF's versions return a single token). Decided at load time.
    bool fused_input = false;
    std::string pattern, content;        // Replace: a literal pattern (regex null) and its replacement
    std::shared_ptr<const Regex> regex;  // Replace with {"Regex": ...}
    uint32_t ch = 0;                     // Strip's content, Metaspace's replacement
    size_t start = 0, stop = 0;          // Strip
    bool prepend = true;                 // Metaspace: prepend_scheme is not "never"
  };

  // From the "decoder" field; null means none (HF then joins the tokens with spaces). Throws
  // naming any type or option it does not support.
  static Decoder from_json(const nlohmann::json& j, std::string_view where);

  // True when the chain is exactly ByteLevel: tokens are then bytes, decoded lossily as one
  // string, which the tokenizer does from precomputed bytes without this stream.
  bool byte_level_only() const { return steps_.size() == 1 && steps_[0].kind == Step::Kind::byte_level; }
  const std::vector<Step>& steps() const { return steps_; }
  bool join_with_spaces() const { return steps_.empty(); }

  // HF's decode of a list of tokens (what Tokenizer::decode does once ids are token strings).
  std::string decode(const std::vector<std::string_view>& tokens) const;

 private:
  std::vector<Step> steps_;
};

// The state of one decode: push tokens (the strings ids stand for) one at a time, then finish.
// The text appended by all pushes and the finish equals Decoder::decode of all the tokens, and
// every push appends only text that no later token can change (valid UTF-8, whole characters).
class DecodeStream {
 public:
  explicit DecodeStream(const Decoder& d);
  void push(std::string_view token, std::string& out);
  void finish(std::string& out);

 private:
  struct State {
    std::string held;        // Replace/Strip/ByteLevel/ByteFallback: text or bytes not final yet
    size_t count = 0;        // Metaspace: tokens seen; Strip: start chars already stripped
    bool done = false;       // Strip: past the stripped start
  };
  void feed(size_t k, std::string_view item, std::string& out);
  void flush_step(size_t k, std::string& out);
  void finish_from(size_t k, std::string& out);

  const Decoder& d_;
  std::vector<State> st_;
  bool first_ = true;  // no token yet (for the space-joined chain of a null decoder)
};

}  // namespace nanovllm
