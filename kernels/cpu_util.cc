#include "kernels/cpu_util.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include <cblas.h>

namespace mim::kernels {
namespace {
std::atomic<int> g_cpu_threads{1};
}  // namespace

void SetCpuThreads(int num_threads) {
  g_cpu_threads.store(std::max(1, num_threads));
  // Our threads each call BLAS; OpenBLAS's own pool would oversubscribe.
  openblas_set_num_threads(1);
}
int CpuThreads() { return g_cpu_threads.load(); }

namespace cpu {

void Gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb,
          float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
              tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb,
              beta, C, ldc);
}
void Gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha,
          const double* A, int64_t lda, const double* B, int64_t ldb,
          double beta, double* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
              tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb,
              beta, C, ldc);
}

int NumChunks(int64_t n) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(CpuThreads(), n)));
}

void ParallelFor(int64_t n,
                 const std::function<void(int64_t, int64_t, int)>& fn) {
  const int chunks = NumChunks(n);
  auto bounds = [&](int c) { return n * c / chunks; };
  if (chunks == 1) {
    fn(0, n, 0);
    return;
  }
  std::vector<std::thread> threads;
  threads.reserve(chunks - 1);
  for (int c = 1; c < chunks; ++c) {
    threads.emplace_back([&, c] { fn(bounds(c), bounds(c + 1), c); });
  }
  fn(bounds(0), bounds(1), 0);
  for (auto& t : threads) t.join();
}

absl::Status ValidateSeq(const char* op, const SeqShape& s,
                         const int32_t* lens) {
  if (s.batch < 0 || s.max_len < 0 || s.dim < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: negative shape B=%d L=%d d=%d", op, s.batch, s.max_len, s.dim));
  }
  if (s.batch > 0 && lens == nullptr) return NullArg(op, "lens");
  for (int64_t b = 0; b < s.batch; ++b) {
    if (lens[b] < 0 || lens[b] > s.max_len) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: lens[%d] = %d outside [0, max_len=%d]", op, b, lens[b],
          s.max_len));
    }
  }
  return absl::OkStatus();
}

}  // namespace cpu
}  // namespace mim::kernels
