// load_generation_defaults: the sampling fields of generation_config.json, checked.
#include "model/generation_config.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

#include "util/files.h"

namespace nanovllm {
namespace {

[[noreturn]] void fail(const std::filesystem::path& file, const std::string& what) {
  throw std::runtime_error(file.string() + ": " + what);
}

std::optional<float> read_number(const nlohmann::json& j, const std::filesystem::path& file, const char* key,
                                 double lo, double hi) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_number() || it->is_boolean()) fail(file, std::string(key) + " must be a number, got " + it->dump());
  const double v = it->get<double>();
  if (!std::isfinite(v) || v < lo || v > hi)
    fail(file, std::string(key) + " = " + it->dump() + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return static_cast<float>(v);
}

std::optional<int> read_int(const nlohmann::json& j, const std::filesystem::path& file, const char* key, int lo) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer()) fail(file, std::string(key) + " must be an integer, got " + it->dump());
  const int64_t v = it->get<int64_t>();
  if (v < lo || v > 1'000'000'000) fail(file, std::string(key) + " = " + it->dump() + " is out of range");
  return static_cast<int>(v);
}

}  // namespace

SamplingParams GenerationDefaults::apply(SamplingParams p) const {
  if (temperature) p.temperature = *temperature;
  if (top_p) p.top_p = *top_p;
  if (top_k) p.top_k = *top_k;
  if (min_p) p.min_p = *min_p;
  if (repetition_penalty) p.repetition_penalty = *repetition_penalty;
  if (max_new_tokens) p.max_tokens = *max_new_tokens;
  return p;
}

std::string GenerationDefaults::describe() const {
  std::ostringstream s;
  const char* sep = "";
  auto put = [&](const char* name, auto v) {
    if (!v) return;
    s << sep << name << "=" << *v;
    sep = ", ";
  };
  put("temperature", temperature);
  put("top_k", top_k);
  put("top_p", top_p);
  put("min_p", min_p);
  put("repetition_penalty", repetition_penalty);
  put("max_tokens", max_new_tokens);
  return s.str();
}

GenerationDefaults load_generation_defaults(const std::filesystem::path& model_dir, const std::string& mode) {
  GenerationDefaults d;
  if (mode == "vllm") return d;
  const std::filesystem::path dir = mode == "auto" ? model_dir : std::filesystem::path(mode);
  const std::filesystem::path file = dir / "generation_config.json";
  if (!std::filesystem::exists(file)) {
    if (mode == "auto") return d;
    throw std::runtime_error("generation_config '" + mode + "': " + file.string() +
                             " does not exist (use auto, vllm or a directory holding generation_config.json)");
  }
  const nlohmann::json j = read_json_file(file);
  if (!j.is_object()) fail(file, "expected a JSON object");
  d.file = file.string();
  d.temperature = read_number(j, file, "temperature", 0.0, 1e6);
  d.top_p = read_number(j, file, "top_p", 1e-9, 1.0);
  d.min_p = read_number(j, file, "min_p", 0.0, 1.0);
  d.repetition_penalty = read_number(j, file, "repetition_penalty", 1e-9, 1e6);
  d.top_k = read_int(j, file, "top_k", -1);
  d.max_new_tokens = read_int(j, file, "max_new_tokens", 1);
  return d;
}

}  // namespace nanovllm
