// libFuzzer target for the server's request path without the HTTP layer: a body through
// parse_request (completions or chat, by the first byte), prepare (chat template, tokenizer,
// length and vocabulary checks) and, for each prepared prompt, the engine's TextStream over the
// prompt's ids with the request's stop strings (the text path a generated token takes). Beyond
// "no crash", no leak and no undefined behaviour: every refusal is an ApiError with a 4xx status
// and a message; a prepared request keeps prompt + max_tokens within max_model_len; without stop
// strings the streamed text equals decode(ids), and with them it is a prefix of it.
//   cmake -S . -B build-san -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang -DNANOVLLM_SANITIZE=ON \
//         -DNANOVLLM_FUZZ=ON -DNANOVLLM_CUDA=OFF
//   cmake --build build-san --target fuzz_request && build-san/fuzz_request -max_total_time=60 fuzz/corpus/request
// The tokenizer directory is $NANOVLLM_TOKENIZER_DIR, else models/qwen3-tokenizer of this checkout.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "engine/text_stream.h"
#include "server/api_error.h"
#include "server/prepare.h"
#include "server/request.h"
#include "tokenizer/tokenizer.h"

namespace {

using namespace nanovllm;

const Tokenizer& tokenizer() {
  static std::unique_ptr<Tokenizer> tok = [] {
    const char* dir = std::getenv("NANOVLLM_TOKENIZER_DIR");
    std::filesystem::path p = dir ? std::filesystem::path(dir)
                                  : std::filesystem::path(__FILE__).parent_path().parent_path() / "models" / "qwen3-tokenizer";
    return Tokenizer::from_dir(p);
  }();
  return *tok;
}

[[noreturn]] void fail(const char* what, std::string_view body) {
  std::fprintf(stderr, "fuzz_request: %s for body %.*s\n", what, static_cast<int>(std::min<size_t>(body.size(), 2000)),
               body.data());
  std::abort();
}

// The text path of a generated token: each id through the engine's TextStream.
void check_text_stream(const std::vector<int32_t>& ids, const SamplingParams& sp, std::string_view body) {
  const Tokenizer& tok = tokenizer();
  std::vector<int32_t> known;
  for (int32_t id : ids)
    if (id < tok.vocab_size()) known.push_back(id);  // the model's padded rows have no text
  if (known.size() > 256) known.resize(256);
  TextStream ts(tok, sp.stop, sp.include_stop_str_in_output, sp.skip_special_tokens);
  std::string out;
  for (int32_t id : known) {
    out += ts.push(id);
    if (ts.stopped()) break;
  }
  out += ts.finish();
  const std::string whole = tok.decode(known, sp.skip_special_tokens);
  if (sp.stop.empty() && out != whole) fail("streamed text != decode(ids)", body);
  if (!sp.stop.empty() && !ts.stopped() && out != whole) fail("unstopped stream != decode(ids)", body);
  if (ts.stopped() && !sp.include_stop_str_in_output && whole.rfind(out, 0) != 0) fail("stopped text is not a prefix", body);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const server::Endpoint endpoint = data[0] & 1 ? server::Endpoint::chat : server::Endpoint::completions;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  server::ModelLimits limits;
  limits.max_model_len = 64;
  limits.vocab_size = tokenizer().vocab_size() + 64;  // padded rows beyond the tokenizer's, as real models have
  limits.max_logprobs = 5;
  limits.max_prompt_bytes = 64 * 4 * tokenizer().max_token_bytes();
  server::SamplingDefaults defaults;
  try {
    const server::CompletionRequest req = server::parse_request(body, endpoint, server::ParseLimits{64 + 1024});
    const server::PreparedRequest prep = server::prepare(req, tokenizer(), limits, defaults);
    for (const server::SubRequest& sub : prep.subs) {
      const int len = static_cast<int>(sub.prompt_token_ids.size());
      if (len == 0 || len + sub.params.max_tokens > limits.max_model_len) fail("prepared beyond max_model_len", body);
      check_text_stream(sub.prompt_token_ids, sub.params, body);
    }
  } catch (const server::ApiError& e) {
    if (e.status() < 400 || e.status() >= 500 || std::string_view(e.what()).empty()) fail("bad ApiError", body);
  }
  return 0;
}
