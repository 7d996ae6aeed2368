#include "kernels/cpu_util.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include <cblas.h>

#include "kernels/simd.h"

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
  if (K == 0) {  // C = beta C; BLAS would reject the zero leading dimension
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < N; ++j) {
        C[i * ldc + j] = beta == 0 ? float(0) : beta * C[i * ldc + j];
      }
    }
    return;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
              tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb,
              beta, C, ldc);
}
void Gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha,
          const double* A, int64_t lda, const double* B, int64_t ldb,
          double beta, double* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // C = beta C; BLAS would reject the zero leading dimension
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < N; ++j) {
        C[i * ldc + j] = beta == 0 ? double(0) : beta * C[i * ldc + j];
      }
    }
    return;
  }
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
              tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb,
              beta, C, ldc);
}

namespace {
std::atomic<bool> g_force_baseline_simd{false};
}  // namespace

bool UseAvx2() {
#if defined(__x86_64__)
  static const bool has_avx2 = __builtin_cpu_supports("avx2");
  return has_avx2 && !g_force_baseline_simd.load(std::memory_order_relaxed);
#else
  return false;
#endif
}
void ForceBaselineSimd(bool force) { g_force_baseline_simd.store(force); }

int NumChunks(int64_t n, int splits_per_thread) {
  const int64_t most = int64_t{CpuThreads()} * std::max(1, splits_per_thread);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(most, n)));
}

namespace {

// Persistent workers for ParallelFor. Starting std::threads on every call
// cost tens of microseconds per op, a large share of a sub-millisecond
// kernel. A call posts one Job; workers and the caller claim its chunks
// under the mutex, so a caller never waits on a chunk nobody has started
// (nested or concurrent ParallelFor calls cannot deadlock), and a Job is
// touched only under the mutex, so it can live on the caller's stack.
class WorkerPool {
 public:
  static WorkerPool& Get() {
    static WorkerPool* pool = new WorkerPool();  // leaked: workers outlive main
    return *pool;
  }

  void Run(int chunks, const std::function<void(int)>& body) {
    Job job{&body, chunks};
    {
      std::lock_guard<std::mutex> lock(mu_);
      EnsureWorkers(chunks - 1);
      queue_.push_back(&job);
      pending_.fetch_add(1, std::memory_order_release);
    }
    work_cv_.notify_all();
    for (;;) {  // the caller works on its own job until no chunk is left
      int c;
      {
        std::lock_guard<std::mutex> lock(mu_);
        c = Claim(&job);
      }
      if (c < 0) break;
      body(c);
      Finish(&job);
    }
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return job.done == job.chunks; });
  }

 private:
  struct Job {
    const std::function<void(int)>* body;
    int chunks;
    int next = 0;
    int done = 0;
  };

  // Next unclaimed chunk of `job`, or -1; drops the job from the queue
  // once every chunk is claimed. Requires mu_.
  int Claim(Job* job) {
    if (job->next >= job->chunks) return -1;
    const int c = job->next++;
    if (job->next == job->chunks) {
      queue_.erase(std::find(queue_.begin(), queue_.end(), job));
      pending_.fetch_sub(1, std::memory_order_relaxed);
    }
    return c;
  }

  void Finish(Job* job) {
    std::lock_guard<std::mutex> lock(mu_);
    if (++job->done == job->chunks) done_cv_.notify_all();
  }

  void EnsureWorkers(int n) {  // requires mu_
    while (static_cast<int>(workers_.size()) < n) {
      workers_.emplace_back([this] { WorkerLoop(); });
      workers_.back().detach();
    }
  }

  void WorkerLoop() {
    for (;;) {
      // Kernels come back to back in a training step: spin briefly before
      // sleeping so the next op does not pay a futex wake-up.
      const auto spin_until =
          std::chrono::steady_clock::now() + std::chrono::microseconds(50);
      while (pending_.load(std::memory_order_acquire) == 0 &&
             std::chrono::steady_clock::now() < spin_until) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#endif
      }
      Job* job;
      int c;
      {
        std::unique_lock<std::mutex> lock(mu_);
        work_cv_.wait(lock, [&] { return !queue_.empty(); });
        job = queue_.front();
        c = Claim(job);
      }
      (*job->body)(c);
      Finish(job);
    }
  }

  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<Job*> queue_;        // jobs with unclaimed chunks
  std::atomic<int> pending_{0};   // queue_.size(), readable without mu_
  std::vector<std::thread> workers_;
};

}  // namespace

void ParallelFor(int64_t n,
                 const std::function<void(int64_t, int64_t, int)>& fn,
                 int splits_per_thread) {
  const int chunks = NumChunks(n, splits_per_thread);
  if (chunks == 1) {
    fn(0, n, 0);
    return;
  }
  const std::function<void(int)> body = [&](int c) {
    fn(n * c / chunks, n * (c + 1) / chunks, c);
  };
  WorkerPool::Get().Run(chunks, body);
}

void ParallelForBalanced(int64_t n,
                         const std::function<void(int64_t, int64_t)>& fn) {
  if (CpuThreads() == 1 || n <= 1) {
    fn(0, n);
    return;
  }
  const int chunks = NumChunks(n, kSplitsPerThread);
  const std::function<void(int)> body = [&](int c) {
    fn(n * c / chunks, n * (c + 1) / chunks);
  };
  WorkerPool::Get().Run(chunks, body);
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
