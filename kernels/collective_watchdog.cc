#include "kernels/collective_watchdog.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace mim::kernels {

absl::Status AwaitWithWatchdog(absl::string_view what, absl::Duration timeout,
                               const std::function<absl::StatusOr<bool>()>& poll,
                               const std::function<void()>& abort) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration pause = absl::Microseconds(50);
  while (true) {
    const absl::StatusOr<bool> done = poll();
    if (!done.ok()) {
      abort();
      return done.status();
    }
    if (*done) return absl::OkStatus();
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      abort();
      return absl::DeadlineExceededError(absl::StrCat(
          what, " did not complete within ", absl::FormatDuration(timeout),
          "; a peer may have died or hung, so the communicator was aborted "
          "(its later calls fail)"));
    }
    // Polling is NCCL's documented way to wait with a deadline
    // (ncclCommGetAsyncError); the pause grows so a long collective costs
    // little CPU and a short one little latency.
    absl::SleepFor(std::min(pause, deadline - now));
    pause = std::min(pause * 2, absl::Milliseconds(10));
  }
}

}  // namespace mim::kernels
