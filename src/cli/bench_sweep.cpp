// `bench --sweep FIELD=V1,V2,...`: a fresh engine per value of one EngineConfig field, the
// workload run on each, and the throughput-latency curve written as CSV and SVG.
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <stdexcept>
#include <type_traits>

#include "cli/bench.h"
#include "cli/bench/svg_chart.h"

namespace nanovllm::cli {

namespace {
template <class T>
T parse_number(const std::string& field, const std::string& text) {
  size_t used = 0;
  T v{};
  try {
    if constexpr (std::is_same_v<T, int>) v = std::stoi(text, &used);
    else if constexpr (std::is_same_v<T, uint64_t>) v = std::stoull(text, &used);
    else v = T(std::stod(text, &used));
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size())
    throw std::invalid_argument("--sweep " + field + ": '" + text + "' is not a number");
  return v;
}

bool parse_bool(const std::string& field, const std::string& text) {
  if (text == "1" || text == "true" || text == "on") return true;
  if (text == "0" || text == "false" || text == "off") return false;
  throw std::invalid_argument("--sweep " + field + ": '" + text + "' is not true/false");
}

using Setter = std::function<void(EngineConfig&, const std::string&, const std::string&)>;

const std::map<std::string, Setter>& setters() {
  auto int_field = [](int EngineConfig::*m, int least) {
    return Setter([m, least](EngineConfig& c, const std::string& f, const std::string& v) {
      int x = parse_number<int>(f, v);
      if (x < least) throw std::invalid_argument("--sweep " + f + ": " + v + " is below " + std::to_string(least));
      c.*m = x;
    });
  };
  static const std::map<std::string, Setter> s = {
      {"max_num_batched_tokens", int_field(&EngineConfig::max_num_batched_tokens, 1)},
      {"max_num_seqs", int_field(&EngineConfig::max_num_seqs, 1)},
      {"max_model_len", int_field(&EngineConfig::max_model_len, 1)},
      {"tensor_parallel_size", int_field(&EngineConfig::tensor_parallel_size, 1)},
      {"kvcache_block_size", int_field(&EngineConfig::kvcache_block_size, 1)},
      {"num_kvcache_blocks", int_field(&EngineConfig::num_kvcache_blocks, -1)},
      {"num_threads", int_field(&EngineConfig::num_threads, 0)},
      {"gpu_memory_utilization",
       [](EngineConfig& c, const std::string& f, const std::string& v) { c.gpu_memory_utilization = parse_number<float>(f, v); }},
      {"cpu_kvcache_space_gb",
       [](EngineConfig& c, const std::string& f, const std::string& v) { c.cpu_kvcache_space_gb = parse_number<double>(f, v); }},
      {"seed", [](EngineConfig& c, const std::string& f, const std::string& v) { c.seed = parse_number<uint64_t>(f, v); }},
      {"enforce_eager", [](EngineConfig& c, const std::string& f, const std::string& v) { c.enforce_eager = parse_bool(f, v); }},
      {"enable_prefix_caching",
       [](EngineConfig& c, const std::string& f, const std::string& v) { c.enable_prefix_caching = parse_bool(f, v); }},
      {"device", [](EngineConfig& c, const std::string& f, const std::string& v) {
         try {
           c.device = parse_device(v);
         } catch (const std::invalid_argument&) {
           throw std::invalid_argument("--sweep " + f + ": '" + v + "' is not cpu, cuda or auto");
         }
       }}};
  return s;
}

std::string canonical_field(std::string f) {
  for (auto& ch : f)
    if (ch == '-') ch = '_';
  if (f == "block_size") f = "kvcache_block_size";  // the CLI flag's name
  return f;
}

double number_or_nan(const nlohmann::json& j, const char* ptr) {
  auto p = nlohmann::json::json_pointer(ptr);
  return j.contains(p) && j[p].is_number() ? j[p].get<double>() : std::nan("");
}

const char* const kCsvColumns[] = {"/time_s",       "/throughput_tok_s", "/prefill_tok_s", "/decode_tok_s",
                                   "/ttft_ms/mean", "/ttft_ms/p50",      "/ttft_ms/p99",   "/tpot_ms/mean",
                                   "/tpot_ms/p50",  "/tpot_ms/p99",      "/e2e_ms/mean",   "/e2e_ms/p50",
                                   "/e2e_ms/p99",   "/kvcache_blocks",   "/num_preemptions"};
}  // namespace

SweepSpec parse_sweep(const std::string& text) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size())
    throw std::invalid_argument("--sweep '" + text + "': expected FIELD=V1,V2,... (e.g. max_num_seqs=1,8,32)");
  SweepSpec s{canonical_field(text.substr(0, eq)), {}};
  if (!setters().count(s.field)) {
    std::string known;
    for (const auto& [name, _] : setters()) known += (known.empty() ? "" : ", ") + name;
    throw std::invalid_argument("--sweep: unknown EngineConfig field '" + s.field + "' (known: " + known + ")");
  }
  std::stringstream in(text.substr(eq + 1));
  for (std::string v; std::getline(in, v, ',');) {
    if (v.empty()) throw std::invalid_argument("--sweep '" + text + "': empty value");
    EngineConfig probe;
    set_config_field(probe, s.field, v);  // reject a bad value now, not after the first runs
    s.values.push_back(v);
  }
  return s;
}

void set_config_field(EngineConfig& config, const std::string& field, const std::string& value) {
  auto it = setters().find(canonical_field(field));
  if (it == setters().end()) throw std::invalid_argument("--sweep: unknown EngineConfig field '" + field + "'");
  it->second(config, it->first, value);
}

nlohmann::json run_sweep(const EngineConfig& base, const Workload& workload, const BenchOptions& opts) {
  const SweepSpec spec = parse_sweep(opts.sweep);
  nlohmann::json out = {{"sweep", {{"field", spec.field}, {"values", spec.values}}}, {"points", nlohmann::json::array()}};
  for (const auto& value : spec.values) {
    EngineConfig config = base;
    set_config_field(config, spec.field, value);
    std::fprintf(stderr, "sweep %s=%s ...\n", spec.field.c_str(), value.c_str());
    nlohmann::json point = run_offline(config, workload, opts);
    point["value"] = value;
    std::fprintf(stderr, "sweep %s=%s: %.2f tok/s, TPOT p50 %.2f ms\n", spec.field.c_str(), value.c_str(),
                 number_or_nan(point, "/throughput_tok_s"), number_or_nan(point, "/tpot_ms/p50"));
    out["points"].push_back(std::move(point));
  }
  const std::string csv_path = opts.out_prefix + ".csv", svg_path = opts.out_prefix + ".svg";
  auto write = [](const std::string& path, const std::string& text) {
    std::ofstream f(path);
    if (!(f << text)) throw std::runtime_error("--out-prefix: cannot write " + path + ": " + std::strerror(errno));
  };
  write(csv_path, sweep_csv(out));
  write(svg_path, sweep_svg(out));
  out["csv"] = csv_path;
  out["svg"] = svg_path;
  return out;
}

std::string sweep_csv(const nlohmann::json& sweep) {
  std::ostringstream o;
  o << sweep.at("sweep").at("field").get<std::string>();
  for (const char* c : kCsvColumns) {
    std::string name(c + 1);
    for (auto& ch : name)
      if (ch == '/') ch = '_';
    o << ',' << name;
  }
  o << '\n';
  for (const auto& p : sweep.at("points")) {
    o << p.at("value").get<std::string>();
    for (const char* c : kCsvColumns) {
      double v = number_or_nan(p, c);
      char buf[48];
      if (std::isnan(v)) buf[0] = 0;  // absent (online): an empty cell
      else std::snprintf(buf, sizeof buf, "%.6g", v);
      o << ',' << buf;
    }
    o << '\n';
  }
  return o.str();
}

std::string sweep_svg(const nlohmann::json& sweep) {
  const std::string field = sweep.at("sweep").at("field").get<std::string>();
  Chart chart;
  chart.title = "Throughput vs TPOT, sweeping " + field;
  chart.x_label = "throughput (output tok/s)";
  chart.y_label = "TPOT (ms per output token)";
  ChartSeries p50{"TPOT p50", {}, {}, {}}, p99{"TPOT p99", {}, {}, {}};
  for (const auto& p : sweep.at("points")) {
    const double x = number_or_nan(p, "/throughput_tok_s");
    p50.x.push_back(x);
    p50.y.push_back(number_or_nan(p, "/tpot_ms/p50"));
    p50.point_labels.push_back(p.at("value").get<std::string>());
    p99.x.push_back(x);
    p99.y.push_back(number_or_nan(p, "/tpot_ms/p99"));
  }
  chart.series = {p50, p99};
  return render_svg(chart);
}

}  // namespace nanovllm::cli
