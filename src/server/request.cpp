// Parsing and checking of completion and chat request bodies. Every field OpenAI or vLLM defines
// is either used, accepted at its no-op default, or refused by name: nothing is silently dropped.
#include "server/request.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "server/api_error.h"

namespace nanovllm::server {
namespace {

using json = nlohmann::json;

std::string type_name(const json& v) {
  if (v.is_boolean()) return "boolean";
  if (v.is_number_integer() || v.is_number_unsigned()) return "integer";
  if (v.is_number_float()) return "number";
  return v.type_name();
}

ApiError wrong_type(const std::string& param, const char* expected, const json& v) {
  return bad_request(param, "'" + param + "' must be " + expected + ", got " + type_name(v));
}

// Integers may arrive as 3 or 3.0 (Python clients); anything else is a type error.
int64_t as_int(const json& v, const std::string& param) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      throw bad_request(param, "'" + param + "' is out of range: " + v.dump());
    return static_cast<int64_t>(u);
  }
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e18) return static_cast<int64_t>(d);
  }
  throw wrong_type(param, "an integer", v);
}

int64_t int_in_range(const json& v, const std::string& param, int64_t lo, int64_t hi) {
  int64_t x = as_int(v, param);
  if (x < lo || x > hi)
    throw bad_request(param, "'" + param + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                 "], got " + std::to_string(x));
  return x;
}

double as_number(const json& v, const std::string& param) {
  if (!v.is_number()) throw wrong_type(param, "a number", v);
  return v.get<double>();
}

// A number that `ok` accepts; `range` says which, for the message ("in (0, 1]").
template <class Ok>
float number_where(const json& v, const std::string& param, Ok ok, const char* range) {
  const double x = as_number(v, param);
  if (!ok(x)) throw bad_request(param, "'" + param + "' must be " + range + ", got " + v.dump());
  return static_cast<float>(x);
}

bool as_bool(const json& v, const std::string& param) {
  if (!v.is_boolean()) throw wrong_type(param, "a boolean", v);
  return v.get<bool>();
}

const std::string& as_string(const json& v, const std::string& param) {
  if (!v.is_string()) throw wrong_type(param, "a string", v);
  return v.get_ref<const std::string&>();
}

std::vector<int32_t> as_token_ids(const json& v, const std::string& param) {
  std::vector<int32_t> ids;
  ids.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    ids.push_back(static_cast<int32_t>(int_in_range(v[i], param + "[" + std::to_string(i) + "]", 0,
                                                    std::numeric_limits<int32_t>::max())));
  return ids;
}

bool is_int_array(const json& v) {
  if (!v.is_array() || v.empty()) return false;
  for (const auto& x : v)
    if (!x.is_number() || x.is_boolean()) return false;
  return true;
}

// prompt: "text" | ["text", ...] | [id, ...] | [[id, ...], ...]
std::vector<PromptInput> parse_prompt(const json& v) {
  std::vector<PromptInput> out;
  if (v.is_string()) {
    out.push_back({true, v.get<std::string>(), {}});
  } else if (is_int_array(v)) {
    out.push_back({false, "", as_token_ids(v, "prompt")});
  } else if (v.is_array() && !v.empty()) {
    for (size_t i = 0; i < v.size(); ++i) {
      const json& p = v[i];
      std::string name = "prompt[" + std::to_string(i) + "]";
      if (p.is_string()) {
        out.push_back({true, p.get<std::string>(), {}});
      } else if (is_int_array(p)) {
        out.push_back({false, "", as_token_ids(p, name)});
      } else {
        throw bad_request("prompt", "'" + name + "' must be a string or a non-empty list of token ids, got " +
                                        type_name(p));
      }
    }
  } else if (v.is_array()) {
    throw bad_request("prompt", "'prompt' must not be an empty list");
  } else {
    throw wrong_type("prompt", "a string, a list of strings, a list of token ids or a list of token-id lists", v);
  }
  if (out.size() > 1024) throw bad_request("prompt", "'prompt' holds more than 1024 prompts");
  return out;
}

// A message's content: a string, null, or a list of {"type": "text", "text": ...} parts.
std::string parse_content(const json& v, const std::string& param) {
  if (v.is_null()) return "";
  if (v.is_string()) return v.get<std::string>();
  if (!v.is_array()) throw wrong_type(param, "a string or a list of content parts", v);
  std::string text;
  for (size_t i = 0; i < v.size(); ++i) {
    std::string pname = param + "[" + std::to_string(i) + "]";
    const json& part = v[i];
    if (!part.is_object()) throw wrong_type(pname, "an object", part);
    auto t = part.find("type");
    if (t == part.end() || !t->is_string()) throw bad_request(pname, "'" + pname + ".type' must be a string");
    if (*t != "text")
      throw bad_request(pname, "content part type '" + t->get<std::string>() + "' is not supported (text only)");
    auto txt = part.find("text");
    if (txt == part.end()) throw bad_request(pname, "'" + pname + ".text' is required");
    text += as_string(*txt, pname + ".text");
  }
  return text;
}

std::vector<ChatMessage> parse_messages(const json& v) {
  if (!v.is_array()) throw wrong_type("messages", "a list of messages", v);
  if (v.empty()) throw bad_request("messages", "'messages' must not be empty");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < v.size(); ++i) {
    std::string name = "messages[" + std::to_string(i) + "]";
    const json& m = v[i];
    if (!m.is_object()) throw wrong_type(name, "an object", m);
    ChatMessage msg;
    for (const auto& [key, val] : m.items()) {
      std::string pname = name + "." + key;
      if (key == "role") {
        msg.role = as_string(val, pname);
      } else if (key == "content") {
        msg.content = parse_content(val, pname);
      } else if (key == "reasoning_content" || key == "reasoning") {
        if (!val.is_null()) msg.reasoning_content = as_string(val, pname);
      } else if (key == "name" || key == "tool_call_id") {
        if (!val.is_null()) as_string(val, pname);  // accepted; the Qwen3 template does not render them
      } else if (key == "tool_calls" || key == "function_call" || key == "refusal" || key == "audio") {
        if (!val.is_null() && !(val.is_array() && val.empty()))
          throw bad_request(pname, "'" + pname + "' is not supported by this server");
      } else {
        throw bad_request(pname, "unrecognized message field '" + pname + "'");
      }
    }
    if (msg.role.empty()) throw bad_request(name + ".role", "'" + name + ".role' is required");
    if (msg.role == "developer") msg.role = "system";  // OpenAI's newer name for the system role
    static const std::set<std::string> roles = {"system", "user", "assistant", "tool"};
    if (!roles.count(msg.role))
      throw bad_request(name + ".role", "'" + name + ".role' must be system, developer, user, assistant or tool, got '" +
                                            msg.role + "'");
    out.push_back(std::move(msg));
  }
  return out;
}

std::vector<std::string> parse_stop(const json& v) {
  std::vector<std::string> out;
  if (v.is_null()) return out;
  if (v.is_string()) {
    out.push_back(v.get<std::string>());
  } else if (v.is_array()) {
    for (size_t i = 0; i < v.size(); ++i) out.push_back(as_string(v[i], "stop[" + std::to_string(i) + "]"));
  } else {
    throw wrong_type("stop", "a string or a list of strings", v);
  }
  if (out.size() > 64) throw bad_request("stop", "'stop' holds more than 64 strings");
  for (const auto& s : out)
    if (s.empty()) throw bad_request("stop", "'stop' strings must not be empty");
  return out;
}

// logit_bias: {"token id": bias, ...} as OpenAI sends it. Biases are clamped to [-100, 100] as
// vLLM does; the ids are checked against the vocabulary in prepare.
std::map<int32_t, float> parse_logit_bias(const json& v) {
  std::map<int32_t, float> out;
  if (v.is_null()) return out;
  if (!v.is_object()) throw wrong_type("logit_bias", "an object mapping token ids to biases", v);
  for (const auto& [key, bias] : v.items()) {
    int64_t id = 0;
    const char* end = key.data() + key.size();
    auto [at, ec] = std::from_chars(key.data(), end, id);
    if (key.empty() || ec != std::errc() || at != end)
      throw bad_request("logit_bias", "'logit_bias' keys must be token ids (integers), got '" + key + "'");
    if (id < 0 || id > std::numeric_limits<int32_t>::max())
      throw bad_request("logit_bias", "'logit_bias' token id " + key + " is outside the vocabulary");
    if (!bias.is_number())
      throw bad_request("logit_bias",
                        "'logit_bias' values must be numbers, got " + type_name(bias) + " for token " + key);
    out[static_cast<int32_t>(id)] = static_cast<float>(std::clamp(bias.get<double>(), -100.0, 100.0));
  }
  return out;
}

// A sampling feature the engine lacks: accepted only at the value that means "off".
void require_default(const std::string& key, const json& v, bool is_default) {
  if (!is_default)
    throw ApiError(400, "'" + key + "' = " + v.dump() + " is not supported by this server (only its default)", key,
                   "unsupported_parameter");
}

bool number_equals(const json& v, const std::string& key, double x) { return as_number(v, key) == x; }

bool empty_or_null(const json& v) { return v.is_null() || (v.is_array() && v.empty()) || (v.is_object() && v.empty()); }

// Handles the parameters the engine cannot honour; returns false when `key` is none of them.
bool check_unsupported(const std::string& key, const json& v, const CompletionRequest& r) {
  const bool chat = r.endpoint == Endpoint::chat;
  if (key == "length_penalty") {  // beam search only
    require_default(key, v, v.is_null() || number_equals(v, key, 1.0));
  } else if ((key == "prompt_logprobs" && chat) || key == "truncate_prompt_tokens" || key == "allowed_token_ids" ||
             key == "guided_json" || key == "guided_regex" || key == "guided_choice" || key == "guided_grammar" ||
             key == "structured_outputs" || key == "prediction" || key == "audio" || key == "reasoning_effort" ||
             key == "chat_template" || key == "documents") {
    require_default(key, v, v.is_null());
  } else if (key == "suffix") {
    require_default(key, v, v.is_null() || as_string(v, key).empty());
  } else if (key == "best_of") {
    require_default(key, v, v.is_null() || as_int(v, key) == r.n || as_int(v, key) == 1);
  } else if ((key == "echo" && chat) || key == "use_beam_search" || key == "continue_final_message") {
    require_default(key, v, v.is_null() || !as_bool(v, key));
  } else if (key == "bad_words" || key == "tools" || key == "functions") {
    require_default(key, v, empty_or_null(v));
  } else if (key == "tool_choice" || key == "function_call") {
    require_default(key, v, v.is_null() || v == "none" || v == "auto");
  } else if (key == "response_format") {
    require_default(key, v, v.is_null() || (v.is_object() && v.value("type", "") == "text" && v.size() == 1));
  } else if (key == "modalities") {
    require_default(key, v, v.is_null() || v == json::array({"text"}));
  } else {
    return false;
  }
  return true;
}

// The top-level field whose value holds the number nlohmann found out of double's range ("" when
// the body itself is that number): the body parsed again, remembering the last top-level key.
std::string field_of_overflow(std::string_view body) {
  std::string field;
  auto track = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1) field = parsed.get<std::string>();
    return true;
  };
  try {
    const json unused = json::parse(body.begin(), body.end(), track);
  } catch (const json::exception&) {
    // the same overflow, now with the field known
  }
  return field;
}

// A scan of the body without building its tree: throws a 400 naming the top-level field when a list
// in it holds more than `max_items`. Malformed bodies pass (the parser proper names their error).
class ListBound {
 public:
  explicit ListBound(size_t max_items) : max_(max_items) {}
  bool null() { return value(); }
  bool boolean(bool) { return value(); }
  bool number_integer(json::number_integer_t) { return value(); }
  bool number_unsigned(json::number_unsigned_t) { return value(); }
  bool number_float(json::number_float_t, const std::string&) { return value(); }
  bool string(std::string&) { return value(); }
  bool binary(json::binary_t&) { return value(); }
  bool start_object(size_t) {
    value();
    counts_.push_back(kObject);
    return true;
  }
  bool end_object() { return end(); }
  bool start_array(size_t) {
    value();
    counts_.push_back(0);
    return true;
  }
  bool end_array() { return end(); }
  bool key(std::string& k) {
    if (counts_.size() == 1) field_ = k;
    return true;
  }
  bool parse_error(size_t, const std::string&, const nlohmann::detail::exception&) { return false; }

 private:
  static constexpr size_t kObject = static_cast<size_t>(-1);
  bool value() {
    if (counts_.empty() || counts_.back() == kObject) return true;
    if (++counts_.back() > max_)
      throw bad_request(field_, "'" + field_ + "' holds a list of more than " + std::to_string(max_) +
                                    " items, more than any request can use (max_model_len and the prompt limit)");
    return true;
  }
  bool end() {
    counts_.pop_back();
    return true;
  }
  size_t max_;
  std::vector<size_t> counts_;  // per open container: items so far, or kObject
  std::string field_;
};

json parse_body(std::string_view body, const ParseLimits& limits) {
  // Small bodies cannot cost much whatever they hold; larger ones are scanned first.
  if (limits.max_list_items > 0 && body.size() > (64u << 10)) {
    ListBound bound(limits.max_list_items);
    try {
      json::sax_parse(body.begin(), body.end(), &bound);
    } catch (const json::exception&) {
      // malformed: the parser below says how
    }
  }
  json j;
  try {
    j = json::parse(body.begin(), body.end());
  } catch (const json::parse_error& e) {
    // nlohmann also rejects invalid UTF-8 and lone surrogate escapes here.
    throw ApiError(400, std::string("request body is not valid JSON: ") + e.what(), "", "invalid_json");
  } catch (const json::out_of_range& e) {
    // A number beyond double's range (1e400): nlohmann refuses it rather than read infinity.
    const std::string field = field_of_overflow(body);
    if (field.empty())
      throw ApiError(400, std::string("request body holds a number out of range: ") + e.what(), "", "invalid_json");
    throw bad_request(field, "'" + field + "' holds a number out of range: " + e.what());
  } catch (const json::exception& e) {
    throw ApiError(400, std::string("request body is not valid JSON: ") + e.what(), "", "invalid_json");
  }
  if (!j.is_object()) throw ApiError(400, "request body must be a JSON object, got " + type_name(j), "", "invalid_json");
  return j;
}

// What the field loop learns that is settled only once every field is read (a body's fields come
// in any order): which input came, the two max-token spellings, and stream_options, which needs
// `stream`.
struct PendingFields {
  bool have_prompt = false, have_messages = false;
  std::optional<int> max_tokens, max_completion_tokens;
  const json* stream_options = nullptr;
  bool chat_logprobs = false;          // chat's `logprobs`
  std::optional<int> top_logprobs;     // chat's
};

// Each of the field functions below handles one group of fields and returns false for a key
// outside its group; check_unsupported (above) is the last group.

// The input: model, the prompt or the messages, and how the chat template renders them.
bool parse_input_field(const std::string& key, const json& v, CompletionRequest& r, PendingFields& f) {
  const bool chat = r.endpoint == Endpoint::chat;
  if (key == "model") {
    if (!v.is_null()) r.model = as_string(v, key);
  } else if (key == "prompt" && !chat) {
    r.prompts = parse_prompt(v);
    f.have_prompt = true;
  } else if (key == "messages" && chat) {
    r.messages = parse_messages(v);
    f.have_messages = true;
  } else if (key == "add_generation_prompt" && chat) {
    r.add_generation_prompt = as_bool(v, key);
  } else if (key == "chat_template_kwargs" && chat) {
    if (v.is_null()) return true;
    if (!v.is_object()) throw wrong_type(key, "an object", v);
    for (const auto& [k2, v2] : v.items()) {
      if (k2 != "enable_thinking")
        throw bad_request(key, "chat_template_kwargs." + k2 + " is not supported (only enable_thinking)");
      r.enable_thinking = as_bool(v2, "chat_template_kwargs.enable_thinking");
    }
  } else {
    return false;
  }
  return true;
}

// Sampling: temperature, top_p, top_k, min_p, seed and n (read before the loop). null = the
// server's default.
bool parse_sampling_field(const std::string& key, const json& v, CompletionRequest& r) {
  if (v.is_null() && (key == "temperature" || key == "top_p" || key == "top_k" || key == "min_p" || key == "seed"))
    return true;
  if (key == "temperature") {
    r.temperature = number_where(v, key, [](double x) { return x >= 0 && x <= 2; }, "in [0, 2]");
  } else if (key == "top_p") {
    r.top_p = number_where(v, key, [](double x) { return x > 0 && x <= 1; }, "in (0, 1]");
  } else if (key == "top_k") {
    // vLLM takes both -1 and 0 as "off".
    r.top_k = static_cast<int>(int_in_range(v, key, -1, std::numeric_limits<int32_t>::max()));
  } else if (key == "min_p") {
    r.min_p = number_where(v, key, [](double x) { return x >= 0 && x <= 1; }, "in [0, 1]");
  } else if (key == "seed") {
    r.seed = as_int(v, key);
  } else if (key == "priority") {
    if (!v.is_null())
      r.priority = static_cast<int>(int_in_range(v, key, std::numeric_limits<int32_t>::min(),
                                                 std::numeric_limits<int32_t>::max()));
  } else if (key == "n") {
    // parsed before the loop
  } else {
    return false;
  }
  return true;
}

// What steers the sampled tokens: the three penalties, logit_bias and min_tokens.
bool parse_steering_field(const std::string& key, const json& v, CompletionRequest& r) {
  auto penalty = [](double x) { return x >= -2 && x <= 2; };
  if (key == "repetition_penalty") {
    if (!v.is_null())
      r.repetition_penalty = number_where(
          v, key, [](double x) { return x > 0 && x <= std::numeric_limits<float>::max(); }, "a finite number > 0");
  } else if (key == "presence_penalty") {
    if (!v.is_null()) r.presence_penalty = number_where(v, key, penalty, "in [-2, 2]");
  } else if (key == "frequency_penalty") {
    if (!v.is_null()) r.frequency_penalty = number_where(v, key, penalty, "in [-2, 2]");
  } else if (key == "logit_bias") {
    r.logit_bias = parse_logit_bias(v);
  } else if (key == "min_tokens") {
    if (!v.is_null()) r.min_tokens = static_cast<int>(int_in_range(v, key, 0, std::numeric_limits<int32_t>::max()));
  } else {
    return false;
  }
  return true;
}

// Log-probabilities and echo. Completions: `logprobs` is a count, `echo` and vLLM's
// `prompt_logprobs` exist; chat: `logprobs` is a switch and `top_logprobs` the count.
bool parse_logprobs_field(const std::string& key, const json& v, CompletionRequest& r, PendingFields& f) {
  const bool chat = r.endpoint == Endpoint::chat;
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();  // --max-logprobs is checked in prepare
  if (key == "logprobs" && chat) {
    f.chat_logprobs = !v.is_null() && as_bool(v, key);
  } else if (key == "top_logprobs" && chat) {
    if (!v.is_null()) f.top_logprobs = static_cast<int>(int_in_range(v, key, 0, kMax));
  } else if (key == "logprobs") {
    // false, which older clients send for "none", is taken as null.
    if (!v.is_null() && !(v.is_boolean() && !v.get<bool>()))
      r.logprobs = static_cast<int>(int_in_range(v, key, 0, kMax));
  } else if (key == "prompt_logprobs" && !chat) {
    if (!v.is_null()) r.prompt_logprobs = static_cast<int>(int_in_range(v, key, 0, kMax));
  } else if (key == "echo" && !chat) {
    r.echo = !v.is_null() && as_bool(v, key);
  } else {
    return false;
  }
  return true;
}

// Stopping: the token limits, EOS, stop strings and stop token ids.
bool parse_stopping_field(const std::string& key, const json& v, CompletionRequest& r, PendingFields& f) {
  const bool chat = r.endpoint == Endpoint::chat;
  if (key == "max_tokens") {
    if (!v.is_null()) f.max_tokens = static_cast<int>(int_in_range(v, key, 1, std::numeric_limits<int32_t>::max()));
  } else if (key == "max_completion_tokens" && chat) {
    if (!v.is_null())
      f.max_completion_tokens = static_cast<int>(int_in_range(v, key, 1, std::numeric_limits<int32_t>::max()));
  } else if (key == "ignore_eos") {
    r.ignore_eos = as_bool(v, key);
  } else if (key == "stop") {
    r.stop = parse_stop(v);
  } else if (key == "stop_token_ids") {
    if (!v.is_null()) {
      if (!v.is_array()) throw wrong_type(key, "a list of token ids", v);
      r.stop_token_ids = as_token_ids(v, key);
    }
  } else if (key == "include_stop_str_in_output") {
    r.include_stop_str_in_output = as_bool(v, key);
  } else {
    return false;
  }
  return true;
}

// Output: detokenizing and streaming.
bool parse_output_field(const std::string& key, const json& v, CompletionRequest& r, PendingFields& f) {
  if (key == "skip_special_tokens") {
    r.skip_special_tokens = as_bool(v, key);
  } else if (key == "spaces_between_special_tokens") {
    require_default(key, v, as_bool(v, key));  // the Qwen3 decoder never adds spaces
  } else if (key == "add_special_tokens") {
    as_bool(v, key);  // Qwen3's tokenizer adds no special tokens either way
  } else if (key == "stream") {
    if (!v.is_null()) r.stream = as_bool(v, key);
  } else if (key == "stream_options") {
    if (!v.is_null()) f.stream_options = &v;
  } else {
    return false;
  }
  return true;
}

// Bookkeeping fields: type-checked, no effect on the output.
bool check_bookkeeping_field(const std::string& key, const json& v) {
  if (key == "user" || key == "request_id" || key == "service_tier") {
    if (!v.is_null()) as_string(v, key);
  } else if (key == "metadata") {
    if (!v.is_null() && !v.is_object()) throw wrong_type(key, "an object", v);
  } else if (key == "store" || key == "parallel_tool_calls") {
    if (!v.is_null()) as_bool(v, key);
  } else {
    return false;
  }
  return true;
}

void parse_stream_options(const json& options, CompletionRequest& r) {
  if (!r.stream) throw bad_request("stream_options", "'stream_options' is only allowed when 'stream' is true");
  if (!options.is_object()) throw wrong_type("stream_options", "an object", options);
  for (const auto& [k2, v2] : options.items()) {
    if (k2 == "include_usage") {
      r.include_usage = !v2.is_null() && as_bool(v2, "stream_options.include_usage");
    } else if (k2 == "continuous_usage_stats") {
      require_default("stream_options.continuous_usage_stats", v2, v2.is_null() || !as_bool(v2, k2));
    } else {
      throw bad_request("stream_options", "unrecognized field stream_options." + k2);
    }
  }
}

// Chat's top_logprobs counts only once logprobs is true (OpenAI's and vLLM's rule).
void settle_chat_logprobs(const PendingFields& f, CompletionRequest& r) {
  if (f.chat_logprobs) r.logprobs = f.top_logprobs.value_or(0);
  else if (f.top_logprobs.value_or(0) > 0)
    throw bad_request("top_logprobs", "'top_logprobs' needs 'logprobs' to be true");
}

}  // namespace

CompletionRequest parse_request(std::string_view body, Endpoint endpoint, const ParseLimits& limits) {
  const json j = parse_body(body, limits);
  CompletionRequest r;
  r.endpoint = endpoint;
  const bool chat = endpoint == Endpoint::chat;
  // n first: best_of is checked against it.
  if (auto it = j.find("n"); it != j.end() && !it->is_null()) r.n = static_cast<int>(int_in_range(*it, "n", 1, 128));

  PendingFields f;
  for (const auto& [key, v] : j.items()) {
    // The groups' keys are disjoint, so the order they are asked in does not matter.
    const bool known = parse_input_field(key, v, r, f) || parse_sampling_field(key, v, r) ||
                       parse_steering_field(key, v, r) || parse_logprobs_field(key, v, r, f) ||
                       parse_stopping_field(key, v, r, f) || parse_output_field(key, v, r, f) ||
                       check_bookkeeping_field(key, v) || check_unsupported(key, v, r);
    if (!known)
      throw ApiError(400, "unrecognized request argument supplied: '" + key + "'", key, "unrecognized_argument");
  }

  if (!chat && !f.have_prompt) throw bad_request("prompt", "'prompt' is required");
  if (chat && !f.have_messages) throw bad_request("messages", "'messages' is required");
  r.max_tokens = f.max_completion_tokens ? f.max_completion_tokens : f.max_tokens;
  if (f.stream_options) parse_stream_options(*f.stream_options, r);
  if (chat) settle_chat_logprobs(f, r);
  // As vLLM: the engine hands prompt logprobs over with the finished request, not as it streams.
  if (r.prompt_logprobs && r.stream)
    throw bad_request("prompt_logprobs", "'prompt_logprobs' is not available when 'stream' is true");
  return r;
}

}  // namespace nanovllm::server
