// Percentiles and summaries against numpy.percentile's (linear) values worked by hand.
#include <gtest/gtest.h>

#include <stdexcept>

#include "cli/bench/stats.h"

namespace nanovllm {
namespace {

TEST(Stats, PercentileInterpolatesLikeNumpy) {
  std::vector<double> v{10, 1, 9, 2, 8, 3, 7, 4, 6, 5};  // order must not matter
  EXPECT_DOUBLE_EQ(percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(percentile(v, 100), 10);
  EXPECT_DOUBLE_EQ(percentile(v, 50), 5.5);   // rank 4.5
  EXPECT_DOUBLE_EQ(percentile(v, 95), 9.55);  // rank 8.55
  EXPECT_DOUBLE_EQ(percentile(v, 99), 9.91);  // rank 8.91
  EXPECT_DOUBLE_EQ(percentile({42}, 99), 42);
  EXPECT_DOUBLE_EQ(percentile({1, 3}, 25), 1.5);
}

TEST(Stats, SummaryOfOneToTen) {
  Summary s = summarize({10, 1, 9, 2, 8, 3, 7, 4, 6, 5});
  EXPECT_EQ(s.count, 10);
  EXPECT_DOUBLE_EQ(s.mean, 5.5);
  EXPECT_DOUBLE_EQ(s.p50, 5.5);
  EXPECT_DOUBLE_EQ(s.p95, 9.55);
  EXPECT_DOUBLE_EQ(s.p99, 9.91);
  EXPECT_DOUBLE_EQ(s.min, 1);
  EXPECT_DOUBLE_EQ(s.max, 10);
  EXPECT_NEAR(s.stdev, 3.0276503540974917, 1e-12);  // statistics.stdev(range(1, 11))
  EXPECT_EQ(summarize({3.0}).stdev, 0.0);
}

TEST(Stats, EmptyOrBadInputThrows) {
  EXPECT_THROW(summarize({}), std::invalid_argument);
  EXPECT_THROW(percentile({}, 50), std::invalid_argument);
  EXPECT_THROW(percentile({1, 2}, 101), std::invalid_argument);
}

}  // namespace
}  // namespace nanovllm
