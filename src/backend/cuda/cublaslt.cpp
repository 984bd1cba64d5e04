#include "backend/cuda/cublaslt.h"

#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cuda/dynlib.h"

namespace nanovllm::cuda {

const CublasLt& cublaslt() {
  static CublasLt a{};
  static std::string error;
  static std::once_flag once;
  std::call_once(once, [] {
    const std::string name = "libcublasLt.so." + std::to_string(CUBLAS_VER_MAJOR);
    const std::vector<std::string> candidates = {name, module_dir() + "/" + name, module_dir() + "/lib/" + name,
                                                 "/usr/local/cuda/lib64/" + name, "/usr/local/cuda/lib/" + name};
    std::string tried;
    void* lib = open_first(candidates, &tried);
    if (!lib) {
      error = "cuBLASLt not found (the CUDA backend needs " + name + ", from the CUDA toolkit " +
              std::to_string(CUBLAS_VER_MAJOR) + "): tried " + tried + "; add its directory to LD_LIBRARY_PATH";
      return;
    }
    auto sym = [&](auto& fn, const char* symbol) { bind_symbol(lib, fn, symbol, "cuBLASLt", error); };
    sym(a.Create, "cublasLtCreate");
    sym(a.Destroy, "cublasLtDestroy");
    sym(a.GetStatusName, "cublasLtGetStatusName");
    sym(a.Matmul, "cublasLtMatmul");
    sym(a.MatmulAlgoCheck, "cublasLtMatmulAlgoCheck");
    sym(a.MatmulAlgoGetHeuristic, "cublasLtMatmulAlgoGetHeuristic");
    sym(a.MatmulDescCreate, "cublasLtMatmulDescCreate");
    sym(a.MatmulDescDestroy, "cublasLtMatmulDescDestroy");
    sym(a.MatmulDescSetAttribute, "cublasLtMatmulDescSetAttribute");
    sym(a.MatmulPreferenceCreate, "cublasLtMatmulPreferenceCreate");
    sym(a.MatmulPreferenceDestroy, "cublasLtMatmulPreferenceDestroy");
    sym(a.MatmulPreferenceSetAttribute, "cublasLtMatmulPreferenceSetAttribute");
    sym(a.MatrixLayoutCreate, "cublasLtMatrixLayoutCreate");
    sym(a.MatrixLayoutDestroy, "cublasLtMatrixLayoutDestroy");
  });
  if (!error.empty()) throw std::runtime_error(error);
  return a;
}

}  // namespace nanovllm::cuda
