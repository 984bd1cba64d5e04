// Hand-written SVG for small scatter-and-line charts.
#include "cli/bench/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <stdexcept>

namespace nanovllm {

namespace {
const char* const kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"};

std::string num(double v) {  // coordinates: two decimals is sub-pixel enough
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

struct Axis {
  std::vector<double> ticks;
  double lo, hi;
};

Axis make_axis(const std::vector<double>& values, bool from_zero) {
  double lo = *std::min_element(values.begin(), values.end());
  double hi = *std::max_element(values.begin(), values.end());
  if (from_zero) lo = std::min(lo, 0.0), hi = std::max(hi, 0.0);
  Axis a;
  a.ticks = nice_ticks(lo, hi);
  a.lo = a.ticks.front();
  a.hi = a.ticks.back();
  return a;
}
}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi) || hi < lo)
    throw std::invalid_argument("nice_ticks: bad range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  if (target < 1) target = 1;
  if (hi == lo) {  // one value: show it in the middle of a small range
    double pad = lo == 0 ? 1.0 : std::abs(lo) * 0.1;
    lo -= pad, hi += pad;
  }
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = 10 * mag;
  for (double m : {1.0, 2.0, 5.0})
    if (raw <= m * mag * (1 + 1e-9)) {
      step = m * mag;
      break;
    }
  // Integer tick indices, so accumulated rounding never adds or loses a tick.
  const long first = long(std::floor(lo / step + 1e-9)), last = long(std::ceil(hi / step - 1e-9));
  std::vector<double> ticks;
  for (long i = first; i <= last; ++i) ticks.push_back(double(i) * step);
  if (ticks.size() < 2) ticks.push_back(ticks.back() + step);
  return ticks;
}

std::string format_tick(double value, double step) {
  char buf[48];
  if (std::abs(value) < std::abs(step) * 1e-9) value = 0;  // i * step can land a hair off zero
  if (std::abs(value) >= 1e7 || (value != 0 && std::abs(value) < 1e-4)) {
    std::snprintf(buf, sizeof buf, "%g", value);
  } else {
    int decimals = std::max(0, int(-std::floor(std::log10(step) + 1e-9)));
    std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  }
  return buf;
}

std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}

namespace {

const char* series_color(size_t si) { return kPalette[si % (sizeof kPalette / sizeof kPalette[0])]; }

// The axes' data ranges and the plot area in pixels: where every element of the chart goes.
struct Plot {
  Axis ax, ay;
  double W, H;
  double left, right, top, bottom;  // the plot area
  double px(double x) const { return left + (x - ax.lo) / (ax.hi - ax.lo) * (right - left); }
  double py(double y) const { return bottom - (y - ay.lo) / (ay.hi - ay.lo) * (bottom - top); }
};

// Checks every series and returns the plot that holds all their points.
Plot layout(const Chart& chart) {
  std::vector<double> xs, ys;
  for (const auto& s : chart.series) {
    if (s.x.size() != s.y.size())
      throw std::invalid_argument("chart series '" + s.name + "': " + std::to_string(s.x.size()) + " x values but " +
                                  std::to_string(s.y.size()) + " y values");
    if (!s.point_labels.empty() && s.point_labels.size() != s.x.size())
      throw std::invalid_argument("chart series '" + s.name + "': " + std::to_string(s.point_labels.size()) +
                                  " labels for " + std::to_string(s.x.size()) + " points");
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i]))
        throw std::invalid_argument("chart series '" + s.name + "': point " + std::to_string(i) + " is not finite");
      xs.push_back(s.x[i]);
      ys.push_back(s.y[i]);
    }
  }
  if (xs.empty()) throw std::invalid_argument("chart '" + chart.title + "' has no points");
  const double W = chart.width, H = chart.height;
  return Plot{make_axis(xs, chart.x_from_zero), make_axis(ys, chart.y_from_zero), W, H, 80, W - 50, 50, H - 60};
}

void write_header(std::ostream& o, const Chart& chart, const Plot& p) {
  o << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << chart.width << "\" height=\"" << chart.height
    << "\" viewBox=\"0 0 " << chart.width << ' ' << chart.height << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<rect x=\"0\" y=\"0\" width=\"" << chart.width << "\" height=\"" << chart.height << "\" fill=\"white\"/>\n"
    << "<text x=\"" << num(p.W / 2) << "\" y=\"28\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">"
    << xml_escape(chart.title) << "</text>\n";
}

// Grid lines, tick labels, the two axis lines and the axis labels.
void write_axes(std::ostream& o, const Chart& chart, const Plot& p) {
  const Axis &ax = p.ax, &ay = p.ay;
  const double left = p.left, right = p.right, top = p.top, bottom = p.bottom;
  o << "<g stroke=\"#e0e0e0\" stroke-width=\"1\">\n";
  for (double t : ax.ticks) o << "<line x1=\"" << num(p.px(t)) << "\" y1=\"" << num(top) << "\" x2=\"" << num(p.px(t)) << "\" y2=\"" << num(bottom) << "\"/>\n";
  for (double t : ay.ticks) o << "<line x1=\"" << num(left) << "\" y1=\"" << num(p.py(t)) << "\" x2=\"" << num(right) << "\" y2=\"" << num(p.py(t)) << "\"/>\n";
  o << "</g>\n";
  const double xstep = ax.ticks[1] - ax.ticks[0], ystep = ay.ticks[1] - ay.ticks[0];
  o << "<g fill=\"#333\">\n";
  for (double t : ax.ticks)
    o << "<text x=\"" << num(p.px(t)) << "\" y=\"" << num(bottom + 18) << "\" text-anchor=\"middle\">"
      << format_tick(t, xstep) << "</text>\n";
  for (double t : ay.ticks)
    o << "<text x=\"" << num(left - 8) << "\" y=\"" << num(p.py(t) + 4) << "\" text-anchor=\"end\">"
      << format_tick(t, ystep) << "</text>\n";
  o << "</g>\n";
  o << "<g stroke=\"#333\" stroke-width=\"1.5\">\n"
    << "<line x1=\"" << num(left) << "\" y1=\"" << num(bottom) << "\" x2=\"" << num(right) << "\" y2=\"" << num(bottom) << "\"/>\n"
    << "<line x1=\"" << num(left) << "\" y1=\"" << num(top) << "\" x2=\"" << num(left) << "\" y2=\"" << num(bottom) << "\"/>\n"
    << "</g>\n";
  o << "<text x=\"" << num((left + right) / 2) << "\" y=\"" << num(p.H - 18) << "\" text-anchor=\"middle\" font-size=\"13\">"
    << xml_escape(chart.x_label) << "</text>\n"
    << "<text x=\"20\" y=\"" << num((top + bottom) / 2) << "\" text-anchor=\"middle\" font-size=\"13\" transform=\"rotate(-90 20 "
    << num((top + bottom) / 2) << ")\">" << xml_escape(chart.y_label) << "</text>\n";
}

// Each series' line and points (a point's tooltip names the series and the point's label).
void write_series(std::ostream& o, const Chart& chart, const Plot& p) {
  for (size_t si = 0; si < chart.series.size(); ++si) {
    const auto& s = chart.series[si];
    const char* color = series_color(si);
    o << "<g class=\"series\" fill=\"" << color << "\" stroke=\"" << color << "\">\n";
    if (s.x.size() > 1) {
      o << "<polyline fill=\"none\" stroke-width=\"2\" points=\"";
      for (size_t i = 0; i < s.x.size(); ++i) o << (i ? " " : "") << num(p.px(s.x[i])) << ',' << num(p.py(s.y[i]));
      o << "\"/>\n";
    }
    for (size_t i = 0; i < s.x.size(); ++i) {
      o << "<circle cx=\"" << num(p.px(s.x[i])) << "\" cy=\"" << num(p.py(s.y[i])) << "\" r=\"4\"><title>"
        << xml_escape(s.name + (s.point_labels.empty() ? "" : " " + s.point_labels[i])) << "</title></circle>\n";
    }
    o << "</g>\n";
  }
}

void write_point_labels(std::ostream& o, const Chart& chart, const Plot& p) {
  o << "<g class=\"point-labels\" font-size=\"10\">\n";
  for (size_t si = 0; si < chart.series.size(); ++si) {
    const auto& s = chart.series[si];
    const char* color = series_color(si);
    for (size_t i = 0; i < s.point_labels.size(); ++i)
      o << "<text x=\"" << num(p.px(s.x[i]) + 6) << "\" y=\"" << num(p.py(s.y[i]) - 6) << "\" fill=\"" << color << "\">"
        << xml_escape(s.point_labels[i]) << "</text>\n";
  }
  o << "</g>\n";
}

// Legend: top-left of the plot area, where a throughput-latency curve (rising to the right) is empty.
void write_legend(std::ostream& o, const Chart& chart, const Plot& p) {
  const double lx = p.left + 12, ly = p.top + 8;
  o << "<g class=\"legend\">\n<rect x=\"" << num(lx - 6) << "\" y=\"" << num(ly - 4) << "\" width=\"170\" height=\""
    << num(chart.series.size() * 18.0 + 8) << "\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#bbb\"/>\n";
  for (size_t si = 0; si < chart.series.size(); ++si) {
    const char* color = series_color(si);
    const double y = ly + 10 + 18.0 * double(si);
    o << "<line x1=\"" << num(lx) << "\" y1=\"" << num(y) << "\" x2=\"" << num(lx + 22) << "\" y2=\"" << num(y)
      << "\" stroke=\"" << color << "\" stroke-width=\"2\"/>\n"
      << "<circle cx=\"" << num(lx + 11) << "\" cy=\"" << num(y) << "\" r=\"4\" fill=\"" << color << "\"/>\n"
      << "<text x=\"" << num(lx + 30) << "\" y=\"" << num(y + 4) << "\">" << xml_escape(chart.series[si].name) << "</text>\n";
  }
  o << "</g>\n";
}

}  // namespace

std::string render_svg(const Chart& chart) {
  const Plot plot = layout(chart);
  std::ostringstream o;
  write_header(o, chart, plot);
  // Later elements draw over earlier ones: the grid under the data, every series' point labels
  // over all the lines (a later series never hides an earlier one's labels), the legend on top.
  write_axes(o, chart, plot);
  write_series(o, chart, plot);
  write_point_labels(o, chart, plot);
  write_legend(o, chart, plot);
  o << "</svg>\n";
  return o.str();
}

}  // namespace nanovllm
