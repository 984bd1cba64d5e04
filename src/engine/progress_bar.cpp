// ProgressBar: a tqdm-like status line on stderr.
#include "engine/progress_bar.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace nanovllm {
namespace {

std::string clock_str(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  long t = std::lround(s);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%02ld:%02ld", t / 60, t % 60);
  return buf;
}

}  // namespace

ProgressBar::ProgressBar(int total, bool enabled)
    : total_(total), enabled_(enabled && isatty(STDERR_FILENO)), start_(std::chrono::steady_clock::now()) {
  last_draw_ = start_;
  if (enabled_) draw();
}

ProgressBar::~ProgressBar() { close(); }

std::string ProgressBar::format(int done, int total, double elapsed, double prefill_tps, double decode_tps) {
  double remaining = done > 0 ? elapsed / done * (total - done) : NAN;
  char buf[160];
  std::snprintf(buf, sizeof buf, "Generating: %d/%d [%s<%s, Prefill %.0ftok/s, Decode %.0ftok/s]", done, total,
                clock_str(elapsed).c_str(), clock_str(remaining).c_str(), prefill_tps, decode_tps);
  return buf;
}

void ProgressBar::update(int done, double prefill_tps, double decode_tps) {
  done_ = done;
  prefill_tps_ = prefill_tps;
  decode_tps_ = decode_tps;
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  // Redraw at most 10 times a second (a terminal write per decode step would cost time).
  if (done_ < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  draw();
}

void ProgressBar::draw() {
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  drawn_done_ = done_;
  std::fprintf(stderr, "\r\033[K%s", format(done_, total_, elapsed, prefill_tps_, decode_tps_).c_str());
  std::fflush(stderr);
}

void ProgressBar::close() {
  if (!enabled_ || closed_) return;
  closed_ = true;
  if (drawn_done_ != done_) draw();
  std::fputc('\n', stderr);
}

}  // namespace nanovllm
