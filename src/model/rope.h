// Rotary embedding tables, as transformers computes them in float32 for each rope_type nanovllm
// takes: default, linear, llama3, yarn, and dynamic (as vLLM runs it: one table, scaled for the
// longest context, where transformers rescales per forward past the original length).
#pragma once
#include <vector>

#include "model/hf_config.h"

namespace nanovllm {

// [max_pos, head_dim] floats: row p holds cos(p * inv_freq[i]) for i < head_dim / 2, then the
// sins; both times yarn's attention factor.
std::vector<float> rope_table(const RopeConfig& rope, int max_pos, int head_dim, int max_position_embeddings);

// The inverse frequencies (head_dim / 2 of them) and the factor on cos and sin.
std::vector<float> rope_inv_freq(const RopeConfig& rope, int head_dim, int max_position_embeddings,
                                 float* attention_factor);

}  // namespace nanovllm
