// Checkpoint: the *.safetensors files of a Hugging Face directory, memory-mapped.
#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend/tensor.h"

namespace nanovllm {

class Checkpoint {
 public:
  // Opens model.safetensors.index.json's shards, or every *.safetensors in `dir`. Throws
  // std::runtime_error naming the file on a missing, truncated or corrupt file, or an
  // unsupported dtype (F32, BF16, F16, F8_E4M3 and F8_E5M2 (FP8 weights, with their scales as tensors of their own) are read, and I32/I64 for completeness).
  static Checkpoint open(const std::filesystem::path& dir);

  bool contains(const std::string& name) const;
  // The tensor (host memory, the file's dtype); throws naming the tensor when absent, and naming
  // both shapes when `expected` is given and differs.
  Tensor get(const std::string& name) const;
  Tensor get(const std::string& name, std::initializer_list<int64_t> expected) const;
  std::vector<std::string> names() const;
  // Drops the pages wholly inside a tensor got from get() out of this process's memory (the file
  // keeps them in the page cache; reading the tensor again maps them back): a tensor copied
  // elsewhere stops counting in the process's resident memory while others stay mapped.
  void drop_pages(const Tensor& t) const;

  Checkpoint(Checkpoint&&) noexcept;
  Checkpoint& operator=(Checkpoint&&) noexcept;
  ~Checkpoint();

 private:
  Checkpoint();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Writes tensors (host memory) to one .safetensors file, in the order given.
void save_safetensors(const std::filesystem::path& file, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace nanovllm
