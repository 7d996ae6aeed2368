#include "kernels/cpu_util.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
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
namespace {

// C = beta C for a GEMM with nothing to sum (K = 0); beta 0 writes zeros
// without reading C, as BLAS does.
template <typename T>
void ScaleMatrix(int64_t M, int64_t N, T beta, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      C[i * ldc + j] = beta == 0 ? T(0) : beta * C[i * ldc + j];
    }
  }
}

}  // namespace

void Gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb,
          float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // BLAS would reject the zero leading dimension
    ScaleMatrix(M, N, beta, C, ldc);
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
  if (K == 0) {  // BLAS would reject the zero leading dimension
    ScaleMatrix(M, N, beta, C, ldc);
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
// kernel. A call posts one Job that at most CpuThreads() - 1 workers may
// join (however many chunks it has: SetCpuThreads is the thread budget);
// they and the caller claim its chunks under the mutex, so a caller never
// waits on a chunk nobody has started (nested or concurrent ParallelFor
// calls cannot deadlock). A Job's counters are touched only under the
// mutex and the caller returns only once every claimed chunk is finished,
// so the Job can live on the caller's stack. An exception from a chunk
// (any thread) is rethrown to the caller after that point; the chunks not
// yet claimed are skipped.
class WorkerPool {
 public:
  static WorkerPool& Get() {
    static WorkerPool* pool = new WorkerPool();  // leaked: workers outlive main
    return *pool;
  }

  // Runs body(c) for c in [0, chunks) on the caller and up to `helpers`
  // workers (none: on the caller alone, in chunk order).
  void Run(int chunks, int helpers, const std::function<void(int)>& body) {
    if (helpers <= 0) {
      for (int c = 0; c < chunks; ++c) body(c);
      return;
    }
    Job job{&body, chunks, helpers};
    {
      std::lock_guard<std::mutex> lock(mu_);
      EnsureWorkers(helpers);
      queue_.push_back(&job);
      pending_.fetch_add(1, std::memory_order_release);
    }
    if (helpers == 1) {
      work_cv_.notify_one();
    } else {
      work_cv_.notify_all();
    }
    int c;
    {
      std::lock_guard<std::mutex> lock(mu_);
      c = Claim(&job);
    }
    while (c >= 0) {  // the caller works on its own job until none is left
      c = RunChunk(&job, c);
    }
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return job.done == job.next; });
    if (job.error) std::rethrow_exception(job.error);
  }

 private:
  struct Job {
    const std::function<void(int)>* body;
    int chunks;
    int helpers;  // workers that may still join
    int next = 0;  // chunks claimed
    int done = 0;  // claimed chunks finished
    bool queued = true;
    std::exception_ptr error;
  };

  void Dequeue(Job* job) {  // requires mu_
    if (!job->queued) return;
    job->queued = false;
    queue_.erase(std::find(queue_.begin(), queue_.end(), job));
    pending_.fetch_sub(1, std::memory_order_relaxed);
  }

  // Next unclaimed chunk of `job`, or -1 (also after an error); dequeues
  // the job once no chunk is left to claim. Requires mu_.
  int Claim(Job* job) {
    if (job->error || job->next >= job->chunks) {
      Dequeue(job);
      return -1;
    }
    const int c = job->next++;
    if (job->next == job->chunks) Dequeue(job);
    return c;
  }

  // Runs chunk c, then marks it done and claims the next one (-1: none).
  // Once done == next the caller may return and free the job, so the job
  // is not touched after the unlock unless a new chunk was claimed.
  int RunChunk(Job* job, int c) {
    std::exception_ptr error;
    try {
      (*job->body)(c);
    } catch (...) {
      error = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (error && !job->error) job->error = error;
    ++job->done;
    const int next = Claim(job);
    if (next < 0 && job->done == job->next) done_cv_.notify_all();
    return next;
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
        job = queue_.front();  // queued: has a chunk to claim and a seat
        if (--job->helpers == 0) Dequeue(job);
        c = Claim(job);
      }
      while (c >= 0) c = RunChunk(job, c);
    }
  }

  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<Job*> queue_;        // jobs a worker may join
  std::atomic<int> pending_{0};   // queue_.size(), readable without mu_
  std::vector<std::thread> workers_;
};

}  // namespace

void ParallelFor(int64_t n,
                 const std::function<void(int64_t, int64_t, int)>& fn,
                 int splits_per_thread) {
  ParallelForChunks(n, NumChunks(n, splits_per_thread), fn);
}

void ParallelForChunks(int64_t n, int chunks,
                       const std::function<void(int64_t, int64_t, int)>& fn) {
  const int threads = CpuThreads();
  chunks = std::max(1, chunks);
  if (chunks == 1) {
    fn(0, n, 0);
    return;
  }
  const std::function<void(int)> body = [&](int c) {
    fn(n * c / chunks, n * (c + 1) / chunks, c);
  };
  WorkerPool::Get().Run(chunks, std::min(chunks, threads) - 1, body);
}

void ParallelForBalanced(int64_t n,
                         const std::function<void(int64_t, int64_t)>& fn) {
  // One thread: one chunk (splitting would only add calls).
  const int chunks =
      CpuThreads() == 1 ? 1 : NumChunks(n, kSplitsPerThread);
  ParallelForChunks(n, chunks,
                    [&](int64_t lo, int64_t hi, int) { fn(lo, hi); });
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
