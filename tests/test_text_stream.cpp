// TextStream: detokenized deltas with stop strings and stop token ids, checked against the text
// written out by hand for a small word-piece vocabulary.
#include <gtest/gtest.h>

#include "engine/text_stream.h"

namespace nanovllm {
namespace {

// A Tokenizer whose id i decodes to kPieces[i]: enough to drive IncrementalDetokenizer's generic path.
const std::vector<std::string> kPieces = {"Hello", ",", " wor", "ld", "!", "\n", "EN", "D", " caf", "\xc3\xa9", " ok"};

class PieceTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view) const override { return {}; }
  std::string decode(const std::vector<int32_t>& ids, bool) const override {
    std::string s;
    for (int32_t id : ids) s += kPieces.at(static_cast<size_t>(id));
    return s;
  }
  int vocab_size() const override { return static_cast<int>(kPieces.size()); }
  std::optional<int32_t> token_to_id(std::string_view) const override { return std::nullopt; }
  std::optional<int32_t> eos_token_id() const override { return std::nullopt; }
  std::optional<int32_t> pad_token_id() const override { return std::nullopt; }
  std::optional<int32_t> bos_token_id() const override { return std::nullopt; }
  std::string apply_chat_template(const std::vector<ChatMessage>&, bool, bool) const override { return ""; }
};

struct Result {
  std::vector<std::string> deltas;
  std::string text;
  bool stopped;
  int tokens;
  std::string matched;
};

Result run(const std::vector<int32_t>& ids, std::vector<std::string> stop, bool include_stop = false) {
  PieceTokenizer tok;
  TextStream ts(tok, std::move(stop), include_stop, true);
  Result r;
  r.tokens = 0;
  for (int32_t id : ids) {
    ++r.tokens;
    r.deltas.push_back(ts.push(id));
    if (ts.stopped()) break;
  }
  r.deltas.push_back(ts.finish());
  for (const auto& d : r.deltas) r.text += d;
  r.stopped = ts.stopped();
  if (r.stopped) r.matched = ts.matched_stop();
  return r;
}

TEST(TextStream, NoStopReleasesEveryPieceAtOnce) {
  Result r = run({0, 1, 2, 3, 4}, {});
  EXPECT_EQ(r.text, "Hello, world!");
  EXPECT_EQ(r.deltas[0], "Hello");
  EXPECT_EQ(r.deltas[2], " wor");
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(r.tokens, 5);
}

TEST(TextStream, StopStringTruncatesBeforeIt) {
  // "Hello, world!" with stop "world": the text ends at "Hello, ", and " wor" is held back until
  // "ld" shows it is the stop string.
  Result r = run({0, 1, 2, 3, 4}, {"world"});
  EXPECT_EQ(r.text, "Hello, ");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.tokens, 4);
  EXPECT_EQ(r.deltas[2], " ");  // of " wor", "wor" may begin "world": only " " is final
}

TEST(TextStream, HeldBackTextIsReleasedWhenItIsNotAStop) {
  // " wor" then "!" : "wor" was a possible start of "world", then proved not to be.
  Result r = run({2, 4, 5}, {"world"});
  EXPECT_EQ(r.deltas[0], " ");
  EXPECT_EQ(r.deltas[1], "wor!");
  EXPECT_EQ(r.text, " wor!\n");
  EXPECT_FALSE(r.stopped);
}

TEST(TextStream, StopSpanningTokensAndEarliestWins) {
  // "END" spans ids 6 and 7; "\n" comes later, so "END" wins.
  Result r = run({0, 6, 7, 5}, {"\n", "END"});
  EXPECT_EQ(r.text, "Hello");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.tokens, 3);
  EXPECT_EQ(r.matched, "END");
  Result inc = run({0, 6, 7, 5}, {"END"}, true);
  EXPECT_EQ(inc.text, "HelloEND");
}

TEST(TextStream, MultibyteStopString) {
  Result r = run({8, 9, 10}, {"\xc3\xa9 ok"});
  EXPECT_EQ(r.text, " caf");
  EXPECT_TRUE(r.stopped);
}

TEST(TextStream, IdsOutsideTheTokenizerDecodeToNothing) {
  Result r = run({0, 500, 4}, {});
  EXPECT_EQ(r.text, "Hello!");
  EXPECT_EQ(r.tokens, 3);
}

}  // namespace
}  // namespace nanovllm
