// Teacher-forced logits through ModelRunner and Scheduler, and the row metrics.
#include "engine/numerics.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>

#include "backend/backend.h"
#include "engine/block_manager.h"
#include "engine/model_runner.h"
#include "engine/scheduler.h"
#include "model/hf_config.h"
#include "util/env_options.h"

namespace nanovllm {

std::vector<std::vector<float>> teacher_forced_logits(const EngineConfig& config,
                                                      const std::vector<NumericsCase>& cases) {
  const ModelConfig mc = load_model_config(config.model);
  const EngineConfig c = resolve_config(config, mc);
  ModelRunner runner(c, mc, make_backend_for(c, read_env_options()));
  runner.allocate_kv_cache();
  runner.capture_cudagraph();
  BlockManager blocks(runner.num_kvcache_blocks(), c.kvcache_block_size, c.enable_prefix_caching);
  Scheduler scheduler(SchedulerConfig{.max_num_seqs = c.max_num_seqs,
                                      .max_num_batched_tokens = c.max_num_batched_tokens,
                                      .max_model_len = c.max_model_len,
                                      .eos_token_ids = {}},
                      blocks);
  std::vector<std::unique_ptr<Sequence>> seqs;
  for (size_t i = 0; i < cases.size(); ++i) {
    const NumericsCase& k = cases[i];
    const size_t len = k.prompt.size() + k.path.size();
    if (k.prompt.empty() || k.path.empty() || len > static_cast<size_t>(c.max_model_len))
      throw std::invalid_argument("numerics case " + std::to_string(i) + ": prompt of " +
                                  std::to_string(k.prompt.size()) + " tokens and a path of " +
                                  std::to_string(k.path.size()) + " do not fit max_model_len " +
                                  std::to_string(c.max_model_len));
    SamplingParams p;
    p.temperature = 0;
    p.max_tokens = static_cast<int>(k.path.size());
    p.ignore_eos = true;
    seqs.push_back(std::make_unique<Sequence>(static_cast<int64_t>(i), k.prompt, p, c.kvcache_block_size, 0, 0.0));
    scheduler.add(seqs.back().get());
  }
  const int vocab = mc.vocab_size;
  std::vector<std::vector<float>> out(cases.size());
  while (!scheduler.is_finished()) {
    ScheduledBatch batch = scheduler.schedule();
    runner.run(batch);
    const std::vector<float> logits = runner.last_logits(static_cast<int>(batch.sampled.size()));
    std::vector<int32_t> next;
    for (size_t r = 0; r < batch.sampled.size(); ++r) {
      const Sequence& s = *batch.sampled[r];
      const auto& path = cases[static_cast<size_t>(s.seq_id)].path;
      out[s.seq_id].insert(out[s.seq_id].end(), logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
      next.push_back(path[s.num_completion_tokens()]);  // the reference's token, not our own pick
    }
    scheduler.postprocess(batch, next, 0.0);
  }
  return out;
}

RowError row_error(const float* ref, const float* x, int vocab) {
  RowError e;
  double lo = ref[0], hi = ref[0];
  int arg_ref = 0, arg_x = 0;
  for (int v = 0; v < vocab; ++v) {
    e.max_abs = std::max(e.max_abs, std::abs(static_cast<double>(x[v]) - ref[v]));
    lo = std::min<double>(lo, ref[v]);
    hi = std::max<double>(hi, ref[v]);
    if (ref[v] > ref[arg_ref]) arg_ref = v;
    if (x[v] > x[arg_x]) arg_x = v;
  }
  e.rel = hi > lo ? e.max_abs / (hi - lo) : 0;
  e.same_argmax = arg_ref == arg_x;
  // KL(p || q) = sum p (log p - log q), with log-sum-exp in double.
  double zr = 0, zx = 0;
  for (int v = 0; v < vocab; ++v) {
    zr += std::exp(static_cast<double>(ref[v]) - hi);
    zx += std::exp(static_cast<double>(x[v]) - x[arg_x]);
  }
  const double lzr = std::log(zr) + hi, lzx = std::log(zx) + x[arg_x];
  for (int v = 0; v < vocab; ++v) {
    const double lp = ref[v] - lzr, lq = x[v] - lzx;
    e.kl += std::exp(lp) * (lp - lq);
  }
  e.kl = std::max(0.0, e.kl);
  return e;
}

}  // namespace nanovllm
