// Added (and special) tokens: found in the text before pre-tokenization, leftmost-longest like
// HF's Aho-Corasick matcher, honouring single_word, lstrip and rstrip as HF's AddedVocabulary does.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nanovllm {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// A span of the text: an added token (id >= 0) or plain text to tokenize (id < 0).
struct Segment {
  uint32_t begin, end;
  int32_t id;
};

class AddedVocabulary {
 public:
  // `content` is the form to look for in text (for normalized tokens, the normalized content).
  void add(const AddedToken& token, std::string match_content);
  // Splits text into segments using the tokens whose `normalized` flag equals `normalized`.
  void split(std::string_view text, bool normalized, std::vector<Segment>& out) const;
  bool has(bool normalized) const { return !set_[normalized].tokens.empty(); }

 private:
  struct MatchSet {
    std::vector<AddedToken> tokens;
    std::vector<std::string> matches;
    // Token indices by first byte, longest first: leftmost-longest needs only the first hit.
    std::vector<uint32_t> by_first_byte[256];
    bool first_byte[256] = {};
  };
  MatchSet set_[2];
};

}  // namespace nanovllm
