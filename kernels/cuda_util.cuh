// Internal to the CUDA twins: status conversion, cuBLAS handle, scratch
// memory and launch helpers. Compiled by nvcc only.
#ifndef MIM_KERNELS_CUDA_UTIL_CUH_
#define MIM_KERNELS_CUDA_UTIL_CUH_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "kernels/common.h"

namespace mim::kernels::cuda {

// INTERNAL status naming the kernel and the shapes, or OK.
absl::Status Check(cudaError_t e, const char* what, const std::string& shape);
absl::Status CheckBlas(cublasStatus_t e, const char* what,
                       const std::string& shape);
// Checks the last launch (cudaGetLastError).
inline absl::Status CheckLaunch(const char* what, const std::string& shape) {
  return Check(cudaGetLastError(), what, shape);
}

std::string SeqStr(const SeqShape& s);

// The calling thread's cuBLAS handle (strict fp32: TF32 is not enabled).
absl::Status BlasHandle(cublasHandle_t* out);

// Row-major C[M,N] = alpha op(A) op(B) + beta C via column-major cuBLAS.
// M or N = 0 is a no-op; K = 0 gives C = beta C (0 when beta is 0) without
// calling cuBLAS, which rejects the leading dimension 0 such shapes have.
absl::Status Gemm(cublasHandle_t h, bool ta, bool tb, int64_t M, int64_t N,
                  int64_t K, float alpha, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C,
                  int64_t ldc, const char* what);

// Per-thread device scratch: slot i holds at least `bytes`; contents are
// undefined on return. Reused across calls so steady-state steps do not
// call cudaMalloc. Pointers stay valid until the same slot is requested
// with a larger size.
absl::Status Scratch(int slot, size_t bytes, void** out);
template <typename T>
absl::Status ScratchOf(int slot, size_t n, T** out) {
  void* p = nullptr;
  absl::Status s = Scratch(slot, n * sizeof(T) + 16, &p);
  *out = static_cast<T*>(p);
  return s;
}

// Validates lens on the device (0 <= lens[b] <= max_len); synchronizes to
// read the verdict. INVALID_ARGUMENT names the op.
absl::Status ValidateLens(const char* op, const SeqShape& s,
                          const int32_t* lens);

inline unsigned Blocks(int64_t n, int threads = 256) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

}  // namespace mim::kernels::cuda

#define MIM_RETURN_IF_ERROR(expr)        \
  do {                                   \
    absl::Status _st = (expr);           \
    if (!_st.ok()) return _st;           \
  } while (0)

#endif  // MIM_KERNELS_CUDA_UTIL_CUH_
