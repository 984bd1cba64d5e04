// The CUDA engine's logits at least as close to float32 as transformers' own bf16, on every
// committed numerics fixture (tests/fixtures/numerics, made by
// tests/reference/make_numerics_fixtures.py): bench_numerics --check runs the four batch
// settings (mixed batch with decode graphs, chunked prefill, prefix-cache hits, eager) and fails
// where the error's mean or 99th percentile at a prompt length, or the greedy agreement, is worse.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include "backend/backend.h"

namespace nanovllm {
namespace {

namespace fs = std::filesystem;

// bench_numerics beside this test binary (a copied bundle), else in the build tree.
std::string bench_numerics() {
  std::array<char, 4096> self{};
  const ssize_t n = readlink("/proc/self/exe", self.data(), self.size() - 1);
  if (n > 0) {
    const fs::path beside = fs::path(std::string(self.data(), static_cast<size_t>(n))).parent_path() / "bench_numerics";
    if (fs::exists(beside)) return beside.string();
  }
  return NANOVLLM_BENCH_NUMERICS;
}

class CudaNumerics : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda_available(&why)) GTEST_SKIP() << "CUDA numerics test skipped: " << why;
  }
};

TEST_P(CudaNumerics, NoWorseThanTransformersBf16) {
  const fs::path src(NANOVLLM_SOURCE_DIR);
  const fs::path model = src / "tests/fixtures/models" / GetParam();
  const fs::path fixture = src / "tests/fixtures/numerics" / (GetParam() + ".json");
  ASSERT_TRUE(fs::exists(fixture)) << fixture;
  const std::string cmd = bench_numerics() + " --check --model " + model.string() + " --fixture " + fixture.string() +
                          " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  std::array<char, 4096> buf;
  size_t got;
  while ((got = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), got);
  const int status = pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << cmd << "\n" << out;
  EXPECT_NE(out.find("argmax equal to float32's"), std::string::npos) << out;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaNumerics, ::testing::Values("tiny-tied", "small-untied", "tiny-tied-bf16"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

}  // namespace
}  // namespace nanovllm
