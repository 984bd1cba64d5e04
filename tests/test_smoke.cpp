// The Tensor view arithmetic every other part relies on.
#include <gtest/gtest.h>

#include "backend/tensor.h"

namespace nanovllm {
TEST(Tensor, RowsAndViews) {
  float buf[12];
  Tensor t(buf, DType::f32, {3, 4});
  EXPECT_EQ(t.numel(), 12);
  EXPECT_EQ(t.rows(1, 3).data, static_cast<void*>(buf + 4));
  EXPECT_EQ(t.rows(1, 3).size(0), 2);
  EXPECT_EQ(t.view({2, 6}).size(-1), 6);
}
}  // namespace nanovllm
