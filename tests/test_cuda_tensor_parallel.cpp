// The CUDA backend's tensor-parallel group on one GPU: NCCL loads, a one-rank group forms, and its
// collectives run inside a captured CUDA graph (replayed on new data) as the decode graphs hold
// them. Several GPUs: scripts/multi_gpu.sh.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "backend/backend.h"
#include "backend/half.h"
#include "util/env_options.h"

namespace nanovllm {
namespace {

TEST(CudaTensorParallel, OneRankNcclGroupInsideACapturedGraph) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "CUDA tests skipped: " << why;
  std::unique_ptr<Backend> gpu = make_backend(DeviceKind::cuda, BackendOptions{}.with_env(env_options()));
  const std::string id = gpu->new_group_id(1);
  ASSERT_EQ(id.size(), 256u);  // NCCL's 128-byte unique id, as hex
  gpu->join_group(id, 0, 1);
  EXPECT_EQ(gpu->group_size(), 1);

  std::vector<DeviceBuffer> bufs;
  const int R = 3, V = 64;
  Tensor x = gpu->alloc_tensor(DType::bf16, {R, V}, bufs);
  Tensor gathered = gpu->alloc_tensor(DType::bf16, {R, V}, bufs);
  Tensor wide = gpu->alloc_tensor(DType::bf16, {R, 2 * V}, bufs);
  gpu->fill_zero(wide.data, wide.nbytes());
  auto ops = [&] {
    gpu->all_reduce(x);            // one rank: unchanged
    gpu->gather(x, gathered);      // rank 0 gets its own rows
    gpu->copy_columns(gathered, 0, wide, V, V);
  };
  const int graph = gpu->capture_graph(ops);
  for (int round = 0; round < 2; ++round) {
    std::vector<uint16_t> h(R * V);
    for (int i = 0; i < R * V; ++i) h[i] = f32_to_bf16(static_cast<float>(i % 97) * 0.5f + round);
    gpu->copy_to_device(x.data, h.data(), h.size() * 2);
    gpu->replay_graph(graph);
    std::vector<uint16_t> out(R * 2 * V);
    gpu->copy_to_host(out.data(), wide.data, out.size() * 2);
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < V; ++c) {
        ASSERT_EQ(out[r * 2 * V + c], 0) << "round " << round;
        ASSERT_EQ(out[r * 2 * V + V + c], h[r * V + c]) << "round " << round << " row " << r << " col " << c;
      }
  }
}

}  // namespace
}  // namespace nanovllm
