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
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::CancelledError("the server is shutting down");
  if (static_cast<int64_t>(queue_.size()) >= max_queue_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        name_, " queue full (", queue_.size(),
        " requests waiting, --max_queue); retry with backoff"));
  }
  queue_.push_back(Item{deadline, std::move(task)});
  return absl::OkStatus();
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
      item.task(absl::DeadlineExceededError(absl::StrCat(
          "the deadline passed while the request waited in the ", name_,
          " queue for a thread")));
    } else {
      item.task(absl::OkStatus());
    }
  }
}

}  // namespace mim::base
