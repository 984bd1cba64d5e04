// CPython's random module (Modules/_randommodule.c and Lib/random.py), re-expressed: MT19937 with
// init_by_array seeding, genrand_res53, getrandbits and the rejection sampler behind randint.
#include "cli/bench/py_random.h"

#include <bit>
#include <cmath>
#include <stdexcept>

namespace nanovllm {

namespace {
constexpr int kN = 624, kM = 397;
constexpr uint32_t kMatrixA = 0x9908b0dfu, kUpperMask = 0x80000000u, kLowerMask = 0x7fffffffu;
}  // namespace

PyRandom::PyRandom(int64_t seed) {
  // |INT64_MIN| does not fit an int64, but does fit a uint64.
  uint64_t mag = seed < 0 ? uint64_t(0) - uint64_t(seed) : uint64_t(seed);
  std::vector<uint32_t> key{uint32_t(mag)};
  if (mag >> 32) key.push_back(uint32_t(mag >> 32));
  init_by_array(key);
}

PyRandom PyRandom::from_words(std::vector<uint32_t> key) {
  while (key.size() > 1 && key.back() == 0) key.pop_back();  // CPython sizes the key by |n|'s bits
  if (key.empty()) key.push_back(0);
  PyRandom r;
  r.init_by_array(key);
  return r;
}

PyRandom PyRandom::from_unsigned(uint64_t n) { return from_words({uint32_t(n), uint32_t(n >> 32)}); }

PyRandom PyRandom::from_decimal(const std::string& text) {
  size_t i = (!text.empty() && (text[0] == '-' || text[0] == '+')) ? 1 : 0;
  if (i == text.size()) throw std::invalid_argument("seed '" + text + "' is not a decimal integer");
  std::vector<uint32_t> words{0};
  for (; i < text.size(); ++i) {
    char c = text[i];
    if (c < '0' || c > '9') throw std::invalid_argument("seed '" + text + "' is not a decimal integer");
    uint64_t carry = uint64_t(c - '0');
    for (auto& w : words) {  // words = words * 10 + digit
      uint64_t v = uint64_t(w) * 10 + carry;
      w = uint32_t(v);
      carry = v >> 32;
    }
    if (carry) words.push_back(uint32_t(carry));
  }
  return from_words(std::move(words));
}

void PyRandom::init_genrand(uint32_t s) {
  mt_[0] = s;
  for (int i = 1; i < kN; ++i) mt_[i] = 1812433253u * (mt_[i - 1] ^ (mt_[i - 1] >> 30)) + uint32_t(i);
  mti_ = kN;
}

void PyRandom::init_by_array(const std::vector<uint32_t>& key) {
  init_genrand(19650218u);
  int i = 1;
  size_t j = 0;
  const size_t len = key.size();
  for (size_t k = std::max<size_t>(kN, len); k; --k) {
    mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1664525u)) + key[j] + uint32_t(j);
    ++i, ++j;
    if (i >= kN) mt_[0] = mt_[kN - 1], i = 1;
    if (j >= len) j = 0;
  }
  for (int k = kN - 1; k; --k) {
    mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1566083941u)) - uint32_t(i);
    ++i;
    if (i >= kN) mt_[0] = mt_[kN - 1], i = 1;
  }
  mt_[0] = 0x80000000u;  // MSB 1 assures a non-zero initial state
  mti_ = kN;
}

void PyRandom::refill() {
  auto twist = [](uint32_t hi, uint32_t lo, uint32_t far) {
    uint32_t y = (hi & kUpperMask) | (lo & kLowerMask);
    return far ^ (y >> 1) ^ ((y & 1u) ? kMatrixA : 0u);
  };
  int k = 0;
  for (; k < kN - kM; ++k) mt_[k] = twist(mt_[k], mt_[k + 1], mt_[k + kM]);
  for (; k < kN - 1; ++k) mt_[k] = twist(mt_[k], mt_[k + 1], mt_[k + (kM - kN)]);
  mt_[kN - 1] = twist(mt_[kN - 1], mt_[0], mt_[kM - 1]);
  mti_ = 0;
}

uint32_t PyRandom::genrand_uint32() {
  if (mti_ >= kN) refill();
  uint32_t y = mt_[mti_++];
  y ^= (y >> 11);
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= (y >> 18);
  return y;
}

double PyRandom::random() {
  uint32_t a = genrand_uint32() >> 5, b = genrand_uint32() >> 6;
  return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

std::vector<uint32_t> PyRandom::getrandbits_words(int k) {
  if (k < 0) throw std::invalid_argument("getrandbits: number of bits must be non-negative, got " + std::to_string(k));
  if (k == 0) return {0};
  if (k <= 32) return {genrand_uint32() >> (32 - k)};
  // Words are drawn least significant first; the last one keeps only its top k % 32 bits.
  std::vector<uint32_t> words(size_t((k - 1) / 32 + 1));
  for (auto& w : words) {
    uint32_t r = genrand_uint32();
    if (k < 32) r >>= (32 - k);
    w = r;
    k -= 32;
  }
  return words;
}

uint64_t PyRandom::getrandbits(int k) {
  if (k > 64) throw std::invalid_argument("getrandbits: " + std::to_string(k) + " bits do not fit 64; use getrandbits_words");
  auto w = getrandbits_words(k);
  return w.size() == 1 ? w[0] : (uint64_t(w[1]) << 32) | w[0];
}

uint64_t PyRandom::randbelow(uint64_t n) {
  if (n == 0) throw std::invalid_argument("randbelow: empty range (n = 0)");
  const int k = std::bit_width(n);  // n.bit_length(), not (n-1)'s: n may be 1
  uint64_t r = getrandbits(k);
  while (r >= n) r = getrandbits(k);
  return r;
}

int64_t PyRandom::randint(int64_t a, int64_t b) {
  if (b < a)
    throw std::invalid_argument("randint: empty range (" + std::to_string(a) + ", " + std::to_string(b) + ")");
  uint64_t width = uint64_t(b) - uint64_t(a) + 1;  // wraps to 0 only for the full int64 range
  if (width == 0) throw std::invalid_argument("randint: range spans all of int64, wider than supported");
  return int64_t(uint64_t(a) + randbelow(width));
}

double PyRandom::expovariate(double lambd) {
  // 1 - random() lies in (0, 1], so the log never sees 0.
  return -std::log(1.0 - random()) / lambd;
}

std::string words_to_hex(const std::vector<uint32_t>& words) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (size_t i = words.size(); i-- > 0;)
    for (int s = 28; s >= 0; s -= 4) out.push_back(digits[(words[i] >> s) & 0xf]);
  size_t nz = out.find_first_not_of('0');
  return nz == std::string::npos ? "0" : out.substr(nz);
}

}  // namespace nanovllm
