// CUDA runtime glue: device status, DeviceBuffer primitives, scratch,
// cuBLAS handle, shared validation.
#include <climits>
#include <memory>
#include <vector>

#include "kernels/cuda_util.cuh"
#include "kernels/dense_ops.h"
#include "kernels/device_buffer.h"

namespace mim::kernels {
namespace cuda {

absl::Status Check(cudaError_t e, const char* what, const std::string& shape) {
  if (e == cudaSuccess) return absl::OkStatus();
  // Clear the last-error slot (a sticky error stays regardless).
  (void)cudaGetLastError();
  return absl::InternalError(absl::StrFormat("CUDA %s [%s]: %s: %s", what,
                                             shape, cudaGetErrorName(e),
                                             cudaGetErrorString(e)));
}

absl::Status CheckBlas(cublasStatus_t e, const char* what,
                       const std::string& shape) {
  if (e == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrFormat("cuBLAS %s [%s]: %s (%d): %s",
                                             what, shape, cublasGetStatusName(e),
                                             static_cast<int>(e),
                                             cublasGetStatusString(e)));
}

std::string SeqStr(const SeqShape& s) {
  return absl::StrFormat("B=%d L=%d d=%d", s.batch, s.max_len, s.dim);
}

absl::Status NullArg(const char* op, const char* name) {
  return absl::InvalidArgumentError(
      absl::StrFormat("%s: required pointer '%s' is null", op, name));
}

absl::Status RequireNonNull(const char* op, std::initializer_list<PtrArg> args) {
  for (const PtrArg& a : args) {
    if (a.needed && a.ptr == nullptr) return NullArg(op, a.name);
  }
  return absl::OkStatus();
}

namespace {
struct HandleHolder {
  cublasHandle_t h = nullptr;
  CudaMath math = CudaMath::kFp32;
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

namespace {
cublasMath_t BlasMath(CudaMath m) {
  return m == CudaMath::kTf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH;
}
}  // namespace

absl::Status BlasHandle(const char* op, cublasHandle_t* out) {
  thread_local HandleHolder holder;
  const CudaMath math = GetCudaMath();
  if (holder.h == nullptr) {
    cublasHandle_t h = nullptr;
    MIM_RETURN_IF_ERROR(CheckBlas(cublasCreate(&h), "cublasCreate", op));
    // Strict fp32 unless SetCudaMath(kTf32) (dense_ops.h).
    const absl::Status st =
        CheckBlas(cublasSetMathMode(h, BlasMath(math)), "cublasSetMathMode", op);
    if (!st.ok()) {
      cublasDestroy(h);
      return st;
    }
    holder.h = h;  // only a fully set-up handle is kept
    holder.math = math;
  } else if (holder.math != math) {
    MIM_RETURN_IF_ERROR(
        CheckBlas(cublasSetMathMode(holder.h, BlasMath(math)), "cublasSetMathMode", op));
    holder.math = math;
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
  // Built only for an error message (GEMMs are on every training step).
  auto shape = [&] {
    return absl::StrFormat("M=%d N=%d K=%d lda=%d ldb=%d ldc=%d%s%s", M, N, K, lda, ldb,
                           ldc, ta ? " A^T" : "", tb ? " B^T" : "");
  };
  if (M == 0 || N == 0) return absl::OkStatus();
  if (K == 0) {
    // cuBLAS wants every leading dimension >= 1 even when K = 0 (and A or B
    // then has ld 0, e.g. d = 0 or in = 0); the product is empty anyway.
    if (beta == 1.f) return absl::OkStatus();
    ScaleRowsKernel<<<Blocks(M * N), 256>>>(M, N, ldc, beta, C);
    const cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? absl::OkStatus() : Check(e, what, shape() + " (C = beta C)");
  }
  for (int64_t v : {M, N, K, lda, ldb, ldc}) {
    if (v > INT_MAX) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: GEMM [%s] exceeds cuBLAS's int32 sizes", what, shape()));
    }
  }
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T.
  const cublasStatus_t st = cublasSgemm(
      h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
      static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha, B,
      static_cast<int>(ldb), A, static_cast<int>(lda), &beta, C, static_cast<int>(ldc));
  return st == CUBLAS_STATUS_SUCCESS ? absl::OkStatus() : CheckBlas(st, what, shape());
}

absl::Status Scratch(const char* op, int slot, size_t bytes, void** out) {
  thread_local ScratchSlots s;
  if (s.slots.size() <= static_cast<size_t>(slot)) s.slots.resize(slot + 1);
  auto& e = s.slots[slot];
  if (e.second < bytes) {
    const std::string what = absl::StrFormat("scratch slot %d of %d bytes", slot, bytes);
    // Memory may still be in use by queued kernels on the default stream.
    MIM_RETURN_IF_ERROR(Check(cudaDeviceSynchronize(), op, what + ": sync"));
    cudaFree(e.first);
    e = {nullptr, 0};
    MIM_RETURN_IF_ERROR(Check(cudaMalloc(&e.first, bytes), op, what + ": cudaMalloc"));
    e.second = bytes;
  }
  *out = e.first;
  return absl::OkStatus();
}

absl::Status MemsetZero(void* p, size_t bytes, const char* what,
                        const std::string& shape) {
  if (bytes == 0) return absl::OkStatus();
  return Check(cudaMemset(p, 0, bytes), what, shape);
}

namespace {
constexpr unsigned long long kNoBad = ~0ull;

__global__ void ValidateLensKernel(int64_t B, int64_t L, const int32_t* lens,
                                   unsigned long long* bad) {
  const int64_t b = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (b < B && (lens[b] < 0 || lens[b] > L)) {
    atomicMin(bad, static_cast<unsigned long long>(b));
  }
}

__global__ void ValidateIndicesKernel(int64_t n, const int32_t* idx,
                                      int64_t limit, unsigned long long* bad) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i < n && idx[i] >= limit) atomicMin(bad, static_cast<unsigned long long>(i));
}
}  // namespace

absl::Status ResetBadFlag(const char* op, const std::string& shape,
                          unsigned long long** flag) {
  MIM_RETURN_IF_ERROR(ScratchOf(op, 0, 1, flag));
  return Check(cudaMemcpy(*flag, &kNoBad, sizeof(kNoBad), cudaMemcpyHostToDevice),
               op, shape + ": reset check flag");
}

absl::Status ReadBadFlag(const char* op, const std::string& shape,
                         const unsigned long long* flag, int64_t* bad) {
  unsigned long long v = kNoBad;
  MIM_RETURN_IF_ERROR(Check(cudaMemcpy(&v, flag, sizeof(v), cudaMemcpyDeviceToHost),
                            op, shape + ": read check flag"));
  *bad = v == kNoBad ? -1 : static_cast<int64_t>(v);
  return absl::OkStatus();
}

namespace {
// Reads one int32 from device memory (for error messages).
absl::Status ReadInt(const char* op, const std::string& shape, const int32_t* p,
                     int32_t* v) {
  return Check(cudaMemcpy(v, p, sizeof(*v), cudaMemcpyDeviceToHost), op,
               shape + ": read bad value");
}
}  // namespace

absl::Status ValidateLens(const char* op, const SeqShape& s,
                          const int32_t* lens) {
  if (s.batch < 0 || s.max_len < 0 || s.dim < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: negative shape %s", op, SeqStr(s)));
  }
  if (s.batch == 0) return absl::OkStatus();
  if (lens == nullptr) return NullArg(op, "lens");
  const std::string shape = SeqStr(s);
  unsigned long long* flag = nullptr;
  MIM_RETURN_IF_ERROR(ResetBadFlag(op, shape, &flag));
  ValidateLensKernel<<<Blocks(s.batch), 256>>>(s.batch, s.max_len, lens, flag);
  MIM_RETURN_IF_ERROR(CheckLaunch(op, shape + ": ValidateLensKernel"));
  int64_t bad = -1;
  MIM_RETURN_IF_ERROR(ReadBadFlag(op, shape, flag, &bad));
  if (bad >= 0) {
    int32_t v = 0;
    MIM_RETURN_IF_ERROR(ReadInt(op, shape, lens + bad, &v));
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: lens[%d] = %d outside [0, max_len=%d]", op, bad, v, s.max_len));
  }
  return absl::OkStatus();
}

absl::Status ValidateIndices(const char* op, const char* what, int64_t n,
                             const int32_t* idx, int64_t limit,
                             const char* limit_name) {
  if (n <= 0) return absl::OkStatus();
  if (idx == nullptr) return NullArg(op, what);
  const std::string shape = absl::StrFormat("%s: n=%d %s=%d", what, n, limit_name, limit);
  unsigned long long* flag = nullptr;
  MIM_RETURN_IF_ERROR(ResetBadFlag(op, shape, &flag));
  ValidateIndicesKernel<<<Blocks(n), 256>>>(n, idx, limit, flag);
  MIM_RETURN_IF_ERROR(CheckLaunch(op, shape + ": ValidateIndicesKernel"));
  int64_t bad = -1;
  MIM_RETURN_IF_ERROR(ReadBadFlag(op, shape, flag, &bad));
  if (bad >= 0) {
    int32_t v = 0;
    MIM_RETURN_IF_ERROR(ReadInt(op, shape, idx + bad, &v));
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: %s[%d] = %d >= %s %d", op, what, bad, v, limit_name, limit));
  }
  return absl::OkStatus();
}

}  // namespace cuda

absl::Status CudaDeviceStatus() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
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
  return cuda::MemsetZero(ptr, bytes, "cudaMemset", absl::StrFormat("%d bytes", bytes));
}
}  // namespace internal
}  // namespace mim::kernels
