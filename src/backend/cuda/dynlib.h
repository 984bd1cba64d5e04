// Shared libraries loaded at run time (dlopen) rather than linked: NCCL (only tensor parallelism
// needs it) and cuBLASLt (only a CUDA backend needs it; linking it costs every process, CPU runs
// included, ~210 MB of resident memory as the dynamic loader maps and relocates it).
#pragma once
#include <string>
#include <type_traits>
#include <vector>

namespace nanovllm::cuda {

// The directory of the binary or library holding this code (a bundle may put libraries beside it).
std::string module_dir();

// dlopen (RTLD_NOW | RTLD_LOCAL) of the first of `candidates` that loads, or nullptr; `tried`
// then lists them all, for the error message.
void* open_first(const std::vector<std::string>& candidates, std::string* tried);

// dlsym.
void* find_symbol(void* lib, const char* name);
// fn = the symbol `name` of `lib`; a missing one sets `error` (the first only) naming `what`.
template <class Fn>
void bind_symbol(void* lib, Fn& fn, const char* name, const char* what, std::string& error) {
  fn = reinterpret_cast<std::remove_reference_t<Fn>>(find_symbol(lib, name));
  if (!fn && error.empty()) error = std::string(what) + " library has no symbol " + name;
}

}  // namespace nanovllm::cuda
