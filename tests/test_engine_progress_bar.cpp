// ProgressBar: nano-vLLM's tqdm line, "Generating: 12/256 [00:03<00:20, Prefill 5123tok/s, Decode 1234tok/s]".
#include <gtest/gtest.h>

#include "engine/progress_bar.h"

namespace nanovllm {
TEST(ProgressBar, FormatsLikeTqdm) {
  // 12 of 256 done in 3 s: 244 left at 0.25 s each = 61 s.
  EXPECT_EQ(ProgressBar::format(12, 256, 3.0, 5123.4, 1234.4),
            "Generating: 12/256 [00:03<01:01, Prefill 5123tok/s, Decode 1234tok/s]");
  EXPECT_EQ(ProgressBar::format(0, 4, 0.2, 0, 0), "Generating: 0/4 [00:00<?, Prefill 0tok/s, Decode 0tok/s]");
  EXPECT_EQ(ProgressBar::format(4, 4, 3725.0, 10, 20), "Generating: 4/4 [1:02:05<00:00, Prefill 10tok/s, Decode 20tok/s]");
}
}  // namespace nanovllm
