// PyRandom: CPython's `random.Random` (MT19937), draw for draw, so workloads written in Python
// (nano-vLLM's bench.py) are rebuilt here token for token from the same seed.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace nanovllm {

class PyRandom {
 public:
  // random.seed(n) for an int n: the key is |n| as little-endian 32-bit words ([0] for 0).
  explicit PyRandom(int64_t seed = 0);
  // random.seed(n) for an unsigned 64-bit n (all of its range, unlike the int64 constructor).
  static PyRandom from_unsigned(uint64_t n);
  // Seeds from an integer written in decimal (any size, optional '-'), as random.seed(int(text)).
  static PyRandom from_decimal(const std::string& text);
  // Seeds from |n|'s little-endian 32-bit words (init_by_array); an empty key means [0].
  static PyRandom from_words(std::vector<uint32_t> key);

  uint32_t genrand_uint32();
  double random();                             // [0, 1) with 53 random bits
  // getrandbits(k) for any k >= 0: little-endian 32-bit words, the top word holding k % 32 bits.
  std::vector<uint32_t> getrandbits_words(int k);
  uint64_t getrandbits(int k);                 // k in [0, 64]
  uint64_t randbelow(uint64_t n);              // [0, n), n > 0; getrandbits(bit_length(n)) with rejection
  int64_t randint(int64_t a, int64_t b);       // [a, b], both ends included (randrange(a, b + 1))
  double expovariate(double lambd);            // exponential with rate lambd (mean 1/lambd)

 private:
  void init_genrand(uint32_t s);
  void init_by_array(const std::vector<uint32_t>& key);
  void refill();

  std::array<uint32_t, 624> mt_{};
  int mti_ = 625;
};

// Python's int -> hex without prefix ("0" for zero), from little-endian 32-bit words.
std::string words_to_hex(const std::vector<uint32_t>& words);

}  // namespace nanovllm
