// ProgressBar: nano-vLLM's tqdm line for generate(), drawn on stderr only when it is a terminal:
//   Generating: 12/256 [00:03<00:20, Prefill 5123tok/s, Decode 1234tok/s]
#pragma once
#include <chrono>
#include <string>

namespace nanovllm {

class ProgressBar {
 public:
  ProgressBar(int total, bool enabled);  // draws nothing unless enabled and stderr is a terminal
  ~ProgressBar();
  // `done` requests finished; throughputs of the latest prefill and decode steps (tok/s).
  void update(int done, double prefill_tps, double decode_tps);
  void close();  // last redraw and a newline

  // The line for the given state (exposed for tests).
  static std::string format(int done, int total, double elapsed_s, double prefill_tps, double decode_tps);

 private:
  void draw();
  int total_, done_ = 0, drawn_done_ = -1;
  double prefill_tps_ = 0, decode_tps_ = 0;
  bool enabled_, closed_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace nanovllm
