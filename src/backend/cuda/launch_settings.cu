// The process-wide settings every kernel launch reads (launch() in common.cuh).
#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.h"

namespace nanovllm::cuda {

bool pdl_on = true;

void set_pdl_enabled(bool on) { pdl_on = on; }

}  // namespace nanovllm::cuda
