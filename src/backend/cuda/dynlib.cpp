#include "backend/cuda/dynlib.h"

#include <dlfcn.h>

namespace nanovllm::cuda {

std::string module_dir() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&module_dir), &info) && info.dli_fname) {
    std::string p = info.dli_fname;
    const size_t slash = p.rfind('/');
    if (slash != std::string::npos) return p.substr(0, slash);
  }
  return ".";
}

void* open_first(const std::vector<std::string>& candidates, std::string* tried) {
  for (const std::string& path : candidates)
    if (void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) return lib;
  if (tried) {
    tried->clear();
    for (const std::string& path : candidates) *tried += (tried->empty() ? "" : " ") + path;
  }
  return nullptr;
}

void* find_symbol(void* lib, const char* name) { return dlsym(lib, name); }

}  // namespace nanovllm::cuda
