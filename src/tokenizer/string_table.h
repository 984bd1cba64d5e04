// A compact string -> int32 hash map for vocabularies: keys live in one arena, slots are an
// open-addressing array of entry indices. Loading Qwen3's 151k-entry vocabulary into
// std::unordered_map<std::string, int> cost ~300 ms of allocations; this costs a few ms.
#pragma once
#include <xxhash.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nanovllm {

class StringTable {
 public:
  size_t size() const { return entries_.size(); }
  void reserve(size_t n) {
    entries_.reserve(n);
    if (n * 2 > slots_.size()) rehash(n * 2);
  }
  // Adds key -> value; returns false (and changes nothing) when key is already present.
  bool insert(std::string_view key, int32_t value) {
    if ((entries_.size() + 1) * 2 > slots_.size()) rehash(slots_.empty() ? 1024 : slots_.size() * 2);
    uint64_t h = XXH3_64bits(key.data(), key.size());
    for (uint64_t i = h;; ++i) {
      uint32_t& slot = slots_[i & mask_];
      if (slot == 0) {
        entries_.push_back({static_cast<uint32_t>(arena_.size()), static_cast<uint32_t>(key.size()), value, h});
        arena_.append(key);
        slot = static_cast<uint32_t>(entries_.size());
        return true;
      }
      const Entry& e = entries_[slot - 1];
      if (e.hash == h && key_of(e) == key) return false;
    }
  }
  const int32_t* find(std::string_view key) const {
    if (slots_.empty()) return nullptr;
    uint64_t h = XXH3_64bits(key.data(), key.size());
    for (uint64_t i = h;; ++i) {
      uint32_t slot = slots_[i & mask_];
      if (slot == 0) return nullptr;
      const Entry& e = entries_[slot - 1];
      if (e.hash == h && key_of(e) == key) return &e.value;
    }
  }

 private:
  struct Entry {
    uint32_t off, len;
    int32_t value;
    uint64_t hash;
  };
  std::string_view key_of(const Entry& e) const { return std::string_view(arena_.data() + e.off, e.len); }
  void rehash(size_t want) {
    size_t cap = 16;
    while (cap < want) cap <<= 1;
    slots_.assign(cap, 0);
    mask_ = cap - 1;
    for (uint32_t k = 0; k < entries_.size(); ++k) {
      for (uint64_t i = entries_[k].hash;; ++i) {
        if (slots_[i & mask_] == 0) {
          slots_[i & mask_] = k + 1;
          break;
        }
      }
    }
  }

  std::string arena_;
  std::vector<Entry> entries_;
  std::vector<uint32_t> slots_;
  uint64_t mask_ = 0;
};

}  // namespace nanovllm
