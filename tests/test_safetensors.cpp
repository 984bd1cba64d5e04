// Checkpoint and save_safetensors: round trips, sharded checkpoints via the index, and every kind
// of corrupt file giving an error that names the file and tensor (never a crash).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "model/safetensors.h"

namespace nanovllm {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;

class Safetensors : public ::testing::Test {
 protected:
  fs::path dir;
  void SetUp() override {
    dir = fs::temp_directory_path() / ("nanovllm_st_" + std::to_string(::getpid()) + "_" +
                                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  void TearDown() override { fs::remove_all(dir); }

  // A hand-built file: 8-byte length, the header text as given, then `data_bytes` bytes.
  void raw(const std::string& name, const std::string& header, size_t data_bytes, bool fix_len = true,
           uint64_t len = 0) {
    std::ofstream out(dir / name, std::ios::binary);
    uint64_t n = fix_len ? header.size() : len;
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << header;
    out << std::string(data_bytes, '\0');
  }
  std::string error() {
    try {
      Checkpoint::open(dir);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "(no error)";
  }
};

TEST_F(Safetensors, RoundTripsEveryDtype) {
  std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -8.5f};
  std::vector<uint16_t> b = {0x3f80, 0xc000, 0x4049};  // bf16 1, -2, 3.140625
  std::vector<uint16_t> h = {0x3c00, 0x4000};          // f16 1, 2
  std::vector<int32_t> i = {5, -6};
  std::vector<int64_t> l = {1LL << 40};
  save_safetensors(dir / "model.safetensors",
                   {{"a", Tensor(a.data(), DType::f32, {2, 3})},
                    {"b", Tensor(b.data(), DType::bf16, {3})},
                    {"h", Tensor(h.data(), DType::f16, {1, 2})},
                    {"i", Tensor(i.data(), DType::i32, {2})},
                    {"l", Tensor(l.data(), DType::i64, {1})},
                    {"empty", Tensor(a.data(), DType::f32, {0, 4})}},
                   {{"note", "test"}});
  // The header as the format defines it: little-endian u64 length, JSON, 8-byte aligned data.
  std::ifstream in(dir / "model.safetensors", std::ios::binary);
  uint64_t len = 0;
  in.read(reinterpret_cast<char*>(&len), 8);
  std::string header(len, ' ');
  in.read(header.data(), static_cast<std::streamsize>(len));
  EXPECT_EQ(len % 8, 0u);
  EXPECT_THAT(header, HasSubstr(R"("__metadata__":{"format":"pt","note":"test"})"));
  EXPECT_THAT(header, HasSubstr(R"("a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]})"));
  EXPECT_THAT(header, HasSubstr(R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[24,30]})"));

  Checkpoint ck = Checkpoint::open(dir);
  EXPECT_EQ(ck.names(), (std::vector<std::string>{"a", "b", "h", "i", "l", "empty"}));
  Tensor ta = ck.get("a", {2, 3});
  EXPECT_EQ(ta.dtype, DType::f32);
  EXPECT_EQ(std::memcmp(ta.data, a.data(), 24), 0);
  Tensor tb = ck.get("b");
  EXPECT_EQ(tb.dtype, DType::bf16);
  EXPECT_EQ(tb.shape_str(), "[3]");
  EXPECT_EQ(std::memcmp(tb.data, b.data(), 6), 0);
  EXPECT_EQ(ck.get("h").dtype, DType::f16);
  EXPECT_EQ(ck.get("i").ptr<int32_t>()[1], -6);
  EXPECT_EQ(ck.get("l").ptr<int64_t>()[0], 1LL << 40);
  EXPECT_EQ(ck.get("empty").numel(), 0);
  EXPECT_TRUE(ck.contains("a"));
  EXPECT_FALSE(ck.contains("z"));
  try {
    ck.get("z");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("'z'"));
  }
  try {
    ck.get("a", {3, 2});
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("[2, 3]"));
    EXPECT_THAT(e.what(), HasSubstr("[3, 2]"));
    EXPECT_THAT(e.what(), HasSubstr("'a'"));
  }
}

// The format does not promise that a tensor's offset is a multiple of its element size (other
// writers pack tensors back to back): such a tensor is read through an aligned copy, so loading
// its elements is defined behaviour (UBSan reported misaligned loads before).
TEST_F(Safetensors, TensorsAtUnalignedOffsetsAreReadAligned) {
  const std::vector<uint16_t> b = {0x3f80, 0xc000, 0x4049};  // bf16, 6 bytes: the next tensor starts at 6
  const std::vector<float> a = {1.5f, -2.0f, 3.25f};
  const std::vector<int64_t> l = {1LL << 40, -7};
  std::string header = R"({"b":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]},)"
                       R"("a":{"dtype":"F32","shape":[3],"data_offsets":[6,18]},)"
                       R"("l":{"dtype":"I64","shape":[2],"data_offsets":[18,34]}})";
  header.append((8 - header.size() % 8) % 8, ' ');  // the data itself starts 8-aligned in the file
  {
    std::ofstream out(dir / "model.safetensors", std::ios::binary);
    const uint64_t n = header.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << header;
    out.write(reinterpret_cast<const char*>(b.data()), 6);
    out.write(reinterpret_cast<const char*>(a.data()), 12);
    out.write(reinterpret_cast<const char*>(l.data()), 16);
  }
  Checkpoint ck = Checkpoint::open(dir);
  const Tensor ta = ck.get("a", {3}), tl = ck.get("l", {2});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(ta.data) % alignof(float), 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(tl.data) % alignof(int64_t), 0u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(ta.ptr<float>()[i], a[i]);
  EXPECT_EQ(tl.ptr<int64_t>()[0], 1LL << 40);
  EXPECT_EQ(tl.ptr<int64_t>()[1], -7);
  EXPECT_EQ(std::memcmp(ck.get("b").data, b.data(), 6), 0);
}

TEST_F(Safetensors, ShardedCheckpointThroughTheIndex) {
  std::vector<float> x = {1, 2, 3, 4}, y = {5, 6};
  save_safetensors(dir / "model-00001-of-00002.safetensors", {{"x", Tensor(x.data(), DType::f32, {4})}});
  save_safetensors(dir / "model-00002-of-00002.safetensors", {{"y", Tensor(y.data(), DType::f32, {2})}});
  std::ofstream(dir / "model.safetensors.index.json")
      << R"({"metadata": {"total_size": 24}, "weight_map": {"x": "model-00001-of-00002.safetensors",
                                                           "y": "model-00002-of-00002.safetensors"}})";
  Checkpoint ck = Checkpoint::open(dir);
  EXPECT_EQ(ck.get("x").ptr<float>()[3], 4.0f);
  EXPECT_EQ(ck.get("y").ptr<float>()[1], 6.0f);

  // A stray file that the index does not name is ignored; a tensor the index names must exist.
  std::ofstream(dir / "model.safetensors.index.json")
      << R"({"weight_map": {"x": "model-00001-of-00002.safetensors", "w": "model-00002-of-00002.safetensors"}})";
  EXPECT_THAT(error(), HasSubstr("'w'"));
  std::ofstream(dir / "model.safetensors.index.json") << R"({"weight_map": {"x": "model-00003.safetensors"}})";
  EXPECT_THAT(error(), HasSubstr("model-00003.safetensors"));
  std::ofstream(dir / "model.safetensors.index.json") << R"({"weight_map": )";
  EXPECT_THAT(error(), HasSubstr("model.safetensors.index.json"));

  // Without an index every *.safetensors file is read; a tensor in two files is an error.
  fs::remove(dir / "model.safetensors.index.json");
  EXPECT_EQ(Checkpoint::open(dir).names().size(), 2u);
  save_safetensors(dir / "extra.safetensors", {{"x", Tensor(x.data(), DType::f32, {4})}});
  EXPECT_THAT(error(), HasSubstr("'x' also appears"));
}

TEST_F(Safetensors, EmptyDirectoryOrMissingDirectory) {
  EXPECT_THAT(error(), HasSubstr("no *.safetensors"));
  EXPECT_THROW(Checkpoint::open(dir / "missing"), std::runtime_error);
}

TEST_F(Safetensors, CorruptFilesGiveNamedErrors) {
  const std::string good = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  struct Case { std::string header; size_t data; std::string want; };
  const std::vector<Case> cases = {
      {R"({"t":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8, "unsupported dtype Q4 for tensor t in file"},
      {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4, "truncated"},
      {R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, "needs 12"},
      {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8, "reversed"},
      {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8, "data_offsets"},
      {R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, "invalid shape"},
      {R"({"t":{"shape":[2],"data_offsets":[0,8]}})", 8, "dtype"},
      {R"({"t":{"dtype":"F32","data_offsets":[0,8]}})", 8, "shape"},
      {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"u":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12, "overlap"},
      {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", 8, "malformed JSON header"},
      {R"([1, 2])", 8, "not a JSON object"},
      {R"({"t": 5})", 8, "not an object"},
  };
  for (const auto& c : cases) {
    raw("model.safetensors", c.header, c.data);
    const std::string e = error();
    EXPECT_THAT(e, HasSubstr(c.want)) << c.header;
    EXPECT_THAT(e, HasSubstr("model.safetensors")) << c.header;
    if (c.header.find("\"t\":{") != std::string::npos && c.want != "malformed JSON header")
      EXPECT_THAT(e, HasSubstr("t")) << c.header;
  }
  raw("model.safetensors", good, 8, false, 1ULL << 50);  // header length beyond the file
  EXPECT_THAT(error(), HasSubstr("runs past the end of the file"));
  std::ofstream(dir / "model.safetensors", std::ios::binary) << "abc";  // shorter than the length field
  EXPECT_THAT(error(), HasSubstr("truncated"));
  raw("model.safetensors", good, 8);
  EXPECT_NO_THROW(Checkpoint::open(dir));
}

}  // namespace
}  // namespace nanovllm
