// Summaries of measured samples: mean, percentiles (numpy's default, linear interpolation),
// median, min/max and standard deviation, as benchmark reports print them.
#pragma once
#include <vector>

namespace nanovllm {

// The q-th percentile (q in [0, 100]) of `values`, interpolating linearly between the two
// nearest ranks like numpy.percentile(values, q). Throws on an empty input or q out of range.
double percentile(std::vector<double> values, double q);

struct Summary {
  int count = 0;
  double mean = 0, p50 = 0, p95 = 0, p99 = 0, min = 0, max = 0;
  double stdev = 0;  // sample standard deviation (n - 1), 0 for fewer than two samples
};

// Throws std::invalid_argument on an empty input.
Summary summarize(const std::vector<double>& values);

}  // namespace nanovllm
