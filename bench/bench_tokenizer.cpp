// Tokenizer speed: single-thread encode over a ~20 MB mixed corpus, decode, streaming decode,
// and loading tokenizer.json. The corpus is made deterministically from the HF fixture texts
// (shuffled with a fixed seed); set NANOVLLM_BENCH_CORPUS=FILE to read it from FILE, or to write
// it there when FILE does not exist, so tests/reference/bench_hf_tokenizer.py can time HF on the
// very same bytes. Documents in the file are separated by "\n\x1e\n". The tokenizer is Qwen3's;
// NANOVLLM_BENCH_TOKENIZER=DIR times another (e.g. models/gemma3-tokenizer).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "tokenizer/tokenizer.h"

namespace nanovllm {
namespace {

// CMake gives benchmarks no source-dir define: take it from the environment or from this file's path.
std::filesystem::path source_dir() {
  if (const char* s = std::getenv("NANOVLLM_SOURCE_DIR")) return s;
  return std::filesystem::path(__FILE__).parent_path().parent_path();
}
const std::filesystem::path kSource = source_dir();
const std::filesystem::path kModel = std::getenv("NANOVLLM_BENCH_TOKENIZER")
                                         ? std::filesystem::path(std::getenv("NANOVLLM_BENCH_TOKENIZER"))
                                         : kSource / "models" / "qwen3-tokenizer";
constexpr std::string_view kSeparator = "\n\x1e\n";
constexpr size_t kCorpusBytes = 20u << 20;
constexpr size_t kDocBytes = 16u << 10;

std::string make_corpus() {
  std::ifstream f(kSource / "tests/fixtures/tokenizer/encode.json");
  if (!f) throw std::runtime_error("tests/fixtures/tokenizer/encode.json: cannot open");
  const nlohmann::json fixture = nlohmann::json::parse(f);  // named: a temporary would dangle in the loop
  std::vector<std::string> texts;
  for (const auto& c : fixture["cases"]) texts.push_back(c["text"]);
  std::mt19937_64 rng(20260101);
  std::string corpus, doc;
  while (corpus.size() < kCorpusBytes) {
    std::shuffle(texts.begin(), texts.end(), rng);
    for (const auto& t : texts) {
      doc += t;
      doc += '\n';
      if (doc.size() >= kDocBytes) {
        corpus += doc;
        corpus += kSeparator;
        doc.clear();
      }
    }
  }
  return corpus;
}

const std::vector<std::string>& documents() {
  static const std::vector<std::string> docs = [] {
    std::string corpus;
    const char* path = std::getenv("NANOVLLM_BENCH_CORPUS");
    if (path && std::filesystem::exists(path)) {
      std::ifstream in(path, std::ios::binary);
      std::ostringstream ss;
      ss << in.rdbuf();
      corpus = ss.str();
    } else {
      corpus = make_corpus();
      if (path) std::ofstream(path, std::ios::binary) << corpus;
    }
    std::vector<std::string> out;
    size_t pos = 0;
    while (pos < corpus.size()) {
      size_t end = corpus.find(kSeparator, pos);
      if (end == std::string::npos) end = corpus.size();
      if (end > pos) out.push_back(corpus.substr(pos, end - pos));
      pos = end + kSeparator.size();
    }
    return out;
  }();
  return docs;
}

const Tokenizer& tokenizer() {
  static std::unique_ptr<Tokenizer> tok = Tokenizer::from_dir(kModel);
  return *tok;
}

size_t corpus_bytes() {
  size_t n = 0;
  for (const auto& d : documents()) n += d.size();
  return n;
}

void BM_Encode(benchmark::State& state) {
  const auto& docs = documents();
  const Tokenizer& tok = tokenizer();
  size_t tokens = 0;
  for (auto _ : state) {
    tokens = 0;
    for (const auto& d : docs) tokens += tok.encode(d).size();
    benchmark::DoNotOptimize(tokens);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * corpus_bytes()));
  state.counters["tokens"] = static_cast<double>(tokens);
  state.counters["MB"] = static_cast<double>(corpus_bytes()) / 1e6;
}
BENCHMARK(BM_Encode)->Unit(benchmark::kMillisecond)->MinTime(2.0);

void BM_Decode(benchmark::State& state) {
  const Tokenizer& tok = tokenizer();
  std::vector<std::vector<int32_t>> ids;
  for (const auto& d : documents()) ids.push_back(tok.encode(d));
  for (auto _ : state)
    for (const auto& v : ids) benchmark::DoNotOptimize(tok.decode(v));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * corpus_bytes()));
}
BENCHMARK(BM_Decode)->Unit(benchmark::kMillisecond);

// Streaming: one push per token, as the server does for every generated token.
void BM_IncrementalDetokenize(benchmark::State& state) {
  const Tokenizer& tok = tokenizer();
  std::vector<int32_t> ids = tok.encode(documents()[0] + documents()[1] + documents()[2]);
  for (auto _ : state) {
    IncrementalDetokenizer detok(tok);
    size_t n = 0;
    for (int32_t id : ids) n += detok.push(id).size();
    benchmark::DoNotOptimize(n);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * ids.size()));
}
BENCHMARK(BM_IncrementalDetokenize)->Unit(benchmark::kMicrosecond);

void BM_Load(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(Tokenizer::from_dir(kModel));
}
BENCHMARK(BM_Load)->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime()->UseRealTime();

}  // namespace
}  // namespace nanovllm

BENCHMARK_MAIN();
