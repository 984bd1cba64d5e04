// Percentiles and summaries of benchmark samples.
#include "cli/bench/stats.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace nanovllm {

namespace {
// numpy's "linear" method on sorted input: rank h = (n - 1) q / 100, between floor(h) and ceil(h).
double sorted_percentile(const std::vector<double>& v, double q) {
  const double h = double(v.size() - 1) * q / 100.0;
  const size_t lo = size_t(std::floor(h));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (h - double(lo)) * (v[hi] - v[lo]);
}
}  // namespace

double percentile(std::vector<double> values, double q) {
  if (values.empty()) throw std::invalid_argument("percentile of an empty sample");
  if (!(q >= 0 && q <= 100)) throw std::invalid_argument("percentile q must be in [0, 100], got " + std::to_string(q));
  std::sort(values.begin(), values.end());
  return sorted_percentile(values, q);
}

Summary summarize(const std::vector<double>& values) {
  if (values.empty()) throw std::invalid_argument("summary of an empty sample");
  std::vector<double> v = values;
  std::sort(v.begin(), v.end());
  Summary s;
  s.count = int(v.size());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / double(v.size());
  s.p50 = sorted_percentile(v, 50);
  s.p95 = sorted_percentile(v, 95);
  s.p99 = sorted_percentile(v, 99);
  s.min = v.front();
  s.max = v.back();
  if (v.size() > 1) {
    double ss = 0;
    for (double x : v) ss += (x - s.mean) * (x - s.mean);
    s.stdev = std::sqrt(ss / double(v.size() - 1));
  }
  return s;
}

}  // namespace nanovllm
