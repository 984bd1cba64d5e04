// CPU backend microbenchmarks: the GEMM paths on Qwen3-0.6B's shapes (f32 weights: our AVX2
// kernel, OpenBLAS sliced over our pool, OpenBLAS with its own threads; bf16, f16 and int8
// weights: our GEMV kernels in AVX2 and AVX-512, OpenBLAS over converted panels), paged decode
// attention over f32 and bf16 caches, and whole forwards of make-model presets.
//   build-x/bench_cpu_ops --benchmark_filter=Gemm   (results in docs/cpu-backend.md)
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <immintrin.h>

#include <array>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_isa.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/half.h"
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

// Weights as a step meets them: streamed from memory, not from this machine's large L3 (260 MB
// on the dev VM). Each iteration takes the next of enough copies to span 768 MB.
template <class T>
struct WeightCopies {
  std::vector<std::vector<T>> copies;
  size_t next = 0;
  WeightCopies(const std::vector<T>& w) {
    const size_t n = std::max<size_t>(2, (768u << 20) / (w.size() * sizeof(T)) + 1);
    copies.assign(n, w);
  }
  const T* take() { return copies[next++ % copies.size()].data(); }
};

void set_gemm_counters(benchmark::State& st, int64_t M, int64_t N, int64_t K, double bytes_per_weight) {
  st.counters["GFLOPS"] = benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate,
                                             benchmark::Counter::kIs1000);
  st.counters["GB/s(w)"] = benchmark::Counter(bytes_per_weight * N * K, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}

template <int Path>
void BM_Gemm(benchmark::State& st) {
  cpu::pick_blas_kernels();  // as the backend does: OpenBLAS's generic kernels on a CPU it does not know
  const int64_t N = kShapes[st.range(0)][0], K = kShapes[st.range(0)][1], M = st.range(1);
  auto x = randv(M * K);
  WeightCopies<float> w(randv(N * K));
  std::vector<float> out(M * N);
  cpu::ThreadPool pool(kThreads);
  for (auto _ : st) {
    const float* wp = w.take();
    if (Path == 0) cpu::gemm_avx2(x.data(), wp, out.data(), M, N, K, pool);
    if (Path == 1) cpu::gemm_blas(x.data(), wp, out.data(), M, N, K, pool);
    if (Path == 2) {  // OpenBLAS's own pthreads, as a library user would call it
      openblas_set_num_threads(kThreads);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x.data(), K, wp, K, 0.0f, out.data(), N);
      openblas_set_num_threads(1);
    }
    benchmark::DoNotOptimize(out.data());
  }
  set_gemm_counters(st, M, N, K, 4);
}
BENCHMARK(BM_Gemm<0>)->Name("Gemm/f32/avx2")->Apply(gemm_args)->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Gemm<1>)->Name("Gemm/f32/blas_sliced")->Apply(gemm_args)->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Gemm<2>)->Name("Gemm/f32/blas_threaded")->Apply(gemm_args)->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMicrosecond);

// The ceiling a weight-streaming GEMV is held to: reading memory (768 MB, beyond the L3) with
// AVX2 loads on 1 or 2 threads of our pool.
__attribute__((target("avx2"))) float read_range(const float* p, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
  }
  float r[8];
  _mm256_storeu_ps(r, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  return r[0];
}
void BM_MemoryRead(benchmark::State& st) {
  const int threads = st.range(0);
  std::vector<float> big((768u << 20) / sizeof(float), 1.0f);
  cpu::ThreadPool pool(threads);
  const int64_t n = static_cast<int64_t>(big.size());
  for (auto _ : st) {
    float sums[8] = {};
    pool.run(threads, [&](int part) {
      const int64_t b = n * part / threads, e = n * (part + 1) / threads;
      sums[part] = read_range(big.data() + b, e - b);
    });
    benchmark::DoNotOptimize(sums);
  }
  st.counters["GB/s"] = benchmark::Counter(double(big.size()) * sizeof(float), benchmark::Counter::kIsIterationInvariantRate,
                                           benchmark::Counter::kIs1000);
}
BENCHMARK(BM_MemoryRead)->Arg(1)->Arg(2)->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);

// Half and int8 weights: our GEMV kernels (Path 0; Isa 0 = AVX2, 1 = AVX-512) and OpenBLAS over
// converted panels (Path 1), for the table in docs/cpu-backend.md that sets kHalfGemvRows and
// kInt8GemvRows.
template <DType T, int Path, int Isa>
void BM_GemmW(benchmark::State& st) {
  cpu::pick_blas_kernels();
  const int64_t N = kShapes[st.range(0)][0], K = kShapes[st.range(0)][1], M = st.range(1);
  if (Isa == 1 && cpu::detect_isa() != cpu::Isa::avx512) {
    st.SkipWithError("no AVX-512 on this CPU");
    return;
  }
  const cpu::Isa isa = Isa ? cpu::Isa::avx512 : cpu::Isa::avx2;
  auto x = randv(M * K);
  cpu::ThreadPool pool(kThreads);
  const int64_t row = T == DType::i8 ? K + kI8RowTail : K * 2;  // bytes
  std::vector<uint8_t> w0(N * row);
  {
    const std::vector<float> wf = randv(N * K);
    if (T == DType::i8) cpu::quantize_rows_int8(wf.data(), DType::f32, N, K, reinterpret_cast<int8_t*>(w0.data()), pool);
    else
      for (int64_t i = 0; i < N * K; ++i)
        reinterpret_cast<uint16_t*>(w0.data())[i] = T == DType::bf16 ? f32_to_bf16(wf[i]) : f32_to_f16(wf[i]);
  }
  WeightCopies<uint8_t> w(w0);
  std::vector<float> out(M * N);
  for (auto _ : st) {
    const cpu::WeightView wv{w.take(), T, N, K};
    if (Path == 0 && T == DType::i8) cpu::gemv_int8(x.data(), wv, out.data(), M, pool, isa, false);
    else if (Path == 0) cpu::gemv_half(x.data(), wv, out.data(), M, pool, isa, false);
    else cpu::gemm_panels(x.data(), wv, out.data(), M, pool, false);
    benchmark::DoNotOptimize(out.data());
  }
  set_gemm_counters(st, M, N, K, T == DType::i8 ? 1 : 2);
}
#define NANOVLLM_GEMM_BENCH(name, ...) \
  BENCHMARK(BM_GemmW<__VA_ARGS__>)->Name(name)->Apply(gemm_args)->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMicrosecond)
NANOVLLM_GEMM_BENCH("Gemm/bf16/gemv_avx2", DType::bf16, 0, 0);
NANOVLLM_GEMM_BENCH("Gemm/bf16/gemv_avx512", DType::bf16, 0, 1);
NANOVLLM_GEMM_BENCH("Gemm/bf16/panels", DType::bf16, 1, 0);
NANOVLLM_GEMM_BENCH("Gemm/f16/gemv_avx512", DType::f16, 0, 1);
NANOVLLM_GEMM_BENCH("Gemm/i8/gemv_avx2", DType::i8, 0, 0);
NANOVLLM_GEMM_BENCH("Gemm/i8/gemv_avx512", DType::i8, 0, 1);
NANOVLLM_GEMM_BENCH("Gemm/i8/panels", DType::i8, 1, 0);

// Decode attention: batch of sequences of context length L, Qwen3-0.6B's heads, block size 256;
// the cache f32 (range 2 = 0) or bf16 (1).
void BM_DecodeAttention(benchmark::State& st) {
  const int B = st.range(0), L = st.range(1), Hq = 16, Hkv = 8, D = 128, bs = 256;
  // range(2): 0 f32, 1 bf16, 2 fp8 e4m3, 3 fp8 e5m2 (FP8: scale 0.01 for K and V)
  const DType kv = std::array{DType::f32, DType::bf16, DType::f8e4m3, DType::f8e5m2}[st.range(2)];
  const float kv_scale = is_fp8(kv) ? 0.01f : 1.0f;
  const int per_seq = (L + bs - 1) / bs, nb = B * per_seq;
  auto be = make_cpu_backend({.num_threads = kThreads});
  auto q = randv(size_t(B) * Hq * D), kc = randv(size_t(nb) * bs * Hkv * D);
  std::vector<float> out(q.size());
  std::vector<int32_t> cu(B + 1), klen(B, L), table(size_t(B) * per_seq), slots(B);
  for (int i = 0; i <= B; ++i) cu[i] = i;
  for (int i = 0; i < B * per_seq; ++i) table[i] = i;
  AttentionMetadata m{false, B, B, 1, L, cu.data(), klen.data(), slots.data(), table.data(), per_seq};
  Tensor qt(q.data(), DType::f32, {B, Hq, D}), ot(out.data(), DType::f32, {B, Hq, D});
  // The cache in backend memory, as the engine allocates it.
  std::vector<DeviceBuffer> bufs;
  Tensor kt = be->alloc_tensor(kv, {nb, bs, Hkv, D}, bufs), vt = be->alloc_tensor(kv, {nb, bs, Hkv, D}, bufs);
  Tensor src(kc.data(), DType::f32, {nb, bs, Hkv, D});
  if (is_fp8(kv)) {  // the CPU's memory is the host's: the codes written in place
    for (size_t i = 0; i < kc.size(); ++i)
      static_cast<uint8_t*>(kt.data)[i] = static_cast<uint8_t*>(vt.data)[i] =
          kv == DType::f8e4m3 ? f32_to_fp8_e4m3(kc[i] / kv_scale) : f32_to_fp8_e5m2(kc[i] / kv_scale);
  } else {
    be->upload_convert(src, kt);
    be->upload_convert(src, vt);
  }
  for (auto _ : st) be->attention(qt, {kt, vt, kv_scale, kv_scale}, m, 0.088f, ot);
  st.counters["GB/s(kv)"] = benchmark::Counter(2.0 * B * L * Hkv * D * dtype_size(kv),
                                               benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_DecodeAttention)->ArgsProduct({{1}, {1024}, {0, 1, 2, 3}})->ArgsProduct({{8}, {1024}, {0, 1, 2, 3}})
    ->ArgsProduct({{32}, {512}, {0, 1, 2, 3}})->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMicrosecond);

// ---- whole forwards of make-model presets ----
// A model per (preset, weights, KV dtype), written once to /tmp (make-model's bf16 weights) and
// kept loaded across runs: weights "bf16" (used in place from the file), "int8" (quantized at
// load) or "f32" (a float32 copy of the file); the KV cache f32 or bf16.
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
// The KV cache: sequences x context.
int cache_seqs(const std::string& preset) { return preset == "tiny" ? kMaxSeqs : 16; }
int cache_context(const std::string& preset) { return preset == "tiny" ? 1024 : 512; }

std::filesystem::path model_dir(const std::string& preset, const std::string& weights) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("nanovllm_bench_" + preset + (weights == "f32" ? "_f32" : ""));
  if (!fs::exists(dir / "model.safetensors")) {
    RandomModelSpec spec = random_model_preset(preset);
    if (weights == "f32") spec.dtype = DType::f32;
    write_random_model(spec, dir);
  }
  return dir;
}

Loaded& load(const std::string& preset, const std::string& weights, DType kv_dtype) {
  static std::map<std::string, std::unique_ptr<Loaded>> cache;
  auto& slot = cache[preset + "/" + weights + "/" + dtype_name(kv_dtype)];
  if (slot) return *slot;
  const auto dir = model_dir(preset, weights);
  slot = std::make_unique<Loaded>();
  Loaded& l = *slot;
  BackendOptions opts;
  opts.num_threads = kThreads;
  opts.int8_weights = weights == "int8";
  l.be = make_cpu_backend(opts);
  l.cfg = load_model_config(dir);
  l.ckpt = std::make_unique<Checkpoint>(Checkpoint::open(dir));
  l.model = std::make_unique<DecoderModel>(l.cfg, *l.ckpt, *l.be, kMaxTokens, kMaxSeqs);
  l.per_seq = cache_context(preset) / kBlock;
  const int nb = cache_seqs(preset) * l.per_seq;
  l.kv.num_blocks = nb;
  l.kv.block_size = kBlock;
  for (int i = 0; i < l.cfg.num_hidden_layers; ++i) {
    l.kv.k.push_back(l.be->alloc_tensor(kv_dtype, {nb, kBlock, l.cfg.num_key_value_heads, l.cfg.head_dim}, l.bufs));
    l.kv.v.push_back(l.be->alloc_tensor(kv_dtype, {nb, kBlock, l.cfg.num_key_value_heads, l.cfg.head_dim}, l.bufs));
    l.be->fill_zero(l.kv.k.back().data, l.kv.k.back().nbytes());
    l.be->fill_zero(l.kv.v.back().data, l.kv.v.back().nbytes());
  }
  return l;
}

// One forward over B sequences: decode (1 new token each at context L) or prefill (L new tokens
// each). The cache's contents do not change the work, so no real prefill precedes a decode.
void forward_bench(benchmark::State& st, const std::string& preset, const std::string& weights, DType kv_dtype) {
  const int B = st.range(0), L = st.range(1);
  const bool prefill = st.range(2);
  Loaded& l = load(preset, weights, kv_dtype);
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
#define NANOVLLM_FORWARD_BENCH(name, preset, weights, kv)                                              \
  BENCHMARK_CAPTURE(forward_bench, name, std::string(preset), std::string(weights), kv)                \
      ->Args({1, 128, 0})->Args({16, 128, 0})->Args({1, 256, 1})->UseRealTime()->MeasureProcessCPUTime() \
      ->Unit(benchmark::kMillisecond)
NANOVLLM_FORWARD_BENCH(tiny_bf16, "tiny", "bf16", DType::bf16)->Args({64, 128, 0})->Args({1, 1024, 1});
NANOVLLM_FORWARD_BENCH(qwen3_06b_f32_kvf32, "qwen3-0.6b", "f32", DType::f32)->MinTime(2.0);
NANOVLLM_FORWARD_BENCH(qwen3_06b_bf16_kvf32, "qwen3-0.6b", "bf16", DType::f32)->MinTime(2.0);
NANOVLLM_FORWARD_BENCH(qwen3_06b_bf16_kvbf16, "qwen3-0.6b", "bf16", DType::bf16)->MinTime(2.0);
NANOVLLM_FORWARD_BENCH(qwen3_06b_int8_kvbf16, "qwen3-0.6b", "int8", DType::bf16)->MinTime(2.0);

}  // namespace
}  // namespace nanovllm

BENCHMARK_MAIN();
