// A line-and-point chart written as plain SVG (axes, 1-2-5 ticks, labels, legend), for the
// throughput-latency curves `nanovllm bench --sweep` draws; no plotting library needed.
#pragma once
#include <string>
#include <vector>

namespace nanovllm {

struct ChartSeries {
  std::string name;                       // legend entry
  std::vector<double> x, y;               // same length; drawn joined in the given order
  std::vector<std::string> point_labels;  // empty, or one short label per point
};

struct Chart {
  std::string title, x_label, y_label;
  std::vector<ChartSeries> series;
  int width = 800, height = 520;
  bool x_from_zero = true, y_from_zero = true;  // stretch an axis to include 0
};

// Tick positions at a 1, 2 or 5 x 10^k step, the first <= lo and the last >= hi, about
// `target` intervals; a degenerate range (lo == hi) is widened around the value.
std::vector<double> nice_ticks(double lo, double hi, int target = 5);

// A tick's text with just the decimals its step needs ("0.25", "1500", "2e+06" when huge).
std::string format_tick(double value, double step);

std::string xml_escape(const std::string& text);

// Throws std::invalid_argument when a series' x and y (or labels) differ in length, a value
// is not finite, or there are no points at all.
std::string render_svg(const Chart& chart);

}  // namespace nanovllm
