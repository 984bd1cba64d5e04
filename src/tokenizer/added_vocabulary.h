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
  // A byte trie of the match strings (Gemma 3 has thousands of added tokens, most starting with
  // '<'): the longest token starting at a position is one walk down from the root.
  struct Node {
    std::vector<std::pair<uint8_t, uint32_t>> kids;  // (byte, node), few per node
    int32_t token = -1;                              // index into tokens when a match ends here
  };
  struct MatchSet {
    std::vector<AddedToken> tokens;
    std::vector<std::string> matches;
    std::vector<Node> trie{Node{}};
    bool first_byte[256] = {};
  };
  // The longest match of s starting at text[i], or -1.
  static int longest_at(const MatchSet& s, std::string_view text, size_t i, size_t& len);
  MatchSet set_[2];
};

}  // namespace nanovllm
