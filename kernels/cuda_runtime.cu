// CUDA runtime glue: device status, DeviceBuffer primitives, scratch,
// cuBLAS handle, shared validation.
#include <memory>
#include <vector>

#include "kernels/cuda_util.cuh"
#include "kernels/device_buffer.h"

namespace mim::kernels {
namespace cuda {

absl::Status Check(cudaError_t e, const char* what, const std::string& shape) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrFormat("CUDA %s [%s]: %s: %s", what,
                                             shape, cudaGetErrorName(e),
                                             cudaGetErrorString(e)));
}

absl::Status CheckBlas(cublasStatus_t e, const char* what,
                       const std::string& shape) {
  if (e == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrFormat("cuBLAS %s [%s]: status %d", what,
                                             shape, static_cast<int>(e)));
}

std::string SeqStr(const SeqShape& s) {
  return absl::StrFormat("B=%d L=%d d=%d", s.batch, s.max_len, s.dim);
}

namespace {
struct HandleHolder {
  cublasHandle_t h = nullptr;
  ~HandleHolder() {
    if (h != nullptr) cublasDestroy(h);
  }
};
struct ScratchSlots {
  std::vector<std::pair<void*, size_t>> slots;
  ~ScratchSlots() {
    for (auto& s : slots) cudaFree(s.first);
  }
};
}  // namespace

absl::Status BlasHandle(cublasHandle_t* out) {
  thread_local HandleHolder holder;
  if (holder.h == nullptr) {
    MIM_RETURN_IF_ERROR(CheckBlas(cublasCreate(&holder.h), "cublasCreate", ""));
    // Strict fp32: TF32 tensor cores are not used (see dense_ops.h).
    MIM_RETURN_IF_ERROR(CheckBlas(
        cublasSetMathMode(holder.h, CUBLAS_DEFAULT_MATH), "cublasSetMathMode", ""));
  }
  *out = holder.h;
  return absl::OkStatus();
}

namespace {
// C[M,N] (row stride ldc) = beta C, exactly 0 when beta is 0 (BLAS: C is
// then not read, so NaN there does not survive).
__global__ void ScaleRowsKernel(int64_t M, int64_t N, int64_t ldc, float beta,
                                float* C) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= M * N) return;
  float* c = C + (e / N) * ldc + e % N;
  *c = beta == 0.f ? 0.f : beta * *c;
}
}  // namespace

absl::Status Gemm(cublasHandle_t h, bool ta, bool tb, int64_t M, int64_t N,
                  int64_t K, float alpha, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C,
                  int64_t ldc, const char* what) {
  if (M == 0 || N == 0) return absl::OkStatus();
  if (K == 0) {
    // cuBLAS wants every leading dimension >= 1 even when K = 0 (and A or B
    // then has ld 0, e.g. d = 0 or in = 0); the product is empty anyway.
    if (beta == 1.f) return absl::OkStatus();
    ScaleRowsKernel<<<Blocks(M * N), 256>>>(M, N, ldc, beta, C);
    return CheckLaunch(what, absl::StrFormat("M=%d N=%d K=0 (C = beta C)", M, N));
  }
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T.
  return CheckBlas(
      cublasSgemm(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                  ta ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(N),
                  static_cast<int>(M), static_cast<int>(K), &alpha, B,
                  static_cast<int>(ldb), A, static_cast<int>(lda), &beta, C,
                  static_cast<int>(ldc)),
      what, absl::StrFormat("M=%d N=%d K=%d", M, N, K));
}

absl::Status Scratch(int slot, size_t bytes, void** out) {
  thread_local ScratchSlots s;
  if (s.slots.size() <= static_cast<size_t>(slot)) s.slots.resize(slot + 1);
  auto& e = s.slots[slot];
  if (e.second < bytes) {
    // Memory may still be in use by queued kernels on the default stream.
    MIM_RETURN_IF_ERROR(Check(cudaDeviceSynchronize(), "scratch sync", ""));
    cudaFree(e.first);
    e = {nullptr, 0};
    MIM_RETURN_IF_ERROR(Check(cudaMalloc(&e.first, bytes), "scratch cudaMalloc",
                              absl::StrFormat("%d bytes", bytes)));
    e.second = bytes;
  }
  *out = e.first;
  return absl::OkStatus();
}

namespace {
__global__ void ValidateLensKernel(int64_t B, int64_t L, const int32_t* lens,
                                   int* bad) {
  const int64_t b = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (b < B && (lens[b] < 0 || lens[b] > L)) atomicMin(bad, static_cast<int>(b));
}
}  // namespace

absl::Status ValidateLens(const char* op, const SeqShape& s,
                          const int32_t* lens) {
  if (s.batch < 0 || s.max_len < 0 || s.dim < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: negative shape %s", op, SeqStr(s)));
  }
  if (s.batch == 0) return absl::OkStatus();
  if (lens == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: lens is null", op));
  }
  int* flag = nullptr;
  MIM_RETURN_IF_ERROR(ScratchOf(0, 1, &flag));
  const int none = 0x7fffffff;
  MIM_RETURN_IF_ERROR(Check(cudaMemcpy(flag, &none, sizeof(int), cudaMemcpyHostToDevice),
                            op, SeqStr(s)));
  ValidateLensKernel<<<Blocks(s.batch), 256>>>(s.batch, s.max_len, lens, flag);
  MIM_RETURN_IF_ERROR(CheckLaunch(op, SeqStr(s)));
  int bad = none;
  MIM_RETURN_IF_ERROR(Check(cudaMemcpy(&bad, flag, sizeof(int), cudaMemcpyDeviceToHost),
                            op, SeqStr(s)));
  if (bad != none) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: lens[%d] outside [0, max_len=%d]", op, bad, s.max_len));
  }
  return absl::OkStatus();
}

}  // namespace cuda

absl::Status CudaDeviceStatus() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "no CUDA device: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e)));
  }
  if (count == 0) {
    return absl::FailedPreconditionError("no CUDA device: device count is 0");
  }
  return absl::OkStatus();
}

absl::Status CudaSynchronize() {
  return cuda::Check(cudaDeviceSynchronize(), "cudaDeviceSynchronize", "");
}

namespace internal {
absl::Status DeviceAlloc(size_t bytes, void** ptr) {
  *ptr = nullptr;
  if (bytes == 0) return absl::OkStatus();
  return cuda::Check(cudaMalloc(ptr, bytes), "cudaMalloc",
                     absl::StrFormat("%d bytes", bytes));
}
void DeviceFree(void* ptr) {
  if (ptr != nullptr) cudaFree(ptr);
}
absl::Status CopyHostToDevice(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return cuda::Check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice),
                     "cudaMemcpy H2D", absl::StrFormat("%d bytes", bytes));
}
absl::Status CopyDeviceToHost(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return cuda::Check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost),
                     "cudaMemcpy D2H", absl::StrFormat("%d bytes", bytes));
}
absl::Status DeviceMemsetZero(void* ptr, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return cuda::Check(cudaMemset(ptr, 0, bytes), "cudaMemset",
                     absl::StrFormat("%d bytes", bytes));
}
}  // namespace internal
}  // namespace mim::kernels
