// AwaitWithWatchdog's contract with real operations: work on another
// thread that finishes, work that never finishes, and work that fails.
// Every outcome here is decided by what the operation does, not by how
// fast the machine is (the timeout case never completes at all).
#include "kernels/collective_watchdog.h"

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace mim::kernels {
namespace {

TEST(CollectiveWatchdogTest, DoneWorkIsOkWithoutAbort) {
  int polls = 0, aborts = 0;
  const absl::Status st = AwaitWithWatchdog(
      "op", absl::Seconds(30), [&]() -> absl::StatusOr<bool> { return ++polls > 0; },
      [&] { ++aborts; });
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(polls, 1);
  EXPECT_EQ(aborts, 0);
}

TEST(CollectiveWatchdogTest, WaitsForWorkOnAnotherThread) {
  absl::Notification finished;
  std::atomic<int> aborts{0};
  std::thread worker([&] {
    // Some real work, then done.
    volatile double x = 0;
    for (int i = 0; i < 1000000; ++i) x = x + i;
    finished.Notify();
  });
  const absl::Status st = AwaitWithWatchdog(
      "op", absl::Hours(1),
      [&]() -> absl::StatusOr<bool> { return finished.HasBeenNotified(); },
      [&] { ++aborts; });
  worker.join();
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(aborts.load(), 0);
}

TEST(CollectiveWatchdogTest, WorkThatNeverFinishesIsAbortedAtTheDeadline) {
  int aborts = 0;
  const absl::Status st = AwaitWithWatchdog(
      "ncclAllReduce of 12 floats, rank 1 of 2", absl::Milliseconds(20),
      []() -> absl::StatusOr<bool> { return false; }, [&] { ++aborts; });
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(st.message(),
            "ncclAllReduce of 12 floats, rank 1 of 2 did not complete within 20ms; a "
            "peer may have died or hung, so the communicator was aborted (its later "
            "calls fail)");
  EXPECT_EQ(aborts, 1);
}

TEST(CollectiveWatchdogTest, AnAsynchronousErrorAbortsAndIsReturned) {
  int polls = 0, aborts = 0;
  const absl::Status st = AwaitWithWatchdog(
      "op", absl::Hours(1),
      [&]() -> absl::StatusOr<bool> {
        if (++polls < 3) return false;
        return absl::InternalError("NCCL remote process exited");
      },
      [&] { ++aborts; });
  EXPECT_EQ(st, absl::InternalError("NCCL remote process exited"));
  EXPECT_EQ(polls, 3);
  EXPECT_EQ(aborts, 1);
}

}  // namespace
}  // namespace mim::kernels
