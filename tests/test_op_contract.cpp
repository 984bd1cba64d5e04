// The op contract (backend/op_contract.cpp) on the CPU backend: a bad device, dtype or shape is
// rejected before any backend code runs, with a message naming the op, the tensor and what was
// expected. The CUDA backend shares these checks; test_backend_ops.cpp holds its ops to the CPU's.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace nanovllm {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// The message of the std::invalid_argument `fn` throws ("" and a failure when none).
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  ADD_FAILURE() << "no std::invalid_argument";
  return "";
}

class OpContract : public ::testing::Test {
 protected:
  Tensor f32(std::initializer_list<int64_t> shape) {
    Tensor t(nullptr, DType::f32, shape);
    store_.emplace_back(static_cast<size_t>(t.numel()), 0.0f);
    t.data = store_.back().data();
    return t;
  }
  std::unique_ptr<Backend> be = make_backend(DeviceKind::cpu, {.num_threads = 1});
  std::vector<std::vector<float>> store_;
};

TEST_F(OpContract, RejectsAWrongDtypeNamingOpAndTensor) {
  Tensor x = f32({2, 8}), w = f32({4, 8}), out = f32({2, 4});
  std::vector<int32_t> ints(16);
  Tensor xi(ints.data(), DType::i32, {2, 8});
  EXPECT_THAT(error_of([&] { be->linear(xi, w, out); }), AllOf(HasSubstr("linear"), HasSubstr("x"), HasSubstr("I32"),
                                                               HasSubstr("expected F32")));
  Tensor ids = f32({2});  // token ids must be i32
  Tensor table = f32({10, 8}), emb = f32({2, 8});
  EXPECT_THAT(error_of([&] { be->embedding(ids, table, emb); }),
              AllOf(HasSubstr("embedding: ids has dtype F32, expected I32")));
  (void)x;
}

TEST_F(OpContract, RejectsMismatchedShapes) {
  Tensor x = f32({2, 8}), w = f32({4, 7}), out = f32({2, 4});
  EXPECT_THAT(error_of([&] { be->linear_add(x, w, out); }),
              AllOf(HasSubstr("linear_add"), HasSubstr("w has shape [4, 7]"), HasSubstr("[N, 8]")));
  Tensor norm_w = f32({8}), small = f32({2, 7});
  EXPECT_THAT(error_of([&] { be->rms_norm(x, norm_w, 1e-6f, small); }),
              AllOf(HasSubstr("rms_norm"), HasSubstr("out has shape [2, 7]"), HasSubstr("2 rows of 8")));
  Tensor gu = f32({3, 9}), act = f32({3, 4});
  EXPECT_THAT(error_of([&] { be->silu_mul(gu, FoldedNorm{}, act); }),
              AllOf(HasSubstr("act_mul"), HasSubstr("x has shape [3, 9]"), HasSubstr("even")));
  Tensor nx = f32({3, 8}), nw = f32({8}), gate_up_w = f32({7, 8}), gate_up = f32({3, 7}), normed = f32({3, 8});
  EXPECT_THAT(error_of([&] { be->norm_linear_act(nx, nw, 1e-6f, gate_up_w, Activation::silu, act, gate_up, normed); }),
              AllOf(HasSubstr("norm_linear_act"), HasSubstr("w has 7 rows"), HasSubstr("even")));
  Tensor gate_up_w2 = f32({8, 8}), gate_up2 = f32({3, 8});  // I = 4: out must be [3, 4]
  Tensor act_wrong = f32({3, 5});
  EXPECT_THAT(
      error_of([&] { be->norm_linear_act(nx, nw, 1e-6f, gate_up_w2, Activation::silu, act_wrong, gate_up2, normed); }),
      AllOf(HasSubstr("norm_linear_act"), HasSubstr("out has shape [3, 5]")));
  Tensor gu2 = f32({3, 8}), rows = f32({2, 16});  // the folded norm's rows must match x's
  EXPECT_THAT(error_of([&] { be->silu_mul(gu2, FoldedNorm{&rows, 1e-6f}, act); }),
              AllOf(HasSubstr("act_mul"), HasSubstr("folded.rows"), HasSubstr("3 non-empty rows")));
}

TEST_F(OpContract, RejectsATensorOnAnotherDevice) {
  Tensor x = f32({2, 8}), w = f32({4, 8}), out = f32({2, 4});
  Tensor on_gpu = w;
  on_gpu.device = DeviceKind::cuda;
  EXPECT_THAT(error_of([&] { be->linear(x, on_gpu, out); }),
              HasSubstr("linear: w is a CUDA tensor, expected a CPU tensor"));
  Tensor scale = f32({8});
  EXPECT_THAT(error_of([&] { be->scale_columns(on_gpu, scale); }), HasSubstr("scale_columns: w is a CUDA tensor"));
  Tensor dst = f32({8});
  Tensor gpu_src = scale;
  gpu_src.device = DeviceKind::cuda;
  EXPECT_THAT(error_of([&] { be->upload_convert(gpu_src, dst); }), HasSubstr("upload_convert: the source"));
}

TEST_F(OpContract, AttentionAndRopeStoreCheckHeadsCacheAndMetadata) {
  const int T = 2, Hq = 4, Hkv = 2, D = 8, nb = 2, bs = 4;
  Tensor q = f32({T, Hq, D}), out = f32({T, Hq, D});
  PagedKV cache{f32({nb, bs, Hkv, D}), f32({nb, bs, Hkv, D})};
  PagedKV odd{f32({nb, bs, 3, D}), f32({nb, bs, 3, D})};  // 4 query heads over 3 kv heads
  AttentionMetadata meta;
  meta.num_tokens = T;
  EXPECT_THAT(error_of([&] { be->attention(q, odd, meta, 1.0f, out); }),
              AllOf(HasSubstr("attention"), HasSubstr("4 heads"), HasSubstr("3 kv heads")));
  EXPECT_THAT(error_of([&] { be->attention(q, cache, meta, 1.0f, out); }),
              AllOf(HasSubstr("attention"), HasSubstr("metadata is missing")));
  PagedKV uneven{f32({nb, bs, Hkv, D}), f32({nb, bs + 1, Hkv, D})};
  EXPECT_THAT(error_of([&] { be->attention(q, uneven, meta, 1.0f, out); }),
              AllOf(HasSubstr("attention"), HasSubstr("v_cache has shape [2, 5, 2, 8]"), HasSubstr("[2, 4, 2, 8]")));

  std::vector<int32_t> pos = {0, 1}, slots = {0, 1};
  Tensor qkv = f32({T, (Hq + 2 * Hkv) * D}), norm = f32({D}), cos_sin = f32({16, D});
  RopeStore in{qkv, FoldedNorm{}, Tensor(), norm, norm, Tensor(pos.data(), DType::i32, {T}), cos_sin, 1e-6f, Hq, 3,
               slots.data()};
  EXPECT_THAT(error_of([&] { be->qk_norm_rope_store(in, cache, q); }),
              AllOf(HasSubstr("qk_norm_rope_store"), HasSubstr("num_kv_heads 3")));
  in.num_kv_heads = Hkv;
  in.slot_mapping = nullptr;
  EXPECT_THAT(error_of([&] { be->qk_norm_rope_store(in, cache, q); }), HasSubstr("slot_mapping is missing"));
  in.slot_mapping = slots.data();
  pos[1] = 16;  // past the rope table: a value check, done on the host-visible CPU data
  EXPECT_THAT(error_of([&] { be->qk_norm_rope_store(in, cache, q); }), HasSubstr("position 16 outside the rope table"));
  pos[1] = 1;
  EXPECT_NO_THROW(be->qk_norm_rope_store(in, cache, q));

  // rope_attention: both ops' checks under its name, one slot_mapping for both, and on the CPU
  // the two ops in turn (q written too).
  std::vector<int32_t> cu = {0, 1, 2}, lens = {1, 2}, tables = {0, -1, 1, -1};
  slots = {0, 5};  // sequence 0's position 0 in block 0, sequence 1's position 1 in block 1
  meta = {.num_seqs = 2, .num_tokens = T, .max_seqlen_q = 1, .max_seqlen_k = 2, .cu_seqlens_q = cu.data(),
          .seqlens_k = lens.data(), .slot_mapping = slots.data(), .block_tables = tables.data(), .max_num_blocks = 2};
  const AttentionOptions opts{.scale = 0.5f};
  in.num_kv_heads = 3;
  EXPECT_THAT(error_of([&] { be->rope_attention(in, cache, meta, opts, q, out); }),
              AllOf(HasSubstr("rope_attention"), HasSubstr("num_kv_heads 3")));
  in.num_kv_heads = Hkv;
  EXPECT_THAT(error_of([&] { be->rope_attention(in, odd, meta, opts, q, out); }), HasSubstr("rope_attention"));
  AttentionMetadata other = meta;
  std::vector<int32_t> other_slots = slots;
  other.slot_mapping = other_slots.data();
  EXPECT_THAT(error_of([&] { be->rope_attention(in, cache, other, opts, q, out); }),
              HasSubstr("rope_attention: the RoPE's slot_mapping is not the metadata's"));
  for (Tensor* t : {&qkv, &norm, &cos_sin})
    for (int64_t i = 0; i < t->numel(); ++i) t->ptr<float>()[i] = 0.25f * static_cast<float>((i * 7) % 11) - 1.f;
  PagedKV two{f32({nb, bs, Hkv, D}), f32({nb, bs, Hkv, D})};
  Tensor q2 = f32({T, Hq, D}), out2 = f32({T, Hq, D});
  be->qk_norm_rope_store(in, two, q2);
  be->attention(q2, two, meta, opts, out2);
  be->rope_attention(in, cache, meta, opts, q, out);
  auto values = [](const Tensor& t) { return std::vector<float>(t.ptr<float>(), t.ptr<float>() + t.numel()); };
  EXPECT_EQ(values(q), values(q2));
  EXPECT_EQ(values(out), values(out2));
  EXPECT_EQ(values(cache.k), values(two.k));
  EXPECT_EQ(values(cache.v), values(two.v));
  EXPECT_NE(values(out), std::vector<float>(out.numel(), 0.f));
}

TEST_F(OpContract, SampleChecksDtypesAndSettings) {
  const int B = 2, V = 5;
  Tensor logits = f32({B, V});
  std::vector<SamplingRow> rows(B);
  std::vector<int32_t> picks(B), filtered;
  Tensor out(picks.data(), DType::i32, {B});
  SampleBatch batch;
  batch.rows = rows.data();
  EXPECT_THAT(error_of([&] { be->sample(logits, batch, logits); }), HasSubstr("sample: out has dtype F32, expected I32"));
  rows[1].temperature = -1.0f;
  EXPECT_THAT(error_of([&] { be->sample(logits, batch, out); }), HasSubstr("temperature -1"));
  rows[1] = SamplingRow{.temperature = 1.0f, .top_p = 0.0f};
  EXPECT_THAT(error_of([&] { be->sample(logits, batch, out); }), HasSubstr("top_p 0"));
  rows[1] = SamplingRow{.temperature = 1.0f, .top_k = 3};  // filtered, but not listed
  EXPECT_THAT(error_of([&] { be->sample(logits, batch, out); }), HasSubstr("filtered_rows does not list row 1"));
  filtered = {1};
  batch.filtered_rows = filtered.data();
  batch.num_filtered = 1;
  EXPECT_NO_THROW(be->sample(logits, batch, out));
  rows[0].repetition_penalty = 1.2f;  // penalties need a counts row
  EXPECT_THAT(error_of([&] { be->sample(logits, batch, out); }), HasSubstr("without a counts row"));
  rows[0] = SamplingRow{};
  std::vector<int32_t> add_ids = {7};
  std::vector<float> add_values = {1.0f};
  batch.add_ids = add_ids.data();
  batch.add_values = add_values.data();
  batch.num_adds = 1;
  rows[0].adds_end = 1;
  EXPECT_THAT(error_of([&] { be->sample(logits, batch, out); }), HasSubstr("sparse add id 7 outside the vocabulary"));
}

TEST_F(OpContract, LogprobsChecksRowsIdsAndTop) {
  const int B = 2, V = 5;
  Tensor logits = f32({B, V});
  std::vector<int32_t> rows = {0, 1}, ids = {4, 1}, ranks(2), top_ids(6);
  std::vector<float> lp(2), top_lp(6);
  LogprobsOut o{Tensor(lp.data(), DType::f32, {2}), Tensor(ranks.data(), DType::i32, {2}),
                Tensor(top_ids.data(), DType::i32, {2, 3}), Tensor(top_lp.data(), DType::f32, {2, 3})};
  Tensor tr(rows.data(), DType::i32, {2}), ti(ids.data(), DType::i32, {2});
  EXPECT_NO_THROW(be->logprobs(logits, tr, ti, 3, o));
  EXPECT_THAT(error_of([&] { be->logprobs(logits, tr, ti, 6, o); }), HasSubstr("num_top 6 outside [0, 5]"));
  ids[1] = 5;
  EXPECT_THAT(error_of([&] { be->logprobs(logits, tr, ti, 3, o); }), HasSubstr("token id 5 at row 1 is outside the vocabulary"));
  ids[1] = 1;
  rows[0] = 2;
  EXPECT_THAT(error_of([&] { be->logprobs(logits, tr, ti, 3, o); }), HasSubstr("row 2 at row 0 is outside logits' rows"));
}

TEST(TensorMatrix, RowsTimesColsIsNumel) {
  EXPECT_EQ(rows_of(Tensor(nullptr, DType::f32, {2, 3, 4})), 6);
  EXPECT_EQ(cols_of(Tensor(nullptr, DType::f32, {2, 3, 4})), 4);
  EXPECT_EQ(rows_of(Tensor(nullptr, DType::f32, {5, 0})), 5);  // a zero-width last dim keeps its rows
  EXPECT_EQ(rows_of(Tensor()), 1);
  EXPECT_EQ(cols_of(Tensor()), 1);
}

}  // namespace
}  // namespace nanovllm
