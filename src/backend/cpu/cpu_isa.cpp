// The CPU kernels' instruction set, from cpuid (GCC's __builtin_cpu_supports).
#include "backend/cpu/cpu_isa.h"

#include <stdexcept>

namespace nanovllm::cpu {

Isa detect_isa() {
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  return avx512 ? Isa::avx512 : Isa::avx2;
}

Isa resolve_isa(const std::string& name) {
  const Isa best = detect_isa();
  if (name.empty()) return best;
  if (name == "avx2") return Isa::avx2;
  if (name == "avx512") {
    if (best != Isa::avx512)
      throw std::invalid_argument("cpu isa avx512: this CPU lacks AVX-512 F/BW/VL/VNNI (it has avx2)");
    return Isa::avx512;
  }
  throw std::invalid_argument("cpu isa '" + name + "': expected avx2 or avx512");
}

const char* isa_name(Isa isa) { return isa == Isa::avx512 ? "avx512" : "avx2"; }

}  // namespace nanovllm::cpu
