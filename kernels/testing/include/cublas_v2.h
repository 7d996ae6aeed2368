// Stand-in for <cublas_v2.h> in the CUDA grid emulator: the cuBLAS subset
// the kernels use, computed by OpenBLAS (cblas) on the emulator's host-side
// device memory with cuBLAS's column-major semantics and argument checks.
// cuBLAS itself is not exercised: its numerics (tensor-core modes,
// reduction order) and performance only show on a GPU (tools/gpu_check.sh).
#ifndef MIM_KERNELS_TESTING_INCLUDE_CUBLAS_V2_H_
#define MIM_KERNELS_TESTING_INCLUDE_CUBLAS_V2_H_

#include "kernels/testing/cuda_emu_runtime.h"

typedef struct cublasContext* cublasHandle_t;

typedef enum {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_NOT_INITIALIZED = 1,
  CUBLAS_STATUS_ALLOC_FAILED = 3,
  CUBLAS_STATUS_INVALID_VALUE = 7,
  CUBLAS_STATUS_ARCH_MISMATCH = 8,
  CUBLAS_STATUS_MAPPING_ERROR = 11,
  CUBLAS_STATUS_EXECUTION_FAILED = 13,
  CUBLAS_STATUS_INTERNAL_ERROR = 14,
  CUBLAS_STATUS_NOT_SUPPORTED = 15,
} cublasStatus_t;

typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 } cublasOperation_t;

typedef enum {
  CUBLAS_DEFAULT_MATH = 0,
  CUBLAS_TENSOR_OP_MATH = 1,
  CUBLAS_PEDANTIC_MATH = 2,
  CUBLAS_TF32_TENSOR_OP_MATH = 3,
} cublasMath_t;

cublasStatus_t cublasCreate(cublasHandle_t* handle);
cublasStatus_t cublasDestroy(cublasHandle_t handle);
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream);
// Accepted and recorded; the emulator always computes in fp32 (no TF32).
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode);
const char* cublasGetStatusName(cublasStatus_t status);
const char* cublasGetStatusString(cublasStatus_t status);

// C = alpha op(A) op(B) + beta C, column-major, host-side alpha and beta
// (CUBLAS_POINTER_MODE_HOST). Each operand must lie inside one device
// allocation; as in cuBLAS, C is not read when beta is 0.
cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, const float* alpha,
                           const float* A, int lda, const float* B, int ldb, const float* beta,
                           float* C, int ldc);

#endif  // MIM_KERNELS_TESTING_INCLUDE_CUBLAS_V2_H_
