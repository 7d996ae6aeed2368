#include "base/executor.h"

#include <atomic>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace mim::base {
namespace {

TEST(ExecutorTest, RunsTasksAndRefusesBeyondTheQueue) {
  absl::Notification release, started;
  std::atomic<int> ran{0};
  std::vector<absl::StatusCode> codes(4, absl::StatusCode::kUnknown);
  {
    Executor ex(/*threads=*/1, /*max_queue=*/2, "test");
    const absl::Time later = absl::Now() + absl::Hours(1);
    // The first task holds the only thread until released.
    ASSERT_TRUE(ex.Submit(later, [&](const absl::Status& s) {
                    codes[0] = s.code();
                    started.Notify();
                    release.WaitForNotification();
                    ++ran;
                  }).ok());
    // Once it runs, the queue is empty.
    started.WaitForNotification();
    EXPECT_EQ(ex.queued(), 0);
    for (int i = 1; i <= 2; ++i) {
      ASSERT_TRUE(ex.Submit(later, [&, i](const absl::Status& s) {
                      codes[i] = s.code();
                      ++ran;
                    }).ok());
    }
    const absl::Status full = ex.Submit(later, [](const absl::Status&) {});
    EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_NE(full.message().find("test queue full (2 requests waiting"),
              std::string::npos);
    release.Notify();
  }
  EXPECT_EQ(ran.load(), 3);
  EXPECT_EQ(codes[0], absl::StatusCode::kOk);
}

TEST(ExecutorTest, ATaskWhoseDeadlinePassedWhileQueuedIsToldSo) {
  absl::Notification release;
  absl::StatusCode late = absl::StatusCode::kUnknown;
  {
    Executor ex(1, 10, "test");
    ASSERT_TRUE(ex.Submit(absl::Now() + absl::Hours(1),
                          [&](const absl::Status&) {
                            release.WaitForNotification();
                          })
                    .ok());
    ASSERT_TRUE(ex.Submit(absl::Now() + absl::Milliseconds(1),
                          [&](const absl::Status& s) { late = s.code(); })
                    .ok());
    absl::SleepFor(absl::Milliseconds(5));  // let the 1 ms deadline pass
    release.Notify();
  }
  EXPECT_EQ(late, absl::StatusCode::kDeadlineExceeded);
}

// A full queue first drops the tasks whose deadline passed while they
// waited (each told DEADLINE_EXCEEDED), so they do not hold places a live
// request could take.
TEST(ExecutorTest, AFullQueueMakesRoomByDroppingExpiredTasks) {
  absl::Notification release, started;
  std::atomic<int> expired{0}, ran{0};
  {
    Executor ex(/*threads=*/1, /*max_queue=*/2, "test");
    ASSERT_TRUE(ex.Submit(absl::Now() + absl::Hours(1),
                          [&](const absl::Status&) {
                            started.Notify();
                            release.WaitForNotification();
                          })
                    .ok());
    started.WaitForNotification();
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(ex.Submit(absl::Now() + absl::Milliseconds(1),
                            [&](const absl::Status& s) {
                              if (absl::IsDeadlineExceeded(s)) ++expired;
                            })
                      .ok());
    }
    absl::SleepFor(absl::Milliseconds(5));  // both deadlines pass
    ASSERT_TRUE(ex.Submit(absl::Now() + absl::Hours(1),
                          [&](const absl::Status& s) {
                            if (s.ok()) ++ran;
                          })
                    .ok());
    EXPECT_EQ(expired.load(), 2);  // told at once, on the submitting thread
    EXPECT_EQ(ex.queued(), 1);
    release.Notify();
  }
  EXPECT_EQ(ran.load(), 1);
}

}  // namespace
}  // namespace mim::base
