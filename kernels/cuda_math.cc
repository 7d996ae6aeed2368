// The process-wide cuBLAS math setting (dense_ops.h), read by the CUDA
// twins whichever way they are built.
#include <atomic>

#include "kernels/dense_ops.h"

namespace mim::kernels {
namespace {
std::atomic<CudaMath> g_cuda_math{CudaMath::kFp32};
}  // namespace

void SetCudaMath(CudaMath math) {
  g_cuda_math.store(math, std::memory_order_relaxed);
}

CudaMath GetCudaMath() { return g_cuda_math.load(std::memory_order_relaxed); }

}  // namespace mim::kernels
