// cuBLAS and CUB stand-ins of the CUDA grid emulator (include/cublas_v2.h,
// include/cub/device/device_radix_sort.cuh).
#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/testing/emulator_internal.h"
#include "kernels/testing/include/cublas_v2.h"

struct cublasContext {
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
  cudaStream_t stream = nullptr;
};

namespace {

cublasStatus_t Invalid(const std::string& why) {
  std::fprintf(stderr, "cuda_emu: cublasSgemm: CUBLAS_STATUS_INVALID_VALUE: %s\n", why.c_str());
  return CUBLAS_STATUS_INVALID_VALUE;
}

// A column-major rows x cols matrix with leading dimension ld lies inside
// one device allocation (empty matrices are not read).
bool MatrixInDevice(const float* p, int rows, int cols, int ld) {
  if (rows == 0 || cols == 0) return true;
  const size_t elems = static_cast<size_t>(cols - 1) * static_cast<size_t>(ld) + rows;
  return cuda_emu::internal::InDeviceRange(p, elems * sizeof(float), true);
}

// x rounded to TF32 (8-bit exponent, 10-bit mantissa), to nearest, ties
// to even; infinities and NaN unchanged.
float RoundToTf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  if ((u & 0x7f800000u) == 0x7f800000u) return x;
  u += 0x0fffu + ((u >> 13) & 1u);
  u &= 0xffffe000u;
  std::memcpy(&x, &u, sizeof(x));
  return x;
}

// A column-major rows x cols matrix (leading dimension ld), every element
// rounded to TF32, in the same layout.
std::vector<float> Tf32Copy(const float* p, int rows, int cols, int ld) {
  const size_t elems =
      rows == 0 || cols == 0 ? 0 : static_cast<size_t>(cols - 1) * ld + rows;
  std::vector<float> out(p, p + elems);
  for (float& v : out) v = RoundToTf32(v);
  return out;
}

}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    default: return "cuBLAS error (emulated)";
  }
}

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, const float* alpha,
                           const float* A, int lda, const float* B, int ldb, const float* beta,
                           float* C, int ldc) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (cuda_emu::internal::StickyError() != cudaSuccess) return CUBLAS_STATUS_EXECUTION_FAILED;
  const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
  const std::string shape = "m=" + std::to_string(m) + " n=" + std::to_string(n) +
                            " k=" + std::to_string(k) + " lda=" + std::to_string(lda) +
                            " ldb=" + std::to_string(ldb) + " ldc=" + std::to_string(ldc) +
                            (ta ? " A^T" : "") + (tb ? " B^T" : "");
  // cuBLAS's checks: sizes >= 0, each leading dimension >= max(1, rows).
  const int a_rows = ta ? k : m, a_cols = ta ? m : k;
  const int b_rows = tb ? n : k, b_cols = tb ? k : n;
  if (m < 0 || n < 0 || k < 0) return Invalid(shape + ": negative size");
  if (lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) || ldc < std::max(1, m)) {
    return Invalid(shape + ": a leading dimension is below max(1, rows)");
  }
  if (alpha == nullptr || beta == nullptr) return Invalid(shape + ": null alpha or beta");
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  const bool reads_ab = k > 0 && *alpha != 0.f;
  if ((reads_ab && (!MatrixInDevice(A, a_rows, a_cols, lda) ||
                    !MatrixInDevice(B, b_rows, b_cols, ldb))) ||
      !MatrixInDevice(C, m, n, ldc)) {
    std::fprintf(stderr,
                 "cuda_emu: cublasSgemm [%s]: an operand is not inside one device allocation "
                 "(A=%p B=%p C=%p)\n",
                 shape.c_str(), static_cast<const void*>(A), static_cast<const void*>(B),
                 static_cast<void*>(C));
    cuda_emu::internal::Fault(cudaErrorIllegalAddress,
                              "cublasSgemm [" + shape + "]: operand outside device memory");
    return CUBLAS_STATUS_EXECUTION_FAILED;
  }
  if (!cuda_emu::internal::Queue(handle->stream, "cublasSgemm",
                                 {{reads_ab ? A : nullptr, false},
                                  {reads_ab ? B : nullptr, false},
                                  {C, true}})) {
    return CUBLAS_STATUS_EXECUTION_FAILED;
  }
  std::lock_guard<std::mutex> lock(cuda_emu::internal::DeviceMutex());
  if (k == 0) {
    // BLAS: C = beta C, and C is not read when beta is 0.
    for (int j = 0; j < n; ++j) {
      for (int i = 0; i < m; ++i) {
        float& c = C[static_cast<size_t>(j) * ldc + i];
        c = *beta == 0.f ? 0.f : *beta * c;
      }
    }
    return CUBLAS_STATUS_SUCCESS;
  }
  if (handle->math == CUBLAS_TF32_TENSOR_OP_MATH && reads_ab) {
    // TF32 tensor cores: A and B enter with 10-bit mantissas, the products
    // accumulate in fp32.
    const std::vector<float> a = Tf32Copy(A, a_rows, a_cols, lda);
    const std::vector<float> b = Tf32Copy(B, b_rows, b_cols, ldb);
    cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                m, n, k, *alpha, a.data(), lda, b.data(), ldb, *beta, C, ldc);
    return CUBLAS_STATUS_SUCCESS;
  }
  cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m,
              n, k, *alpha, A, lda, B, ldb, *beta, C, ldc);
  return CUBLAS_STATUS_SUCCESS;
}

namespace cuda_emu::internal {

cudaError_t CheckCubOperands(const char* what, const void* const* ptrs, const size_t* bytes,
                             const bool* writes, int n, cudaStream_t stream) {
  if (const cudaError_t s = StickyError(); s != cudaSuccess) return s;
  std::vector<Operand> ops;
  for (int i = 0; i < n; ++i) {
    if (!InDeviceRange(ptrs[i], bytes[i], true)) {
      Fault(cudaErrorIllegalAddress, std::string(what) + ": operand " + std::to_string(i) +
                                         " (" + std::to_string(bytes[i]) +
                                         " bytes) is not inside one device allocation");
      return cudaErrorIllegalAddress;
    }
    ops.push_back({ptrs[i], writes[i]});
  }
  const std::string hazard = StreamOp(stream, what, ops.data(), n);
  if (!hazard.empty()) {
    Fault(cudaErrorLaunchFailure, hazard);
    return cudaErrorLaunchFailure;
  }
  return cudaSuccess;
}

}  // namespace cuda_emu::internal
