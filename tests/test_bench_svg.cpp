// The sweep chart's SVG: 1-2-5 ticks, tick text, escaping, one marker per point, well-formed XML
// (checked by a tag matcher here, and by xmllint when the machine has it).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "cli/bench/svg_chart.h"

namespace nanovllm {
namespace {

// Every start tag closed by its own end tag, in order; returns "" or what went wrong.
std::string xml_structure_error(const std::string& s) {
  std::vector<std::string> open;
  size_t i = 0;
  while ((i = s.find('<', i)) != std::string::npos) {
    size_t j = s.find('>', i);
    if (j == std::string::npos) return "unclosed '<' at " + std::to_string(i);
    std::string tag = s.substr(i + 1, j - i - 1);
    i = j + 1;
    if (tag.empty()) return "empty tag";
    if (tag[0] == '?' || tag[0] == '!') continue;
    if (tag[0] == '/') {
      if (open.empty() || open.back() != tag.substr(1)) return "mismatched </" + tag.substr(1) + ">";
      open.pop_back();
      continue;
    }
    if (tag.back() == '/') continue;
    open.push_back(tag.substr(0, tag.find_first_of(" \n\t")));
  }
  return open.empty() ? "" : "unclosed <" + open.back() + ">";
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t i = s.find(what); i != std::string::npos; i = s.find(what, i + 1)) ++n;
  return n;
}

TEST(SvgChart, NiceTicksUseOneTwoFiveSteps) {
  EXPECT_EQ(nice_ticks(0, 10), (std::vector<double>{0, 2, 4, 6, 8, 10}));
  EXPECT_EQ(nice_ticks(0, 14519.11), (std::vector<double>{0, 5000, 10000, 15000}));
  auto t = nice_ticks(3.2, 4.9);  // step 0.5: 3.0 .. 5.0
  ASSERT_EQ(t.size(), 5u);
  EXPECT_DOUBLE_EQ(t.front(), 3.0);
  EXPECT_DOUBLE_EQ(t.back(), 5.0);
  auto one = nice_ticks(7, 7);  // a single value is widened, never a zero-width axis
  EXPECT_LE(one.front(), 7);
  EXPECT_GE(one.back(), 7);
  EXPECT_GT(one.back() - one.front(), 0);
  EXPECT_THROW(nice_ticks(2, 1), std::invalid_argument);
}

TEST(SvgChart, TickTextShowsTheDecimalsTheStepNeeds) {
  EXPECT_EQ(format_tick(1500, 500), "1500");
  EXPECT_EQ(format_tick(0.25, 0.05), "0.25");
  EXPECT_EQ(format_tick(3, 0.5), "3.0");
  EXPECT_EQ(format_tick(-1e-17, 0.1), "0.0");
}

TEST(SvgChart, RendersAxesPointsAndLegend) {
  Chart c;
  c.title = "Throughput vs TPOT <sweep & test>";
  c.x_label = "throughput (tok/s)";
  c.y_label = "TPOT (ms)";
  c.series.push_back({"TPOT p50", {1000, 5000, 9000}, {10, 15, 30}, {"seqs=1", "seqs=8", "seqs=32"}});
  c.series.push_back({"TPOT p99", {1000, 5000, 9000}, {12, 20, 45}, {}});
  std::string svg = render_svg(c);
  EXPECT_EQ(xml_structure_error(svg), "");
  EXPECT_NE(svg.find("Throughput vs TPOT &lt;sweep &amp; test&gt;"), std::string::npos);
  EXPECT_NE(svg.find(">throughput (tok/s)</text>"), std::string::npos);
  EXPECT_NE(svg.find(">TPOT (ms)</text>"), std::string::npos);
  EXPECT_EQ(count(svg, "r=\"4\"><title>"), 6u);  // one data marker per point
  EXPECT_EQ(count(svg, "<polyline"), 2u);
  EXPECT_NE(svg.find(">seqs=32</text>"), std::string::npos);
  EXPECT_NE(svg.find(">TPOT p99</text>"), std::string::npos);  // legend
  for (const char* tick : {">0</text>", ">10000</text>", ">50</text>"}) EXPECT_NE(svg.find(tick), std::string::npos) << tick;
  // x ticks every 2000 tok/s from the origin: 0 at the plot's left edge (x = 80).
  EXPECT_TRUE(std::regex_search(svg, std::regex("<text x=\"80.00\" y=\"[0-9.]+\" text-anchor=\"middle\">0</text>")));

  // Another XML parser's verdict, where one is installed.
  if (std::system("command -v xmllint > /dev/null 2>&1") == 0) {
    std::string path = ::testing::TempDir() + "nanovllm_chart_test.svg";
    std::ofstream(path) << svg;
    EXPECT_EQ(std::system(("xmllint --noout " + path).c_str()), 0);
    std::remove(path.c_str());
  }
}

TEST(SvgChart, BadSeriesThrow) {
  Chart c;
  EXPECT_THROW(render_svg(c), std::invalid_argument);
  c.series.push_back({"a", {1, 2}, {1}, {}});
  EXPECT_THROW(render_svg(c), std::invalid_argument);
  c.series[0] = {"a", {1, 2}, {1, NAN}, {}};
  EXPECT_THROW(render_svg(c), std::invalid_argument);
  c.series[0] = {"a", {1, 2}, {1, 2}, {"only one"}};
  EXPECT_THROW(render_svg(c), std::invalid_argument);
}

}  // namespace
}  // namespace nanovllm
