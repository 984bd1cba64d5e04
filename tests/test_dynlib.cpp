// Libraries loaded at run time instead of linked (src/backend/cuda/dynlib.h): the loader's own
// behaviour, and what it is for: a process that never sets up a CUDA GEMM does not pay for
// cuBLASLt (linked, the dynamic loader's mapping of it alone took ~210 MB of resident memory).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <string>

#if NANOVLLM_WITH_CUDA
#include "backend/cuda/dynlib.h"
#endif

extern char** environ;

namespace nanovllm {
namespace {

// Peak resident memory (KiB) of `nanovllm --help`, the process's start-up and nothing else.
long help_peak_rss_kib() {
  const std::string binary = NANOVLLM_BINARY;
  char* argv[] = {const_cast<char*>(binary.c_str()), const_cast<char*>("--help"), nullptr};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return -1;
  int status = 0;
  rusage ru{};
  if (wait4(pid, &status, 0, &ru) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  return ru.ru_maxrss;
}

TEST(Dynlib, StartingTheBinaryLoadsNoGpuLibrary) {
  const long kib = help_peak_rss_kib();
  ASSERT_GT(kib, 0) << NANOVLLM_BINARY << " --help did not run";
  // A few tens of MB (more under the sanitizers); cuBLASLt linked made it over 200.
  EXPECT_LT(kib, 120 * 1024) << "peak RSS of nanovllm --help: " << kib << " KiB";
}

#if NANOVLLM_WITH_CUDA
TEST(Dynlib, OpenFirstTakesTheFirstThatLoadsAndNamesAllWhenNoneDoes) {
  std::string tried;
  EXPECT_EQ(cuda::open_first({"libnanovllm-missing-1.so", "/nonexistent/libnanovllm-missing-2.so"}, &tried), nullptr);
  EXPECT_EQ(tried, "libnanovllm-missing-1.so /nonexistent/libnanovllm-missing-2.so");

  void* libm = cuda::open_first({"libnanovllm-missing-1.so", "libm.so.6"}, &tried);
  ASSERT_NE(libm, nullptr);
  double (*cos_fn)(double) = nullptr;
  std::string error;
  cuda::bind_symbol(libm, cos_fn, "cos", "libm", error);
  ASSERT_NE(cos_fn, nullptr);
  EXPECT_EQ(cos_fn(0.0), 1.0);
  EXPECT_TRUE(error.empty());

  double (*missing)(double) = nullptr;
  cuda::bind_symbol(libm, missing, "nanovllm_no_such_symbol", "libm", error);
  EXPECT_EQ(missing, nullptr);
  EXPECT_EQ(error, "libm library has no symbol nanovllm_no_such_symbol");
}
#endif

}  // namespace
}  // namespace nanovllm
