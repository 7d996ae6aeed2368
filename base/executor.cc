#include "base/executor.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace mim::base {

Executor::Executor(int threads, int max_queue, std::string name)
    : max_queue_(max_queue), name_(std::move(name)) {
  for (int i = 0; i < std::max(1, threads); ++i) {
    threads_.emplace_back([this] { Work(); });
  }
}

Executor::~Executor() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) t.join();
}

absl::Status Executor::Submit(absl::Time deadline, Task task) {
  std::vector<Item> expired;
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::CancelledError("the server is shutting down");
    const absl::Time now = absl::Now();
    if (static_cast<int64_t>(queue_.size()) >= max_queue_ &&
        now >= next_sweep_) {
      // Full: tasks whose deadline already passed give up their places
      // (they would only be told so when a thread reached them). At most
      // one sweep of the queue per kSweepInterval: under overload every
      // Submit finds it full.
      next_sweep_ = now + kSweepInterval;
      for (auto it = queue_.begin(); it != queue_.end();) {
        if (now >= it->deadline) {
          expired.push_back(std::move(*it));
          it = queue_.erase(it);
        } else {
          ++it;
        }
      }
    }
    if (static_cast<int64_t>(queue_.size()) >= max_queue_) {
      status = absl::ResourceExhaustedError(absl::StrCat(
          name_, " queue full (", queue_.size(),
          " requests waiting, --max_queue); retry with backoff"));
    } else {
      queue_.push_back(Item{deadline, std::move(task)});
    }
  }
  // Outside the lock: a task may Submit again.
  for (Item& item : expired) item.task(QueueDeadlineError());
  return status;
}

absl::Status Executor::QueueDeadlineError() const {
  return absl::DeadlineExceededError(absl::StrCat(
      "the deadline passed while the request waited in the ", name_,
      " queue for a thread"));
}

int64_t Executor::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(queue_.size());
}

void Executor::Work() {
  while (true) {
    Item item;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !queue_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping, nothing left
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    if (absl::Now() >= item.deadline) {
      item.task(QueueDeadlineError());
    } else {
      item.task(absl::OkStatus());
    }
  }
}

}  // namespace mim::base
