// CPU backend microbenchmarks: the GEMM paths (our AVX2 kernel, OpenBLAS sliced over our pool,
// OpenBLAS with its own threads) on Qwen3-0.6B's shapes, and paged decode attention.
//   build-x/bench_cpu_ops --benchmark_filter=Gemm   (results in docs/cpu-backend.md)
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_ops.h"
#include "model/decoder_model.h"
#include "model/random_model.h"

namespace nanovllm {
namespace {

constexpr int kThreads = 2;

std::vector<float> randv(size_t n) {
  std::mt19937 g(1);
  std::normal_distribution<float> d(0, 0.02f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// Qwen3-0.6B's projections: (N, K) of qkv, o, gate_up, down.
const int64_t kShapes[][2] = {{4096, 1024}, {1024, 2048}, {6144, 1024}, {1024, 3072}};

void gemm_args(benchmark::internal::Benchmark* b) {
  for (int s = 0; s < 4; ++s)
    for (int m : {1, 2, 4, 8, 16, 64, 256}) b->Args({s, m});
}

template <int Path>
void BM_Gemm(benchmark::State& st) {
  const int64_t N = kShapes[st.range(0)][0], K = kShapes[st.range(0)][1], M = st.range(1);
  auto x = randv(M * K), w = randv(N * K);
  std::vector<float> out(M * N);
  cpu::ThreadPool pool(kThreads);
  for (auto _ : st) {
    if (Path == 0) cpu::gemm_avx2(x.data(), w.data(), out.data(), M, N, K, pool);
    if (Path == 1) cpu::gemm_blas(x.data(), w.data(), out.data(), M, N, K, pool);
    if (Path == 2) {  // OpenBLAS's own pthreads, as a library user would call it
      openblas_set_num_threads(kThreads);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x.data(), K, w.data(), K, 0.0f, out.data(), N);
      openblas_set_num_threads(1);
    }
    benchmark::DoNotOptimize(out.data());
  }
  st.counters["GFLOPS"] = benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate,
                                             benchmark::Counter::kIs1000);
  st.counters["GB/s(w)"] = benchmark::Counter(4.0 * N * K, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Gemm<0>)->Name("Gemm/avx2")->Apply(gemm_args)->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Gemm<1>)->Name("Gemm/blas_sliced")->Apply(gemm_args)->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Gemm<2>)->Name("Gemm/blas_threaded")->Apply(gemm_args)->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMicrosecond);

// Decode attention: batch of sequences of context length L, Qwen3-0.6B's heads, block size 256.
void BM_DecodeAttention(benchmark::State& st) {
  const int B = st.range(0), L = st.range(1), Hq = 16, Hkv = 8, D = 128, bs = 256;
  const int per_seq = (L + bs - 1) / bs, nb = B * per_seq;
  auto be = make_cpu_backend({.num_threads = kThreads});
  auto q = randv(size_t(B) * Hq * D), kc = randv(size_t(nb) * bs * Hkv * D), vc = kc;
  std::vector<float> out(q.size());
  std::vector<int32_t> cu(B + 1), klen(B, L), table(size_t(B) * per_seq), slots(B);
  for (int i = 0; i <= B; ++i) cu[i] = i;
  for (int i = 0; i < B * per_seq; ++i) table[i] = i;
  AttentionMetadata m{false, B, B, 1, L, cu.data(), klen.data(), slots.data(), table.data(), per_seq};
  Tensor qt(q.data(), DType::f32, {B, Hq, D}), ot(out.data(), DType::f32, {B, Hq, D});
  // The cache in backend memory, as the engine allocates it (huge pages, alignment).
  std::vector<DeviceBuffer> bufs;
  Tensor kt = be->alloc_tensor(DType::f32, {nb, bs, Hkv, D}, bufs), vt = be->alloc_tensor(DType::f32, {nb, bs, Hkv, D}, bufs);
  be->copy_to_device(kt.data, kc.data(), kt.nbytes());
  be->copy_to_device(vt.data, vc.data(), vt.nbytes());
  for (auto _ : st) be->attention(qt, {kt, vt}, m, 0.088f, ot);
  st.counters["GB/s(kv)"] = benchmark::Counter(2.0 * B * L * Hkv * D * 4, benchmark::Counter::kIsIterationInvariantRate,
                                               benchmark::Counter::kIs1000);
}
BENCHMARK(BM_DecodeAttention)->Args({1, 1024})->Args({8, 1024})->Args({32, 512})->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMicrosecond);

// ---- whole forwards of make-model presets ----
// A model per preset, written once to /tmp (make-model's weights) and kept loaded across runs.
struct Loaded {
  std::unique_ptr<Backend> be;
  ModelConfig cfg;
  std::unique_ptr<Checkpoint> ckpt;
  std::unique_ptr<DecoderModel> model;
  KVCache kv;
  int per_seq = 0;  // blocks per sequence
  std::vector<DeviceBuffer> bufs;
};
constexpr int kMaxTokens = 1024, kMaxSeqs = 64, kBlock = 256;
// The KV cache: sequences x context. Qwen3-0.6B's f32 cache is 224 KiB per token.
int cache_seqs(const std::string& preset) { return preset == "tiny" ? kMaxSeqs : 16; }
int cache_context(const std::string& preset) { return preset == "tiny" ? 1024 : 512; }

Loaded& load(const std::string& preset) {
  static std::map<std::string, std::unique_ptr<Loaded>> cache;
  auto& slot = cache[preset];
  if (slot) return *slot;
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("nanovllm_bench_" + preset);
  if (!fs::exists(dir / "model.safetensors")) write_random_model(random_model_preset(preset), dir);
  slot = std::make_unique<Loaded>();
  Loaded& l = *slot;
  l.be = make_cpu_backend({.num_threads = kThreads});
  l.cfg = load_model_config(dir);
  l.ckpt = std::make_unique<Checkpoint>(Checkpoint::open(dir));
  l.model = std::make_unique<DecoderModel>(l.cfg, *l.ckpt, *l.be, kMaxTokens, kMaxSeqs);
  l.per_seq = cache_context(preset) / kBlock;
  const int nb = cache_seqs(preset) * l.per_seq;
  l.kv.num_blocks = nb;
  l.kv.block_size = kBlock;
  for (int i = 0; i < l.cfg.num_hidden_layers; ++i) {
    l.kv.k.push_back(l.be->alloc_tensor(DType::f32, {nb, kBlock, l.cfg.num_key_value_heads, l.cfg.head_dim}, l.bufs));
    l.kv.v.push_back(l.be->alloc_tensor(DType::f32, {nb, kBlock, l.cfg.num_key_value_heads, l.cfg.head_dim}, l.bufs));
    l.be->fill_zero(l.kv.k.back().data, l.kv.k.back().nbytes());
    l.be->fill_zero(l.kv.v.back().data, l.kv.v.back().nbytes());
  }
  return l;
}

// One forward over B sequences: decode (1 new token each at context L) or prefill (L new tokens
// each). The cache's contents do not change the work, so no real prefill precedes a decode.
void forward_bench(benchmark::State& st, const std::string& preset) {
  const int B = st.range(0), L = st.range(1);
  const bool prefill = st.range(2);
  Loaded& l = load(preset);
  const int per_seq = l.per_seq, q_len = prefill ? L : 1, T = B * q_len;
  std::vector<int32_t> ids(T), pos(T), slots(T), cu(B + 1), klen(B, L), last(B), table(size_t(B) * per_seq);
  for (int b = 0; b < B; ++b) {
    cu[b + 1] = (b + 1) * q_len;
    last[b] = cu[b + 1] - 1;
    for (int j = 0; j < per_seq; ++j) table[b * per_seq + j] = b * per_seq + j;
    for (int j = 0; j < q_len; ++j) {
      const int t = b * q_len + j, p = L - q_len + j;
      ids[t] = (t * 7919) % l.cfg.vocab_size;
      pos[t] = p;
      slots[t] = table[b * per_seq + p / kBlock] * kBlock + p % kBlock;
    }
  }
  ForwardInputs in;
  in.input_ids = Tensor(ids.data(), DType::i32, {T});
  in.positions = Tensor(pos.data(), DType::i32, {T});
  in.last_token_indices = Tensor(last.data(), DType::i32, {B});
  in.meta = {prefill, B, T, q_len, L, cu.data(), klen.data(), slots.data(), table.data(), per_seq};
  std::vector<float> logits(size_t(B) * l.cfg.vocab_size);
  Tensor lt(logits.data(), DType::f32, {B, l.cfg.vocab_size});
  for (auto _ : st) l.model->forward(in, l.kv, lt);
  st.counters["tok/s"] = benchmark::Counter(T, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["weights_MB"] = l.model->weight_bytes() / 1e6;
  st.counters["peak_alloc_MB"] = l.be->peak_allocated_bytes() / 1e6;
}
// Args: batch, context length, prefill?
BENCHMARK_CAPTURE(forward_bench, tiny, std::string("tiny"))
    ->Args({1, 128, 0})->Args({16, 128, 0})->Args({64, 128, 0})->Args({1, 256, 1})->Args({1, 1024, 1})
    ->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(forward_bench, qwen3_06b, std::string("qwen3-0.6b"))
    ->Args({1, 128, 0})->Args({16, 128, 0})->Args({1, 256, 1})
    ->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);

}  // namespace
}  // namespace nanovllm

BENCHMARK_MAIN();
