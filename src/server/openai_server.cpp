// OpenAIServer: routes, authentication, CORS, error shapes, and the path of a generate request:
// the I/O thread hands it to a worker (parse, tokenize), the engine loop admits and runs it, and
// its events reach the client through the worker (a whole response) or the I/O thread (a stream).
#include "server/openai_server.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <thread>

#include <nlohmann/json.hpp>

#include "model/generation_config.h"
#include "server/api_error.h"
#include "server/generation.h"
#include "server/sse.h"
#include "tokenizer/tokenizer.h"

namespace nanovllm::server {
namespace {

using json = nlohmann::json;

constexpr const char* kVersion = "0.1.0";  // pyproject.toml's
constexpr int kQueueRetryAfterS = 5;       // Retry-After of a request that waited out --max-queue-wait

http::Response json_response(int status, const json& body) {
  http::Response r;
  r.status = status;
  r.body = dump_json(body);
  return r;
}

http::Response error_response(const ApiError& e) {
  http::Response r = json_response(e.status(), e.to_json());
  if (e.status() == 503) r.headers.emplace_back("Retry-After", std::to_string(kQueueRetryAfterS));
  return r;
}

// The body as a JSON object, for the small routes (/tokenize, /detokenize).
json parse_object(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    throw ApiError(400, "request body must be a JSON object", "", "invalid_json");
  return j;
}

}  // namespace

// What one generate request keeps alive while it is queued and runs.
// The exchange owns it (attach): it lives until the response has gone out or the client has gone.
struct OpenAIServer::Call {
  std::weak_ptr<http::Exchange> ex;
  CompletionRequest req;
  PreparedRequest prep;
  std::shared_ptr<RequestChannel> channel;
  std::unique_ptr<Generation> gen;
  std::mutex mu;                         // the Generation and `finished` until `streaming` is set
  bool finished = false;                 // answered in full (or given up)
  std::atomic<bool> streaming{false};    // the stream's head went out: events go to CallStream
  std::atomic<bool> drain_queued{false};
};

// A streamed call's body: each read takes the channel's events and renders their chunks.
class OpenAIServer::CallStream : public http::BodySource {
 public:
  explicit CallStream(std::shared_ptr<Call> call) : call_(std::move(call)) {}
  // The I/O thread, without locks: once `streaming` is set, drain() leaves the Generation and
  // `finished` to this alone, and a channel the engine thread holds is read at the next wake.
  bool read(std::string& out) override {
    std::vector<ChoiceEvent> events;
    call_->channel->try_take_events(events);
    try {
      return call_->finished = call_->gen->stream(events, out);
    } catch (const std::exception& e) {
      // Past the head there is no status left to send: log, and end the stream.
      std::fprintf(stderr, "nanovllm serve: stream failed: %s\n", e.what());
      out += sse_done();
      return call_->finished = true;
    }
  }

 private:
  std::shared_ptr<Call> call_;
};

OpenAIServer::OpenAIServer(LLM& llm, ServerConfig config)
    : llm_(llm), config_(std::move(config)),
      metrics_(config_.served_model_name.empty() ? config_.model_dir : config_.served_model_name),
      engine_(llm, metrics_, EngineLoopOptions{config_.max_pending, config_.max_queue_wait_s, 0, config_.engine_nice,
                                           llm.config().priority_scheduling()}),
      pool_(config_.http_threads > 0 ? config_.http_threads
                                     : std::max(2, static_cast<int>(std::thread::hardware_concurrency()))) {
  if (config_.served_model_name.empty()) config_.served_model_name = config_.model_dir;
  if (!llm.has_tokenizer())
    throw std::runtime_error("serve: the model directory '" + config_.model_dir +
                             "' has no tokenizer.json; the server needs one to read and write text");
  // A request larger than --max-pending could never be admitted: the cap is at most that.
  config_.max_seqs_per_request = std::min(config_.max_seqs_per_request, config_.max_pending);
  if (config_.max_request_bytes > config_.max_buffered_request_bytes)
    throw std::runtime_error("serve: --max-request-bytes is above --max-buffered-request-bytes");
  // A chat template that does not parse fails here, naming its file and line, not on each request.
  llm.tokenizer().check_chat_template();

  limits_.max_model_len = llm.config().max_model_len;
  limits_.vocab_size = llm.vocab_size();  // can exceed the tokenizer's: padded rows
  limits_.max_logprobs = llm.config().max_logprobs;
  // No token stands for more text than its own string (see Tokenizer::max_token_bytes); a
  // normalizer can shrink text (NFKC maps a 3-byte full-width letter to 1 byte), hence the 4.
  if (const size_t per_token = llm.tokenizer().max_token_bytes(); per_token > 0)
    limits_.max_prompt_bytes = static_cast<size_t>(limits_.max_model_len) * (4 * per_token);
  defaults_.params = llm.default_sampling_params();
  // Whether the generation config sets max_new_tokens is not in default_sampling_params(), whose
  // max_tokens always has a value: read the same file the engine read.
  defaults_.max_new_tokens =
      load_generation_defaults(llm.config().model, llm.config().generation_config).max_new_tokens;

  // Every connection is a descriptor: use all the process may have, and keep a reserve for the
  // model's files, the engine and the listener.
  const int64_t fd_limit = http::raise_fd_limit();
  constexpr int64_t kReserve = 256;
  const int64_t most = std::max<int64_t>(16, fd_limit - kReserve);
  if (config_.max_connections > most)
    throw std::runtime_error("serve: --max-connections " + std::to_string(config_.max_connections) +
                             " needs more file descriptors than RLIMIT_NOFILE allows (" + std::to_string(fd_limit) +
                             ", less " + std::to_string(kReserve) + " kept for the server's own): raise it (ulimit -n)");
  http::Limits lim;
  lim.max_connections = config_.max_connections > 0 ? config_.max_connections : static_cast<int>(std::min<int64_t>(most, 65536));
  lim.max_request_bytes = config_.max_request_bytes;
  lim.max_buffered_body_bytes = config_.max_buffered_request_bytes;
  lim.keep_alive_s = config_.keep_alive_s;
  lim.headers_timeout_s = config_.headers_timeout_s;
  lim.body_timeout_s = config_.body_timeout_s;
  http_ = std::make_unique<http::Server>(
      lim, [this](std::shared_ptr<http::Exchange> ex) { handle(ex); },
      [this](const http::Request& req, http::Response& res) { decorate(req, res); });

  const EngineConfig& ec = llm.config();
  const EngineStats st = llm.stats();
  const bool cpu = ec.device && *ec.device == DeviceKind::cpu;
  metrics_.set_cache_config({{"block_size", std::to_string(ec.kvcache_block_size)},
                             {"cache_dtype", "auto"},
                             {"enable_prefix_caching", ec.enable_prefix_caching ? "True" : "False"},
                             {"gpu_memory_utilization", std::to_string(ec.gpu_memory_utilization)},
                             {"num_cpu_blocks", cpu ? std::to_string(st.num_kvcache_blocks) : "None"},
                             {"num_gpu_blocks", cpu ? "None" : std::to_string(st.num_kvcache_blocks)},
                             {"swap_space", "0"}});
  metrics_.set_extra([this](std::string& out) { render_http_metrics(out); });
}

OpenAIServer::~OpenAIServer() { engine_.stop(); }

void OpenAIServer::bind() { http_->bind(config_.host, config_.port); }

int OpenAIServer::port() const { return http_->port(); }

void OpenAIServer::serve() {
  engine_.start();
  http_->run();
  engine_.stop();
}

void OpenAIServer::shutdown() {
  std::call_once(shutdown_once_, [this] {
    accepting_ = false;
    http_->stop_accepting();
    engine_.stop();  // every live request ends with "abort"; queued ones get 503
    // Let the responses write their last chunk and [DONE] before the connections close.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (http_->active_exchanges() > 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    http_->stop();
  });
}

// ---- routing (I/O thread) ----

void OpenAIServer::handle(const std::shared_ptr<http::Exchange>& ex) {
  const http::Request& req = ex->request();
  const std::string& m = req.method;
  const std::string& path = req.path;
  if (m == "OPTIONS" && preflight(ex)) return;
  if (!config_.api_key.empty() && path.rfind("/v1", 0) == 0 &&
      req.header("authorization") != "Bearer " + config_.api_key) {
    ex->reply(error_response(
        ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'", "", "invalid_api_key")));
    return;
  }
  if (path == "/health" && (m == "GET" || m == "HEAD")) {
    if (accepting_) ex->reply(json_response(200, {{"status", "ok"}}));
    else ex->reply(error_response(ApiError(503, "server is shutting down", "", "shutting_down")));
  } else if (path == "/metrics" && m == "GET") {
    http::Response r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = metrics_.render();
    ex->reply(std::move(r));
  } else if (path == "/v1/models" && m == "GET") {
    http::Response r;
    r.body = models_json();
    ex->reply(std::move(r));
  } else if (path == "/version" && m == "GET") {
    ex->reply(json_response(200, {{"version", kVersion}}));
  } else if (path == "/v1/completions" && m == "POST") {
    pool_.post([this, ex] { generate(ex, Endpoint::completions); });
  } else if (path == "/v1/chat/completions" && m == "POST") {
    pool_.post([this, ex] { generate(ex, Endpoint::chat); });
  } else if (path == "/tokenize" && m == "POST") {
    pool_.post([this, ex] { tokenize(ex); });
  } else if (path == "/detokenize" && m == "POST") {
    pool_.post([this, ex] { detokenize(ex); });
  } else {
    ex->reply(error_response(ApiError(404, "no route for " + m + " " + path, "", "unknown_url")));
  }
}

// ---- CORS (vLLM's: Starlette's CORSMiddleware, any method and header, origins as configured) ----

namespace {
bool origin_allowed(const std::vector<std::string>& allowed, const std::string& origin) {
  return std::find(allowed.begin(), allowed.end(), "*") != allowed.end() ||
         std::find(allowed.begin(), allowed.end(), origin) != allowed.end();
}
}  // namespace

void OpenAIServer::decorate(const http::Request& req, http::Response& res) {
  metrics_.on_http(res.status);
  const std::string origin = req.header("origin");
  if (origin.empty() || !origin_allowed(config_.allowed_origins, origin)) return;
  const bool any = std::find(config_.allowed_origins.begin(), config_.allowed_origins.end(), "*") !=
                   config_.allowed_origins.end();
  res.headers.emplace_back("Access-Control-Allow-Origin", any ? "*" : origin);
  if (!any) res.headers.emplace_back("Vary", "Origin");
}

bool OpenAIServer::preflight(const std::shared_ptr<http::Exchange>& ex) {
  const http::Request& req = ex->request();
  const std::string origin = req.header("origin");
  const std::string method = req.header("access-control-request-method");
  if (origin.empty() || method.empty()) return false;  // not a preflight: routed (and 404) as usual
  http::Response r;
  r.content_type = "text/plain; charset=utf-8";
  if (!origin_allowed(config_.allowed_origins, origin)) {
    r.status = 400;
    r.body = "Disallowed CORS origin";
    ex->reply(std::move(r));
    return true;
  }
  r.headers = {{"Access-Control-Allow-Methods", "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"},
               {"Access-Control-Max-Age", "600"}};
  if (std::string h = req.header("access-control-request-headers"); !h.empty())
    r.headers.emplace_back("Access-Control-Allow-Headers", h);
  r.body = "OK";
  ex->reply(std::move(r));
  return true;
}

// ---- generate (workers and the engine thread) ----

void OpenAIServer::generate(const std::shared_ptr<http::Exchange>& ex, Endpoint endpoint) {
  auto call = std::make_shared<Call>();
  call->ex = ex;
  ex->attach(call);
  try {
    if (!accepting_) throw ApiError(503, "server is shutting down", "", "shutting_down");
    // Lists longer than any prompt could be are refused while scanning, before the tree is built.
    const ParseLimits parse_limits{static_cast<size_t>(limits_.max_model_len) + 1024};
    call->req = parse_request(ex->request().body, endpoint, parse_limits);
    const CompletionRequest& r = call->req;
    if (!r.model.empty() && r.model != config_.served_model_name)
      throw ApiError(400, "The model '" + r.model + "' does not exist; this server serves '" +
                              config_.served_model_name + "'",
                     "model", "model_not_found");
    const std::string& policy = llm_.config().scheduling_policy;  // vLLM's --scheduling-policy
    if (r.priority != 0 && !llm_.config().priority_scheduling())
      throw bad_request("priority", "'priority' = " + std::to_string(r.priority) +
                                        ": the server's --scheduling-policy is " + policy +
                                        ", which serves in arrival order; only 0 is allowed (start it with "
                                        "--scheduling-policy priority)");
    const int64_t seqs = static_cast<int64_t>(endpoint == Endpoint::chat ? 1 : r.prompts.size()) * r.n;
    if (seqs > config_.max_seqs_per_request)
      throw bad_request(r.n > 1 ? "n" : "prompt",
                        "this request asks for " + std::to_string(seqs) + " sequences (prompts x n), more than the " +
                            std::to_string(config_.max_seqs_per_request) +
                            " one request may have (--max-seqs-per-request)");
    call->prep = prepare(call->req, llm_.tokenizer(), limits_, defaults_);
    ex->release_body();  // parsed and tokenized: its bytes go back to the budget
    call->gen = std::make_unique<Generation>(call->req, call->prep, llm_.tokenizer(), config_.served_model_name);
    call->channel = std::make_shared<RequestChannel>();
    std::weak_ptr<Call> weak = call;
    call->channel->set_notify([this, weak] {
      if (auto c = weak.lock()) on_channel(c);
    });
    switch (engine_.submit(call->channel, std::move(call->prep.subs))) {
      case Admission::accepted: break;
      case Admission::queue_full:
        throw ApiError(503, "the server has too many pending requests (--max-pending " +
                                std::to_string(config_.max_pending) + "); retry later",
                       "", "queue_full");
      case Admission::shutting_down: throw ApiError(503, "server is shutting down", "", "shutting_down");
    }
    // Registered once submitted: a client already gone aborts it at once.
    ex->on_gone([this, weak] {
      if (auto c = weak.lock()) engine_.abort(c->channel);
    });
  } catch (const ApiError& e) {
    ex->reply(error_response(e));
  }
}

void OpenAIServer::on_channel(const std::shared_ptr<Call>& call) {
  // The engine thread: no work here beyond waking whoever renders.
  if (call->streaming) {
    if (auto ex = call->ex.lock()) ex->wake();
    return;
  }
  if (!call->drain_queued.exchange(true)) pool_.post([this, call] { drain(call); });
}

void OpenAIServer::drain(const std::shared_ptr<Call>& call) {
  call->drain_queued = false;
  std::lock_guard lk(call->mu);
  if (call->streaming || call->finished) return;  // streaming first: its `finished` is the I/O thread's
  const std::shared_ptr<http::Exchange> ex = call->ex.lock();
  if (!ex) return;  // the client has gone
  std::string error;
  switch (call->channel->admission(&error)) {
    case AdmitState::pending: return;
    case AdmitState::refused:
      call->finished = true;
      ex->reply(error_response(ApiError(400, error, "", "invalid_value")));
      return;
    case AdmitState::queue_timeout:
      call->finished = true;
      ex->reply(error_response(ApiError(
          503,
          "the server stayed at --max-pending " + std::to_string(config_.max_pending) + " sequences for " +
              std::to_string(static_cast<int>(config_.max_queue_wait_s)) + " s (--max-queue-wait); retry later",
          "", "queue_full")));
      return;
    case AdmitState::shutting_down:
      call->finished = true;
      ex->reply(error_response(ApiError(503, "server is shutting down", "", "shutting_down")));
      return;
    case AdmitState::admitted: break;
  }
  if (call->req.stream) {
    call->streaming = true;
    http::Response head;
    head.content_type = "text/event-stream";
    head.headers.emplace_back("Cache-Control", "no-cache");
    ex->stream(std::move(head), std::make_shared<CallStream>(call));
    return;
  }
  std::vector<ChoiceEvent> events;
  call->channel->take_events(events);
  if (!call->gen->collect(events)) return;
  call->finished = true;
  try {
    ex->reply(json_response(200, call->gen->response()));
  } catch (const ApiError& e) {
    ex->reply(error_response(e));
  }
}

// ---- /tokenize, /detokenize (vLLM's) ----

void OpenAIServer::tokenize(const std::shared_ptr<http::Exchange>& ex) {
  try {
    const json j = parse_object(ex->request().body);
    if (auto m = j.find("model"); m != j.end() && m->is_string() && *m != config_.served_model_name)
      throw ApiError(400, "The model '" + m->get<std::string>() + "' does not exist", "model", "model_not_found");
    auto flag = [&](const char* key, bool def) {
      auto it = j.find(key);
      if (it == j.end() || it->is_null()) return def;
      if (!it->is_boolean()) throw bad_request(key, std::string("'") + key + "' must be a boolean");
      return it->get<bool>();
    };
    const Tokenizer& tok = llm_.tokenizer();
    std::vector<int32_t> ids;
    if (j.contains("messages")) {
      // The chat as /v1/chat/completions renders it, its fields checked the same way.
      json chat = json::object();
      for (const char* k : {"messages", "add_generation_prompt", "chat_template_kwargs"})
        if (j.contains(k)) chat[k] = j[k];
      const CompletionRequest r = parse_request(dump_json(chat), Endpoint::chat);
      std::string text;
      try {
        text = tok.apply_chat_template(r.messages, r.add_generation_prompt, r.enable_thinking);
      } catch (const std::exception& e) {
        throw bad_request("messages", std::string("cannot apply the chat template: ") + e.what());
      }
      ids = tok.encode(text, flag("add_special_tokens", false));
    } else {
      auto p = j.find("prompt");
      if (p == j.end() || !p->is_string()) throw bad_request("prompt", "'prompt' (a string) or 'messages' is required");
      try {
        ids = tok.encode(p->get<std::string>(), flag("add_special_tokens", true));
      } catch (const std::exception& e) {
        throw bad_request("prompt", std::string("cannot tokenize 'prompt': ") + e.what());
      }
    }
    ex->release_body();
    json out = {{"count", ids.size()}, {"max_model_len", limits_.max_model_len}, {"tokens", ids}};
    if (flag("return_token_strs", false)) {
      json strs = json::array();
      for (int32_t id : ids) strs.push_back(tok.decode({id}));
      out["token_strs"] = std::move(strs);
    }
    ex->reply(json_response(200, out));
  } catch (const ApiError& e) {
    ex->reply(error_response(e));
  }
}

void OpenAIServer::detokenize(const std::shared_ptr<http::Exchange>& ex) {
  try {
    const json j = parse_object(ex->request().body);
    if (auto m = j.find("model"); m != j.end() && m->is_string() && *m != config_.served_model_name)
      throw ApiError(400, "The model '" + m->get<std::string>() + "' does not exist", "model", "model_not_found");
    auto t = j.find("tokens");
    if (t == j.end() || !t->is_array()) throw bad_request("tokens", "'tokens' (a list of token ids) is required");
    std::vector<int32_t> ids;
    for (const json& x : *t) {
      if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= limits_.vocab_size)
        throw bad_request("tokens", "'tokens' holds " + x.dump() + ", not a token id of this model");
      ids.push_back(static_cast<int32_t>(x.get<int64_t>()));
    }
    std::string text;
    try {
      text = llm_.tokenizer().decode(ids);
    } catch (const std::exception& e) {
      throw bad_request("tokens", std::string("cannot decode 'tokens': ") + e.what());
    }
    ex->reply(json_response(200, {{"prompt", text}}));
  } catch (const ApiError& e) {
    ex->reply(error_response(e));
  }
}

// ---- small answers ----

std::string OpenAIServer::models_json() const {
  json model = {{"id", config_.served_model_name},
                {"object", "model"},
                {"created", std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count()},
                {"owned_by", "nanovllm"},
                {"root", config_.model_dir},
                {"parent", nullptr},
                {"max_model_len", limits_.max_model_len}};
  return dump_json({{"object", "list"}, {"data", json::array({model})}});
}

void OpenAIServer::render_http_metrics(std::string& o) const {
  const http::Stats s = http_->stats();
  auto gauge = [&](const char* name, const char* type, const char* help, int64_t v) {
    o += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " +
         std::to_string(v) + "\n";
  };
  gauge("nanovllm:http_connections", "gauge", "Open HTTP connections.", s.open_connections);
  gauge("nanovllm:http_idle_connections", "gauge", "Idle keep-alive HTTP connections.", s.idle_connections);
  gauge("nanovllm:http_connections_accepted_total", "counter", "HTTP connections accepted.", s.accepted_total);
  gauge("nanovllm:http_connections_refused_total", "counter", "HTTP connections refused at --max-connections.",
        s.refused_total);
  gauge("nanovllm:http_idle_evicted_total", "counter", "Idle keep-alive connections closed for a new one.",
        s.evicted_idle_total);
  gauge("nanovllm:http_header_timeouts_total", "counter", "Connections closed: headers not complete in time.",
        s.header_timeouts_total);
  gauge("nanovllm:http_body_timeouts_total", "counter", "Requests refused: body (or room for it) not in time.",
        s.body_timeouts_total);
  gauge("nanovllm:http_keep_alive_closes_total", "counter", "Idle keep-alive connections closed at the limit.",
        s.keep_alive_closes_total);
  gauge("nanovllm:http_buffered_body_bytes", "gauge", "Request body bytes held, read and not yet tokenized.",
        s.buffered_body_bytes);
}

}  // namespace nanovllm::server
