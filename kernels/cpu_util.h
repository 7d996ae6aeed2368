// Internal helpers for the CPU twins: BLAS by element type, a parallel-for
// over the batch, and shared argument validation.
#ifndef MIM_KERNELS_CPU_UTIL_H_
#define MIM_KERNELS_CPU_UTIL_H_

#include <cstdint>
#include <functional>
#include <initializer_list>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "kernels/common.h"

namespace mim::kernels::cpu {

// Row-major GEMM: C = alpha * op(A) * op(B) + beta * C, op(A) is M x K.
void Gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
          float alpha, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc);
void Gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
          double alpha, const double* A, int64_t lda, const double* B,
          int64_t ldb, double beta, double* C, int64_t ldc);

// Number of chunks ParallelFor splits n items into:
// min(n, CpuThreads() * splits_per_thread), at least 1.
int NumChunks(int64_t n, int splits_per_thread = 1);
// Calls fn(begin, end, chunk) for NumChunks(n) contiguous chunks of [0, n)
// on the calling thread plus at most CpuThreads() - 1 threads of a
// persistent worker pool (however many chunks there are). Blocks until all
// are done; safe to call from several threads at once and from inside fn.
// An exception from fn is rethrown here once the chunks already started
// have finished (the rest are skipped). Chunk boundaries depend only on n
// and the thread count, so per-chunk partial sums reduced in chunk order
// are deterministic.
void ParallelFor(int64_t n,
                 const std::function<void(int64_t, int64_t, int)>& fn,
                 int splits_per_thread = 1);
// ParallelFor with the chunk count given (>= 1). Callers that size per-chunk
// state with NumChunks pass that count here, so a SetCpuThreads from
// another thread in between cannot hand fn a chunk index past their state.
void ParallelForChunks(int64_t n, int chunks,
                       const std::function<void(int64_t, int64_t, int)>& fn);

// Like ParallelFor, but splits [0, n) into up to kSplitsPerThread chunks per
// thread, so a thread that starts late (a busy or descheduled core) leaves
// its share to the others instead of doubling the call's time. For ops with
// no per-chunk state; the chunk index is not passed.
inline constexpr int kSplitsPerThread = 4;
void ParallelForBalanced(int64_t n,
                         const std::function<void(int64_t, int64_t)>& fn);

// INVALID_ARGUMENT unless all sizes are >= 0 and 0 <= lens[b] <= max_len.
absl::Status ValidateSeq(const char* op, const SeqShape& s,
                         const int32_t* lens);

inline absl::Status NullArg(const char* op, const char* name) {
  return absl::InvalidArgumentError(
      absl::StrFormat("%s: required pointer '%s' is null", op, name));
}

// A pointer argument and whether this call reads or writes through it.
struct PtrArg {
  const char* name;
  const void* ptr;
  bool needed;
};
// NullArg for the first needed pointer that is null, in argument order.
// The CUDA twins check the same conditions (cuda::RequireNonNull), so both
// refuse a null tensor with the same message.
inline absl::Status RequireNonNull(const char* op,
                                   std::initializer_list<PtrArg> args) {
  for (const PtrArg& a : args) {
    if (a.needed && a.ptr == nullptr) return NullArg(op, a.name);
  }
  return absl::OkStatus();
}

}  // namespace mim::kernels::cpu

#endif  // MIM_KERNELS_CPU_UTIL_H_
