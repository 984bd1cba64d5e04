// EnvOptions (util/env_options.h): each NANOVLLM_* switch read as documented, a bad number
// rejected naming the variable, and the CUDA backend's options filled from them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <stdexcept>
#include <string>
#include <utility>

#include "backend/backend.h"
#include "util/env_options.h"

namespace nanovllm {
namespace {

// Sets the variables for one test and restores the previous environment after it.
class EnvOptionsTest : public ::testing::Test {
 protected:
  void set(const char* name, const char* value) {
    if (const char* old = std::getenv(name)) saved_.push_back({name, old, true});
    else saved_.push_back({name, "", false});
    setenv(name, value, 1);
  }
  // All five switches at once, then what read_env_options() makes of them.
  EnvOptions read_with(const char* sync, const char* partition, const char* pdl, const char* tune_all,
                       const char* trace) {
    set("NANOVLLM_CUDA_SYNC", sync);
    set("NANOVLLM_DECODE_PARTITION", partition);
    set("NANOVLLM_PDL", pdl);
    set("NANOVLLM_GEMM_TUNE_ALL", tune_all);
    set("NANOVLLM_STEP_TRACE", trace);
    return read_env_options();
  }
  void TearDown() override {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->had) setenv(it->name.c_str(), it->value.c_str(), 1);
      else unsetenv(it->name.c_str());
    }
  }

 private:
  struct Saved { std::string name, value; bool had; };
  std::vector<Saved> saved_;
};

TEST_F(EnvOptionsTest, ReadsEachSwitch) {
  const EnvOptions o = read_with("1", "512", "0", "1", "/tmp/steps.csv");
  EXPECT_TRUE(o.cuda_sync);
  EXPECT_EQ(o.decode_partition, 512);
  EXPECT_FALSE(o.pdl);
  EXPECT_TRUE(o.gemm_tune_all);
  EXPECT_EQ(o.step_trace, "/tmp/steps.csv");
  const BackendOptions b = BackendOptions{.num_threads = 3}.with_env(o);
  EXPECT_EQ(b.num_threads, 3);
  EXPECT_TRUE(b.cuda_sync);
  EXPECT_EQ(b.decode_partition, 512);
  EXPECT_FALSE(b.pdl);
  EXPECT_TRUE(b.gemm_tune_all);
}

TEST_F(EnvOptionsTest, DefaultsWhenUnsetOrOff) {
  const EnvOptions o = read_with("0", "", "1", "yes" /* only "1" turns it on */, "");
  EXPECT_FALSE(o.cuda_sync);
  EXPECT_EQ(o.decode_partition, 0);
  EXPECT_TRUE(o.pdl);
  EXPECT_FALSE(o.gemm_tune_all);
  EXPECT_EQ(o.step_trace, "");
}

// NANOVLLM_FP8_MMA: the FP8 tensor-core GEMM from 2 rows unless "0" ("all": from 1), into
// BackendOptions.
TEST_F(EnvOptionsTest, ReadsTheFp8MmaSwitch) {
  const std::pair<const char*, int> mma[] = {{"", 2}, {"0", 0}, {"all", 1}, {"1", 2}};
  for (auto [value, want] : mma) {
    set("NANOVLLM_FP8_MMA", value);
    EXPECT_EQ(read_env_options().fp8_mma, want) << "NANOVLLM_FP8_MMA=" << value;
  }
  set("NANOVLLM_FP8_MMA", "0");
  EXPECT_EQ(BackendOptions{}.with_env(read_env_options()).fp8_mma, 0);
  EXPECT_EQ(BackendOptions{}.fp8_mma, 2);
}

TEST_F(EnvOptionsTest, RejectsABadNumberNamingTheVariable) {
  set("NANOVLLM_DECODE_PARTITION", "12x");
  try {
    read_env_options();
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("NANOVLLM_DECODE_PARTITION=12x"));
  }
}

}  // namespace
}  // namespace nanovllm
