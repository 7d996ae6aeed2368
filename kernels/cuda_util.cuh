// Internal to the CUDA twins: status conversion, argument checks, cuBLAS
// handle, scratch memory and launch helpers. Compiled by nvcc only.
#ifndef MIM_KERNELS_CUDA_UTIL_CUH_
#define MIM_KERNELS_CUDA_UTIL_CUH_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "kernels/common.h"

namespace mim::kernels::cuda {

// INTERNAL status naming the kernel and the shapes, or OK. On failure the
// runtime's last-error slot is cleared, so a failed call (say an
// out-of-memory cudaMalloc) is not blamed on the next launch's CheckLaunch.
absl::Status Check(cudaError_t e, const char* what, const std::string& shape);
absl::Status CheckBlas(cublasStatus_t e, const char* what,
                       const std::string& shape);
// Checks the last launch (cudaGetLastError).
inline absl::Status CheckLaunch(const char* what, const std::string& shape) {
  return Check(cudaGetLastError(), what, shape);
}

std::string SeqStr(const SeqShape& s);

// INVALID_ARGUMENT worded as the CPU twins word it (cpu_util.h NullArg).
absl::Status NullArg(const char* op, const char* name);
// The first argument that is required (`needed`) but null, as NullArg.
// CUDA twins check every pointer a kernel would dereference for the given
// shape: a null device pointer would otherwise fault the kernel and leave
// the CUDA context unusable for the rest of the process.
struct PtrArg {
  const char* name;
  const void* ptr;
  bool needed;
};
absl::Status RequireNonNull(const char* op, std::initializer_list<PtrArg> args);

// The calling thread's cuBLAS handle, in the math mode GetCudaMath() says
// (dense_ops.h; strict fp32 by default).
absl::Status BlasHandle(const char* op, cublasHandle_t* out);

// Row-major C[M,N] = alpha op(A) op(B) + beta C via column-major cuBLAS.
// Degenerate shapes behave as BLAS defines them: M or N = 0 is a no-op,
// K = 0 gives C = beta C (C = 0 when beta = 0) without calling cuBLAS, which
// rejects the leading dimension 0 such shapes come with. Sizes beyond
// cuBLAS's int32 arguments are INVALID_ARGUMENT.
absl::Status Gemm(cublasHandle_t h, bool ta, bool tb, int64_t M, int64_t N,
                  int64_t K, float alpha, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C,
                  int64_t ldc, const char* what);

// Per-thread device scratch: slot i holds at least `bytes`; contents are
// undefined on return. Reused across calls so steady-state steps do not
// call cudaMalloc. Pointers stay valid until the same slot is requested
// with a larger size. Errors name `op`.
absl::Status Scratch(const char* op, int slot, size_t bytes, void** out);
template <typename T>
absl::Status ScratchOf(const char* op, int slot, size_t n, T** out) {
  void* p = nullptr;
  absl::Status s = Scratch(op, slot, n * sizeof(T) + 16, &p);
  *out = static_cast<T*>(p);
  return s;
}

// cudaMemset(p, 0, bytes), skipped when bytes is 0 (p may then be null).
absl::Status MemsetZero(void* p, size_t bytes, const char* what,
                        const std::string& shape);

// Validates the shape (no negative sizes), lens (non-null when batch > 0)
// and, on the device, 0 <= lens[b] <= max_len; synchronizes to read the
// verdict. INVALID_ARGUMENT names the op and the first bad row, as the CPU
// twin's ValidateSeq does.
absl::Status ValidateLens(const char* op, const SeqShape& s,
                          const int32_t* lens);

// Validates n int32 indices on the device: the first i with
// idx[i] >= limit gives INVALID_ARGUMENT "<op>: <what>[i] = v >= <limit_name>
// limit" (negative entries are padding and pass). Synchronizes.
absl::Status ValidateIndices(const char* op, const char* what, int64_t n,
                             const int32_t* idx, int64_t limit,
                             const char* limit_name);

// Device flag for "first bad position" checks: reset to "none" before a
// kernel that records atomicMin(flag, i), read back (synchronizing) after.
// Shares scratch slot 0 with ValidateLens/ValidateIndices.
absl::Status ResetBadFlag(const char* op, const std::string& shape,
                          unsigned long long** flag);
// *bad = the smallest recorded position, or -1 when none was recorded.
absl::Status ReadBadFlag(const char* op, const std::string& shape,
                         const unsigned long long* flag, int64_t* bad);

inline unsigned Blocks(int64_t n, int threads = 256) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

template <typename T>
struct SumOp {
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Reduces v over the block (blockDim.x == kThreads, a power of two) with
// `op` in a fixed order (a tree over shared memory), so results are the
// same bits run to run; every thread gets the result. `part` is the
// block's __shared__ scratch of kThreads elements of T. Every thread of
// the block must call it.
template <int kThreads, typename T, typename Part, typename Op>
__device__ T BlockReduce(T v, Part& part, Op op) {
  part[threadIdx.x] = v;
  __syncthreads();
  for (int o = kThreads / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) {
      const T a = part[threadIdx.x];
      const T b = part[threadIdx.x + o];
      part[threadIdx.x] = op(a, b);
    }
    __syncthreads();
  }
  const T total = part[0];
  __syncthreads();  // part is reused by the caller's next reduction
  return total;
}

}  // namespace mim::kernels::cuda

#define MIM_RETURN_IF_ERROR(expr)        \
  do {                                   \
    absl::Status _st = (expr);           \
    if (!_st.ok()) return _st;           \
  } while (0)

#endif  // MIM_KERNELS_CUDA_UTIL_CUH_
