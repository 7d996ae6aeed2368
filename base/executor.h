// Executor: a fixed pool of threads running tasks from a bounded queue,
// each task with a deadline. The gRPC callback handlers of the serving tier
// and of the shards hand their blocking work (shard pulls, scoring, store
// calls) to it, so that no gRPC thread blocks and a burst of requests waits
// in the queue within its deadline instead of being refused for want of a
// thread (the sync server's "Server Threadpool Exhausted").
//
// Thread-safety: safe for concurrent access.
#ifndef MIM_BASE_EXECUTOR_H_
#define MIM_BASE_EXECUTOR_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace mim::base {

class Executor {
 public:
  // A task gets OK when it runs before its deadline, and DEADLINE_EXCEEDED
  // when its deadline passed while it waited (it must then only report
  // that).
  using Task = std::function<void(const absl::Status& admitted)>;

  // `threads` >= 1 workers; at most `max_queue` tasks wait. `name` says
  // whose queue it is in error messages ("serving", "shard 0/2").
  Executor(int threads, int max_queue, std::string name);
  // Runs every task still queued (each told OK or DEADLINE_EXCEEDED as
  // usual), then joins the workers. Submit meanwhile: CANCELLED.
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Queues `task`. When the queue is full, queued tasks whose deadline has
  // passed are first told so (DEADLINE_EXCEEDED, on this thread) and
  // dropped (at most one such sweep per 10 ms); if it is still full the
  // task is not queued and this returns RESOURCE_EXHAUSTED naming the
  // queue and its size (the task is not run).
  absl::Status Submit(absl::Time deadline, Task task);

  int64_t queued() const;

 private:
  struct Item {
    absl::Time deadline;
    Task task;
  };
  void Work();
  absl::Status QueueDeadlineError() const;

  const int max_queue_;
  const std::string name_;
  mutable absl::Mutex mu_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // When a full queue may next be swept for expired tasks (Submit).
  static constexpr absl::Duration kSweepInterval = absl::Milliseconds(10);
  absl::Time next_sweep_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::vector<std::thread> threads_;
};

}  // namespace mim::base

#endif  // MIM_BASE_EXECUTOR_H_
