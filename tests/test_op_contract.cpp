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
              AllOf(HasSubstr("silu_mul"), HasSubstr("x has shape [3, 9]"), HasSubstr("even")));
  Tensor gu2 = f32({3, 8}), rows = f32({2, 16});  // the folded norm's rows must match x's
  EXPECT_THAT(error_of([&] { be->silu_mul(gu2, FoldedNorm{&rows, 1e-6f}, act); }),
              AllOf(HasSubstr("silu_mul"), HasSubstr("folded.rows"), HasSubstr("3 non-empty rows")));
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
  RopeStore in{qkv, FoldedNorm{}, norm, norm, Tensor(pos.data(), DType::i32, {T}), cos_sin, 1e-6f, Hq, 3,
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
}

TEST_F(OpContract, SampleChecksDtypesAndTemperatures) {
  const int B = 2, V = 5;
  Tensor logits = f32({B, V}), temps = f32({B});
  std::vector<int64_t> keys(B), ctrs(B);
  std::vector<int32_t> picks(B);
  Tensor tk(keys.data(), DType::i64, {B}), tc(ctrs.data(), DType::i64, {B}), out(picks.data(), DType::i32, {B});
  EXPECT_THAT(error_of([&] { be->sample(logits, temps, tk, tc, logits); }),
              HasSubstr("sample: out has dtype F32, expected I32"));
  temps.ptr<float>()[1] = -1.0f;
  EXPECT_THAT(error_of([&] { be->sample(logits, temps, tk, tc, out); }), HasSubstr("temperature -1"));
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
