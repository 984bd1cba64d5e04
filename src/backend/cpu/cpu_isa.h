// Which instruction set the CPU kernels use, picked at run time: the library is built for AVX2
// (+FMA, F16C), and the kernels that gain from AVX-512 (bf16/f16 weight GEMV, int8 dot products
// with VNNI) carry an AVX-512 version compiled for it alone (target attributes), called only when
// the CPU has the features.
#pragma once
#include <string>

namespace nanovllm::cpu {

enum class Isa {
  avx2,    // AVX2 + FMA + F16C: int8 dot products by maddubs (the sign trick)
  avx512,  // AVX-512 F/BW/VL + VNNI: 512-bit conversions, int8 dot products by vpdpbusd
};

// The best level this CPU has.
Isa detect_isa();
// `name` ("" = detect_isa(), "avx2", "avx512"), checked against the CPU: throws
// std::invalid_argument naming a level it lacks or an unknown name.
Isa resolve_isa(const std::string& name);
const char* isa_name(Isa isa);

}  // namespace nanovllm::cpu
