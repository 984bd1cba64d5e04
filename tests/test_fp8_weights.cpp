// FP8 weights on the CPU: F8 safetensors, upload_convert's FP8 rules, FP8 checkpoints (Qwen3-FP8's
// 128 x 128 block scales) loaded and dequantized against a hand-dequantized bf16 checkpoint
// (packing aligned and misaligned q/k/v and gate/up, tensor-parallel shards), make-model
// --quantize fp8, --quantization fp8's quantize-dequantize weights, and transformers' own
// dequantization and logits (tests/fixtures/fp8, made by tests/reference/make_fp8_fixtures.py).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/fp8_host.h"
#include "backend/half.h"
#include "hf_fixture.h"
#include "model/decoder_model.h"
#include "model/fp8_weights.h"
#include "model/hf_config.h"
#include "model/random_model.h"
#include "model/safetensors.h"
#include "nanovllm/llm.h"

namespace nanovllm {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;

class TempDir {
 public:
  TempDir() {
    path = fs::temp_directory_path() / ("nanovllm_fp8_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  fs::path path;
};

// A Qwen3-shaped random model; aligned: every q/k/v and gate/up part starts on a 128-row block.
RandomModelSpec fp8_spec(bool aligned) {
  RandomModelSpec s;
  s.vocab_size = 300;
  s.bos_token_id = 1;
  s.eos_token_ids = {2};
  s.max_position_embeddings = 128;
  s.num_heads = 4, s.num_kv_heads = 2;
  if (aligned) s.hidden_size = 256, s.head_dim = 64, s.intermediate_size = 512;  // q 256, k/v 128 rows
  else s.hidden_size = 128, s.head_dim = 32, s.intermediate_size = 192;  // v at row 192, up at 192
  s.quantize_fp8 = true;
  s.seed = 3;
  return s;
}

// The tiny preset's shape: q [256, 64] two block rows, k and v [128, 64] within one 128 x 128
// block each (a [1, 1] scale, which is a block scale there, not a per-tensor one).
RandomModelSpec fp8_spec_one_block() {
  RandomModelSpec s = fp8_spec(true);
  s.hidden_size = 64, s.head_dim = 64, s.intermediate_size = 128;
  return s;
}

// The value transformers' Fp8Dequantize gives (q.float() * scale_inv, cast to the model's dtype),
// by hand: element (n, k) of a 128 x 128 block-scaled e4m3 matrix, in float32.
float hand_dequantized(const Tensor& q, const Tensor& scale_inv, int64_t n, int64_t k) {
  const int64_t K = q.shape[1], sc = (K + 127) / 128;
  const float s = static_cast<const float*>(scale_inv.data)[(n / 128) * sc + k / 128];
  return fp8_e4m3_to_f32(static_cast<const uint8_t*>(q.data)[n * K + k]) * s;
}

// dst: src's checkpoint with every FP8 matrix dequantized by hand into `dtype` (scales dropped),
// and config.json without its quantization_config. `edit` may change each float matrix [N, K]
// (name, values) before it is written.
void write_dequantized(const fs::path& src, const fs::path& dst, DType dtype,
                       const std::function<void(const std::string&, std::vector<float>&, int64_t)>& edit = {}) {
  fs::create_directories(dst);
  const Checkpoint ck = Checkpoint::open(src);
  std::vector<std::vector<uint8_t>> storage;
  std::vector<std::pair<std::string, Tensor>> out;
  for (const std::string& name : ck.names()) {
    if (name.ends_with("_scale_inv")) continue;
    const Tensor t = ck.get(name);
    if (t.dtype != DType::f8e4m3) {
      storage.emplace_back(static_cast<const uint8_t*>(t.data), static_cast<const uint8_t*>(t.data) + t.nbytes());
      Tensor c = t;
      c.data = storage.back().data();
      out.emplace_back(name, c);
      continue;
    }
    const Tensor s = ck.get(name.substr(0, name.size() - 7) + ".weight_scale_inv");
    const int64_t N = t.shape[0], K = t.shape[1];
    std::vector<float> w(static_cast<size_t>(N * K));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) w[n * K + k] = hand_dequantized(t, s, n, k);
    if (edit) edit(name, w, K);
    storage.emplace_back(w.size() * dtype_size(dtype));
    for (size_t i = 0; i < w.size(); ++i) store_from_f32(storage.back().data(), dtype, static_cast<int64_t>(i), w[i]);
    out.emplace_back(name, Tensor(storage.back().data(), dtype, {N, K}));
  }
  save_safetensors(dst / "model.safetensors", out);
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(src / "config.json"));
  cfg.erase("quantization_config");
  std::ofstream(dst / "config.json") << cfg.dump(2);
}

// The last-position logits of `ids` (one prefill) of the model in `dir` on the CPU.
std::vector<float> prompt_logits(const fs::path& dir, const BackendOptions& opts, const std::vector<int32_t>& ids) {
  const ModelConfig c = load_model_config(dir);
  const Checkpoint ck = Checkpoint::open(dir);
  auto be = make_backend(DeviceKind::cpu, opts);
  const int64_t T = static_cast<int64_t>(ids.size()), bs = 16, nb = (T + bs - 1) / bs;
  DecoderModel m(c, ck, *be, static_cast<int>(T), 1);
  KVCache kv;
  kv.num_blocks = static_cast<int>(nb), kv.block_size = static_cast<int>(bs);
  std::vector<DeviceBuffer> bufs;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    kv.k.push_back(be->alloc_tensor(DType::f32, {nb, bs, c.num_key_value_heads, c.head_dim}, bufs));
    kv.v.push_back(be->alloc_tensor(DType::f32, {nb, bs, c.num_key_value_heads, c.head_dim}, bufs));
  }
  std::vector<int32_t> pos(ids.size()), slots(ids.size()), table(nb), cu = {0, static_cast<int32_t>(T)},
      klen = {static_cast<int32_t>(T)}, last = {static_cast<int32_t>(T - 1)};
  for (int64_t i = 0; i < T; ++i) pos[i] = slots[i] = static_cast<int32_t>(i);
  for (int64_t b = 0; b < nb; ++b) table[b] = static_cast<int32_t>(b);
  ForwardInputs in;
  in.input_ids = Tensor(const_cast<int32_t*>(ids.data()), DType::i32, {T});
  in.positions = Tensor(pos.data(), DType::i32, {T});
  in.last_token_indices = Tensor(last.data(), DType::i32, {1});
  const int t = static_cast<int>(T);
  in.meta = {true, 1, t, t, t, cu.data(), klen.data(), slots.data(), table.data(), static_cast<int>(nb)};
  std::vector<float> logits(c.vocab_size);
  Tensor lt(logits.data(), DType::f32, {1, c.vocab_size});
  m.forward(in, kv, lt);
  return logits;
}

const std::vector<int32_t> kPrompt = {5, 17, 250, 3, 99, 140, 7, 21, 64, 200, 11};

// ---- safetensors and upload_convert ----

TEST(Fp8Safetensors, ReadsE4m3AndE5m2) {
  TempDir d;
  std::vector<uint8_t> a = {0x00, 0x38, 0xb8, 0x7e, 0x01, 0x7f}, b = {0x3c, 0xbc, 0x7b, 0x00};
  save_safetensors(d.path / "model.safetensors",
                   {{"a", Tensor(a.data(), DType::f8e4m3, {2, 3})}, {"b", Tensor(b.data(), DType::f8e5m2, {4})}});
  const Checkpoint ck = Checkpoint::open(d.path);
  const Tensor ta = ck.get("a", {2, 3}), tb = ck.get("b", {4});
  EXPECT_EQ(ta.dtype, DType::f8e4m3);
  EXPECT_EQ(tb.dtype, DType::f8e5m2);
  EXPECT_EQ(0, std::memcmp(ta.data, a.data(), a.size()));
  EXPECT_EQ(0, std::memcmp(tb.data, b.data(), b.size()));
  // The values as OCP FP8 defines them: 0x38 = 1, 0xb8 = -1, 0x7e = 448, 0x01 = 2^-9; e5m2 0x3c = 1.
  EXPECT_EQ(fp8_e4m3_to_f32(static_cast<const uint8_t*>(ta.data)[1]), 1.0f);
  EXPECT_EQ(fp8_e4m3_to_f32(static_cast<const uint8_t*>(ta.data)[3]), 448.0f);
  EXPECT_EQ(fp8_e4m3_to_f32(static_cast<const uint8_t*>(ta.data)[4]), 1.0f / 512);
  EXPECT_EQ(fp8_e5m2_to_f32(static_cast<const uint8_t*>(tb.data)[2]), 57344.0f);
}

TEST(Fp8UploadConvert, QuantizesDequantizesAndCopiesOnTheCpu) {
  auto be = make_backend(DeviceKind::cpu, {.num_threads = 2});
  const int64_t N = 3, K = 5;
  std::vector<float> w = {0.5f, -1.25f, 3.0f, 0.001f, -2.0f, 0, 0, 0, 0, 0, 1e-3f, 2e-3f, -4e-3f, 7e-4f, 1e-5f};
  std::vector<DeviceBuffer> bufs;
  Tensor q = be->alloc_scaled_weight(DType::f8e4m3, N, K, 1, K, bufs);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(q.scale) % 16, 0u);
  EXPECT_EQ(static_cast<char*>(static_cast<void*>(q.scale)) - static_cast<char*>(q.data), 16);
  be->upload_convert(Tensor(w.data(), DType::f32, {N, K}), q);
  const auto* qb = q.ptr<uint8_t>();
  for (int64_t n = 0; n < N; ++n) {
    float amax = 0;
    for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(w[n * K + k]));
    const float s = amax > 0 ? amax / 448.0f : 1.0f;  // backend.h's rule
    EXPECT_EQ(q.scale[n], s) << n;
    for (int64_t k = 0; k < K; ++k) EXPECT_EQ(qb[n * K + k], f32_to_fp8_e4m3(w[n * K + k] / s)) << n << "," << k;
  }
  // Dequantized: q * scale in float32, rounded once to the destination's dtype.
  std::vector<float> f32(N * K);
  std::vector<uint16_t> b16(N * K);
  Tensor df(f32.data(), DType::f32, {N, K}), db(b16.data(), DType::bf16, {N, K});
  be->upload_convert(q, df);
  be->upload_convert(q, db);
  for (int64_t i = 0; i < N * K; ++i) {
    const float want = fp8_e4m3_to_f32(qb[i]) * q.scale[i / K];
    EXPECT_EQ(f32[i], want) << i;
    EXPECT_EQ(b16[i], f32_to_bf16(want)) << i;
  }
  // FP8 to FP8 with the same blocks: a copy, scales included.
  Tensor c = be->alloc_scaled_weight(DType::f8e4m3, N, K, 1, K, bufs);
  be->upload_convert(q, c);
  EXPECT_EQ(0, std::memcmp(c.data, q.data, N * K));
  EXPECT_EQ(0, std::memcmp(c.scale, q.scale, N * sizeof(float)));
}

// ---- packing and sharding ----

HostFp8 random_fp8(int64_t N, int64_t K, int32_t br, int32_t bc, uint32_t seed) {
  HostFp8 m;
  m.rows = N, m.cols = K, m.block[0] = br, m.block[1] = bc;
  m.q.resize(N * K);
  for (int64_t i = 0; i < N * K; ++i) m.q[i] = static_cast<uint8_t>((i * 2654435761u + seed) % 0x7e);
  m.scale.resize(((N + br - 1) / br) * ((K + bc - 1) / bc));
  for (size_t i = 0; i < m.scale.size(); ++i) m.scale[i] = 0.001f * (1 + (i + seed) % 17);
  return m;
}
float value(HostFp8& m, int64_t n, int64_t k) {
  const Tensor t = m.tensor();
  return fp8_e4m3_to_f32(m.q[n * m.cols + k]) * fp8_scale_at(t, n, k);
}

TEST(Fp8Packing, KeepsAlignedBlocksAndReplicatesMisalignedOnesExactly) {
  HostFp8 q = random_fp8(256, 300, 128, 128, 1), k = random_fp8(128, 300, 128, 128, 2), v = random_fp8(64, 300, 128, 128, 3);
  struct Case {
    std::vector<Fp8Part> parts;
    int32_t block_rows;
  };
  const std::vector<Case> cases = {
      {{{&q, 0, 256}, {&k, 0, 128}, {&v, 0, 64}}, 128},  // every part on a block row: kept
      {{{&q, 128, 128}, {&k, 0, 128}}, 128},             // a row shard on a block boundary: kept
      {{{&v, 0, 64}, {&k, 0, 128}}, 1},                  // k starts at row 64: per-row scales
      {{{&q, 64, 128}}, 1},                              // a shard off the block: per-row scales
  };
  for (const Case& c : cases) {
    HostFp8 p = pack_fp8_rows(c.parts);
    EXPECT_EQ(p.block[0], c.block_rows);
    EXPECT_EQ(p.block[1], 128);
    int64_t row = 0;
    for (const Fp8Part& part : c.parts)
      for (int64_t r = 0; r < part.rows; ++r, ++row)
        for (int64_t col = 0; col < 300; col += 7)
          ASSERT_EQ(value(p, row, col), value(*const_cast<HostFp8*>(part.matrix), part.first + r, col)) << row;
  }
  // Per-tensor parts of different scales become per-channel.
  HostFp8 a = random_fp8(64, 96, 64, 96, 4), b = random_fp8(32, 96, 32, 96, 5);
  HostFp8 ab = pack_fp8_rows({{&a, 0, 64}, {&b, 0, 32}});
  EXPECT_EQ(ab.block[0], 1);
  EXPECT_EQ(ab.block[1], 96);
  EXPECT_EQ(value(ab, 70, 3), value(b, 6, 3));
  EXPECT_EQ(pack_fp8_rows({{&a, 0, 64}}).block[0], 64);  // a whole per-tensor matrix stays so
}

TEST(Fp8Packing, ColumnShardsOnBlockBoundariesOrAClearError) {
  HostFp8 m = random_fp8(130, 512, 128, 128, 6);
  HostFp8 right = fp8_columns(m, "model.layers.0.mlp.down_proj.weight", 256, 256);
  for (int64_t n = 0; n < 130; n += 3)
    for (int64_t k = 0; k < 256; k += 5) ASSERT_EQ(value(right, n, k), value(m, n, 256 + k));
  try {
    fp8_columns(m, "model.layers.0.mlp.down_proj.weight", 192, 192);
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("model.layers.0.mlp.down_proj.weight"));
    EXPECT_THAT(e.what(), HasSubstr("[192, 384)"));
    EXPECT_THAT(e.what(), HasSubstr("128-column scale block"));
  }
  HostFp8 chan = random_fp8(8, 200, 1, 200, 7);  // one scale a row: any columns
  HostFp8 cs = fp8_columns(chan, "w", 37, 100);
  EXPECT_EQ(value(cs, 5, 10), value(chan, 5, 47));
}

// ---- FP8 checkpoints ----

TEST(Fp8Checkpoint, MakeModelWritesQwen3Fp8AndRoundTrips) {
  TempDir d;
  RandomModelSpec s = fp8_spec(true);
  write_random_model(s, d.path / "a");
  write_random_model(s, d.path / "b");
  s.quantize_fp8 = false;
  write_random_model(s, d.path / "float");
  auto bytes = [](const fs::path& f) {
    std::ifstream in(f, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(bytes(d.path / "a/model.safetensors"), bytes(d.path / "b/model.safetensors"));
  const ModelConfig c = load_model_config(d.path / "a");
  EXPECT_EQ(c.quant.method, QuantMethod::fp8);
  EXPECT_EQ(c.quant.strategy, ScaleStrategy::block);
  EXPECT_EQ(c.quant.block_rows, 128);
  EXPECT_TRUE(c.quant.dynamic_activations);
  EXPECT_EQ(c.quant.ignore, std::vector<std::string>{"lm_head"});
  const Checkpoint ck = Checkpoint::open(d.path / "a"), fk = Checkpoint::open(d.path / "float");
  EXPECT_EQ(ck.get("model.embed_tokens.weight").dtype, DType::bf16);
  EXPECT_EQ(ck.get("model.layers.1.input_layernorm.weight").dtype, DType::bf16);
  for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                        "mlp.up_proj", "mlp.down_proj"}) {
    const std::string name = std::string("model.layers.1.") + m;
    const Tensor q = ck.get(name + ".weight"), sc = ck.get(name + ".weight_scale_inv");
    const Tensor w = fk.get(name + ".weight");
    ASSERT_EQ(q.dtype, DType::f8e4m3) << name;
    ASSERT_EQ(sc.dtype, DType::f32) << name;
    const int64_t N = q.shape[0], K = q.shape[1];
    EXPECT_EQ(sc.shape[0], (N + 127) / 128);
    EXPECT_EQ(sc.shape[1], (K + 127) / 128);
    // The float model's weights, block-quantized: within half an e4m3 step (2^-4 relative) or a
    // subnormal step, and each block's largest |w| is 448 x its scale.
    for (int64_t i = 0; i < N * K; ++i) {
      const float x = load_as_f32(w.data, w.dtype, i), y = hand_dequantized(q, sc, i / K, i % K);
      const float step = static_cast<const float*>(sc.data)[(i / K / 128) * sc.shape[1] + (i % K) / 128];
      ASSERT_LE(std::fabs(x - y), std::max(std::fabs(x) / 16, step / 512) * 1.0001f) << name << " " << i;
    }
  }
}

// The command writes what write_random_model writes for the same spec, and the engine runs it.
TEST(Fp8Checkpoint, MakeModelCliQuantizeFp8) {
  TempDir d;
  const std::string cmd = std::string(NANOVLLM_BINARY) +
                          " make-model --hidden-size 256 --intermediate-size 512 --num-heads 4 --num-kv-heads 2"
                          " --head-dim 64 --vocab-size 300 --max-position-embeddings 128 --seed 3 --quantize fp8"
                          " --out " + (d.path / "cli").string() + " > " + (d.path / "out.txt").string() + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  write_random_model(fp8_spec(true), d.path / "api");
  const Checkpoint a = Checkpoint::open(d.path / "cli"), b = Checkpoint::open(d.path / "api");
  ASSERT_EQ(a.names(), b.names());
  for (const std::string& name : a.names()) {
    const Tensor x = a.get(name), y = b.get(name);
    ASSERT_EQ(x.dtype, y.dtype) << name;
    ASSERT_EQ(x.shape_str(), y.shape_str()) << name;
    ASSERT_EQ(0, std::memcmp(x.data, y.data, x.nbytes())) << name;
  }
  EXPECT_EQ(load_model_config(d.path / "cli").quant.method, QuantMethod::fp8);
  const std::string bad = std::string(NANOVLLM_BINARY) + " make-model --quantize int4 --out " +
                          (d.path / "x").string() + " > /dev/null 2>&1";
  EXPECT_NE(std::system(bad.c_str()), 0);
}

TEST(Fp8Checkpoint, CpuLoadEqualsHandDequantizedBf16) {
  for (const int variant : {0, 1, 2}) {
    const bool aligned = variant == 0;
    TempDir d;
    write_random_model(variant == 2 ? fp8_spec_one_block() : fp8_spec(aligned), d.path / "fp8");
    write_dequantized(d.path / "fp8", d.path / "ref", DType::bf16);
    {
      const ModelConfig c = load_model_config(d.path / "fp8");
      const Checkpoint ck = Checkpoint::open(d.path / "fp8");
      auto be = make_backend(DeviceKind::cpu, {.num_threads = 2});
      DecoderModel m(c, ck, *be, 16, 1);
      // Dequantized into the checkpoint's bf16, as transformers does; kept exact (no norm folded in).
      EXPECT_EQ(m.checkpoint_dtype(), DType::bf16);
      EXPECT_EQ(m.weight_dtype(), DType::bf16);
      EXPECT_FALSE(m.folds_norms());
    }
    const auto got = prompt_logits(d.path / "fp8", {.num_threads = 2}, kPrompt);
    const auto want = prompt_logits(d.path / "ref", {.num_threads = 2}, kPrompt);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << "variant " << variant << " logit " << i;
  }
}

// llm-compressor's FP8 (compressed-tensors, float-quantized): `src`'s projections quantized per
// channel (weight_scale [N, 1], bf16 as llm-compressor writes it) or per tensor (weight_scale [1],
// f32) into `dst`, and the same weights dequantized by hand into a bf16 checkpoint `ref`.
void write_compressed_tensors(const fs::path& src, const fs::path& dst, const fs::path& ref, bool channel) {
  fs::create_directories(dst);
  fs::create_directories(ref);
  const Checkpoint ck = Checkpoint::open(src);
  std::vector<std::vector<uint8_t>> storage;
  std::vector<std::pair<std::string, Tensor>> q_out, ref_out;
  auto keep = [&](std::vector<uint8_t> bytes, const std::string& name, DType t, std::vector<int64_t> shape,
                  std::vector<std::pair<std::string, Tensor>>& out) {
    storage.push_back(std::move(bytes));
    Tensor x(storage.back().data(), t, {});
    for (int64_t d : shape) x.shape[x.ndim++] = d;
    out.emplace_back(name, x);
  };
  for (const std::string& name : ck.names()) {
    const Tensor t = ck.get(name);
    const std::vector<uint8_t> raw(static_cast<const uint8_t*>(t.data), static_cast<const uint8_t*>(t.data) + t.nbytes());
    std::vector<int64_t> shape(t.shape, t.shape + t.ndim);
    if (t.ndim != 2 || name == "model.embed_tokens.weight" || name == "lm_head.weight") {
      keep(raw, name, t.dtype, shape, q_out);
      keep(raw, name, t.dtype, shape, ref_out);
      continue;
    }
    const int64_t N = t.shape[0], K = t.shape[1];
    std::vector<float> scale(channel ? N : 1, 0.0f);
    for (int64_t i = 0; i < N * K; ++i) {
      float& s = scale[channel ? i / K : 0];
      s = std::max(s, std::fabs(load_as_f32(t.data, t.dtype, i)) / 448.0f);
    }
    std::vector<uint8_t> sbytes(scale.size() * (channel ? 2 : 4));
    for (size_t r = 0; r < scale.size(); ++r) {  // the scale as the file holds it
      if (channel) scale[r] = bf16_to_f32(f32_to_bf16(scale[r]));
      store_from_f32(sbytes.data(), channel ? DType::bf16 : DType::f32, static_cast<int64_t>(r), scale[r]);
    }
    std::vector<uint8_t> q(N * K), deq(N * K * 2);
    for (int64_t i = 0; i < N * K; ++i) {
      const float s = scale[channel ? i / K : 0];
      q[i] = f32_to_fp8_e4m3(load_as_f32(t.data, t.dtype, i) / s);
      store_from_f32(deq.data(), DType::bf16, i, fp8_e4m3_to_f32(q[i]) * s);
    }
    keep(std::move(q), name, DType::f8e4m3, shape, q_out);
    const std::string module = name.substr(0, name.size() - 7);
    keep(std::move(sbytes), module + ".weight_scale", channel ? DType::bf16 : DType::f32,
         channel ? std::vector<int64_t>{N, 1} : std::vector<int64_t>{1}, q_out);
    keep(std::move(deq), name, DType::bf16, shape, ref_out);
  }
  save_safetensors(dst / "model.safetensors", q_out);
  save_safetensors(ref / "model.safetensors", ref_out);
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(src / "config.json"));
  std::ofstream(ref / "config.json") << cfg.dump(2);
  cfg["quantization_config"] = nlohmann::json::parse(std::string(R"({"quant_method": "compressed-tensors",
      "format": "float-quantized", "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 8,
      "type": "float", "symmetric": true, "dynamic": false, "strategy": ")") + (channel ? "channel" : "tensor") +
      R"("}, "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": true}}},
      "ignore": ["lm_head"]})");
  std::ofstream(dst / "config.json") << cfg.dump(2);
}

// Per channel and per tensor: per-tensor q, k, v (and gate, up) of different scales pack into
// per-channel rows. Both on the misaligned shapes.
TEST(Fp8Checkpoint, CompressedTensorsChannelAndTensorEqualHandDequantized) {
  for (const bool channel : {true, false}) {
    TempDir d;
    RandomModelSpec s = fp8_spec(false);
    s.quantize_fp8 = false;
    write_random_model(s, d.path / "bf16");
    write_compressed_tensors(d.path / "bf16", d.path / "ct", d.path / "ref", channel);
    EXPECT_EQ(load_model_config(d.path / "ct").quant.method, QuantMethod::compressed_tensors);
    const auto got = prompt_logits(d.path / "ct", {.num_threads = 2}, kPrompt);
    const auto want = prompt_logits(d.path / "ref", {.num_threads = 2}, kPrompt);
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << "channel " << channel << " logit " << i;
  }
}

TEST(Fp8Checkpoint, Int8OverAnFp8CheckpointFoldsOnceFromTheDequantizedWeights) {
  TempDir d;
  write_random_model(fp8_spec(true), d.path / "fp8");
  write_dequantized(d.path / "fp8", d.path / "ref", DType::f32);
  const auto got = prompt_logits(d.path / "fp8", {.num_threads = 2, .int8_weights = true}, kPrompt);
  const auto want = prompt_logits(d.path / "ref", {.num_threads = 2, .int8_weights = true}, kPrompt);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << i;
}

TEST(Fp8Checkpoint, ErrorsNameTheTensor) {
  TempDir d;
  write_random_model(fp8_spec(true), d.path);
  ModelConfig c = load_model_config(d.path);
  auto be = make_backend(DeviceKind::cpu, {.num_threads = 1});
  auto error = [&](const ModelConfig& cfg, ModelShard shard = {}) {
    try {
      const Checkpoint ck = Checkpoint::open(d.path);
      DecoderModel m(cfg, ck, *be, 8, 1, shard);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  ModelConfig unquantized = c;
  unquantized.quant = {};
  EXPECT_THAT(error(unquantized), HasSubstr("no quantization_config"));
  ModelConfig channel = c;
  channel.quant.strategy = ScaleStrategy::channel;
  EXPECT_THAT(error(channel), HasSubstr("weight_scale_inv' has shape [2, 2]; expected [256, 1]"));
  // Row-parallel shards: over 2 ranks rank 1's o_proj columns start at 128, a block boundary; over
  // 4 at 64, inside the first 128-column block.
  EXPECT_EQ(error(c, {1, 2}), "(no error)");
  const std::string e4 = error(c, {1, 4});
  EXPECT_THAT(e4, HasSubstr("model.layers.0.self_attn.o_proj.weight"));
  EXPECT_THAT(e4, HasSubstr("[64, 128) do not start on a 128-column scale block"));
}

TEST(Fp8Checkpoint, TensorParallelTwoRanksEqualOne) {
  TempDir d;
  write_random_model(fp8_spec(true), d.path);
  std::vector<std::vector<int32_t>> prompts = {kPrompt, {9, 8, 7}, {42}, {100, 101, 102, 103, 104, 105, 106}};
  auto run = [&](const fs::path& model, int world, const std::string& quant = "") {
    EngineConfig c = fixtures::cpu_engine_config(16, 512, 512);
    c.model = model.string();
    c.kv_cache_dtype = "float32";
    c.tensor_parallel_size = world;
    c.quantization = quant;
    return LLM(c.model, c).generate(prompts, fixtures::greedy(12), false);
  };
  const auto one = run(d.path, 1), two = run(d.path, 2);
  // The same dequantized weights on each rank (rank 1's k and v rows start off a block: per-row
  // scales), float32 sums in another order.
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(one[i].token_ids(), two[i].token_ids()) << i;

  // --quantization fp8 over two ranks: each quantizes its own slices (a row-parallel rank's rows
  // over its own columns, as int8 does), so only most tokens need agree with one rank.
  RandomModelSpec s = fp8_spec(true);
  s.quantize_fp8 = false;
  write_random_model(s, d.path / "bf16");
  const auto q1 = run(d.path / "bf16", 1, "fp8"), q2 = run(d.path / "bf16", 2, "fp8");
  size_t leading = 0, total = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto &a = q1[i].token_ids(), &b = q2[i].token_ids();
    ASSERT_EQ(b.size(), 12u);
    size_t k = 0;
    while (k < a.size() && k < b.size() && a[k] == b[k]) ++k;
    leading += k, total += a.size();
  }
  std::printf("  fp8 tp 2 vs 1: leading tokens %zu / %zu\n", leading, total);
  EXPECT_GE(leading, total / 2);
}

// ---- --quantization fp8 on the CPU ----

// The weights are the FP8 model's exactly: each projection row (a folded norm multiplied in first,
// in float32) quantized to e4m3 with scale max |w| / 448, and dequantized back to float32. The
// reference is an f32 checkpoint of those weights with the folded norms set to 1.
TEST(Fp8Quantization, CpuWeightsAreQuantizeDequantizeExact) {
  TempDir d;
  RandomModelSpec s = fp8_spec(false);
  s.quantize_fp8 = false;
  s.dtype = DType::f32;  // the reference below in f32 throughout, so both run the same kernels
  write_random_model(s, d.path / "f32");
  const fs::path ref = d.path / "ref";
  fs::create_directories(ref);
  const Checkpoint ck = Checkpoint::open(d.path / "f32");
  std::map<std::string, std::vector<float>> vals;
  std::vector<std::pair<std::string, Tensor>> out;
  auto f32 = [&](const std::string& name) {
    const Tensor t = ck.get(name);
    std::vector<float> v(t.numel());
    for (int64_t i = 0; i < t.numel(); ++i) v[i] = load_as_f32(t.data, t.dtype, i);
    return v;
  };
  auto round_trip = [](std::vector<float>& w, int64_t K) {
    for (size_t r = 0; r < w.size() / K; ++r) {
      float* row = w.data() + r * K;
      float amax = 0;
      for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(row[k]));
      const float sc = amax > 0 ? amax / 448.0f : 1.0f;
      for (int64_t k = 0; k < K; ++k) row[k] = fp8_e4m3_to_f32(f32_to_fp8_e4m3(row[k] / sc)) * sc;
    }
  };
  for (const std::string& name : ck.names()) {
    std::vector<float> v = f32(name);
    const Tensor t = ck.get(name);
    const bool matrix = t.ndim == 2 && name != "model.embed_tokens.weight";
    const std::string layer = name.substr(0, name.find(".self_attn") != std::string::npos ? name.find(".self_attn")
                                                                                           : name.find(".mlp"));
    if (matrix) {
      const int64_t K = t.shape[1];
      std::string norm;
      if (name.find("q_proj") != std::string::npos || name.find("k_proj") != std::string::npos ||
          name.find("v_proj") != std::string::npos)
        norm = layer + ".input_layernorm.weight";
      if (name.find("gate_proj") != std::string::npos || name.find("up_proj") != std::string::npos)
        norm = layer + ".post_attention_layernorm.weight";
      if (!norm.empty()) {
        const std::vector<float> g = f32(norm);
        for (size_t i = 0; i < v.size(); ++i) v[i] *= g[i % K];
      }
      round_trip(v, K);
    }
    if (name.ends_with("input_layernorm.weight") || name.ends_with("post_attention_layernorm.weight"))
      std::fill(v.begin(), v.end(), 1.0f);
    vals[name] = std::move(v);
    Tensor w(vals[name].data(), DType::f32, {});
    for (int i = 0; i < t.ndim; ++i) w.shape[w.ndim++] = t.shape[i];
    out.emplace_back(name, w);
  }
  save_safetensors(ref / "model.safetensors", out);
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(d.path / "f32/config.json"));
  cfg["torch_dtype"] = "float32";
  std::ofstream(ref / "config.json") << cfg.dump(2);

  {
    const ModelConfig c = load_model_config(d.path / "f32");
    auto be = make_backend(DeviceKind::cpu, {.num_threads = 2, .fp8_weights = true});
    DecoderModel m(c, ck, *be, 16, 1);
    EXPECT_EQ(m.weight_dtype(), DType::f32);
    EXPECT_TRUE(m.folds_norms());
  }
  const auto got = prompt_logits(d.path / "f32", {.num_threads = 2, .fp8_weights = true}, kPrompt);
  const auto want = prompt_logits(ref, {.num_threads = 2}, kPrompt);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << i;
}

// ---- against transformers (tests/fixtures/fp8, made on the GPU machine) ----

// expected.json: {"dequantized": [{"name", "shape", "offset"}] into dequantized.bin (transformers'
// Fp8Dequantize of the bf16 model: bf16 bits, little-endian, row-major), "prompts": [{"ids",
// "greedy", "greedy_margins", "last_logits"}] of transformers' dequantized model run in float64}.
TEST(Fp8VsTransformers, DequantizedWeightsBitForBitAndLogits) {
  const fs::path dir = fs::path(NANOVLLM_SOURCE_DIR) / "tests/fixtures/fp8";
  if (!fs::exists(dir / "expected.json"))
    GTEST_SKIP() << "tests/fixtures/fp8/expected.json is not there yet: run tests/reference/make_fp8_fixtures.py on "
                    "the GPU machine (docs/models.md, FP8)";
  const nlohmann::json j = nlohmann::json::parse(std::ifstream(dir / "expected.json"));
  const fs::path model = dir / "model";
  std::ifstream bin(dir / "dequantized.bin", std::ios::binary);
  const std::string blob(std::istreambuf_iterator<char>(bin), {});
  const ModelConfig c = load_model_config(model);
  const Checkpoint ck = Checkpoint::open(model);
  auto be = make_backend(DeviceKind::cpu, {.num_threads = 2});
  int checked = 0;
  for (const auto& e : j.at("dequantized")) {
    const std::string name = e.at("name");
    const int64_t N = e.at("shape")[0], K = e.at("shape")[1];
    const size_t offset = e.at("offset");
    ASSERT_LE(offset + N * K * 2, blob.size()) << name;
    // nanovllm's dequantization on the CPU: upload_convert of the scaled FP8 matrix into bf16.
    HostFp8 m = load_fp8_matrix(ck, c.quant, name, N, K);
    std::vector<uint16_t> got(N * K);
    Tensor dst(got.data(), DType::bf16, {N, K});
    be->upload_convert(m.tensor(), dst);
    ASSERT_EQ(0, std::memcmp(got.data(), blob.data() + offset, got.size() * 2)) << name;
    ++checked;
  }
  EXPECT_GE(checked, 2);
  // The model's last-position logits within 1e-4 of the row's range (+ 1e-6) of transformers'
  // float64 run of its own dequantized (bf16) weights: the same weights, float32 against float64
  // sums (~1e-6 relative); a wrong weight or scale moves logits by a fair part of the range. The
  // greedy tokens are equal up to the first step whose top-2 margin is under 1e-4 (the random
  // weights, ~N(0, 0.02), give small logits).
  for (const auto& p : j.at("prompts")) {
    const std::vector<int32_t> ids = p.at("ids");
    const std::vector<double> want = p.at("last_logits");
    const auto got = prompt_logits(model, {.num_threads = 2}, ids);
    ASSERT_EQ(got.size(), want.size());
    const auto [lo, hi] = std::minmax_element(want.begin(), want.end());
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
    std::printf("  prompt of %zu: logits within %.2e of transformers' (row range %.3f)\n", ids.size(), worst, *hi - *lo);
    EXPECT_LT(worst, 1e-6 + 1e-4 * (*hi - *lo)) << "prompt of " << ids.size();
  }
  EngineConfig ec = fixtures::cpu_engine_config(16, 512, 512);
  ec.model = model.string();
  ec.kv_cache_dtype = "float32";
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& p : j.at("prompts")) prompts.push_back(p.at("ids").get<std::vector<int32_t>>());
  const int n = static_cast<int>(j.at("prompts")[0].at("greedy").size());
  const auto outs = LLM(ec.model, ec).generate(prompts, fixtures::greedy(n), false);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto& p = j.at("prompts")[i];
    const std::vector<int32_t> want = p.at("greedy");
    const std::vector<double> margins = p.at("greedy_margins");
    const auto& got = outs[i].token_ids();
    for (size_t k = 0; k < want.size() && k < got.size(); ++k) {
      if (margins[k] < 1e-4) break;  // a near tie: the paths may part here
      ASSERT_EQ(got[k], want[k]) << "prompt " << i << " token " << k;
    }
  }
}

}  // namespace
}  // namespace nanovllm
