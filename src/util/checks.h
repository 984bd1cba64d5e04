// Argument checks shared by the configuration readers, with messages that name the field.
#pragma once
#include <stdexcept>
#include <string>

namespace nanovllm {

// Throws std::invalid_argument "<field> must be > 0, got <v>".
inline void require_positive(const std::string& field, long long v) {
  if (v <= 0) throw std::invalid_argument(field + " must be > 0, got " + std::to_string(v));
}

}  // namespace nanovllm
