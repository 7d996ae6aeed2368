// The NCCL unique-id exchange (worker/nccl_id_exchange.h) against a real
// //ps:server shard on loopback: three workers (threads, each with its own
// client) get worker 0's id whatever order they arrive in; a second run
// over the same table gets the second run's id, never the first's; a
// worker whose earlier runs differ from worker 0's is refused; a worker
// waiting for a worker 0 that never comes gives up naming the generation.
// (NCCL itself needs GPUs: tools/gpu_check.sh.)
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "ps/client.h"
#include "tests/process.h"
#include "tests/shared_cluster.h"
#include "worker/nccl_id_exchange.h"

namespace mim {
namespace {

using ::mim::testing::SharedClusterTest;
using ::mim::worker::ExchangeNcclId;
using ::mim::worker::kNcclIdBytes;
using ::mim::worker::NcclIdExchangeOptions;

// A distinct id per run: every byte value 0..255 appears, so the float
// encoding is checked over the whole range.
std::string RunId(int run) {
  std::string id(kNcclIdBytes, '\0');
  for (int i = 0; i < kNcclIdBytes; ++i) {
    id[i] = static_cast<char>((i * 2 + run * 7 + (i >= 64 ? 1 : 0)) & 0xff);
  }
  return id;
}

class NcclIdExchangeTest : public SharedClusterTest {
 protected:
  static void SetUpTestSuite() { StartSharedCluster("nccl_id_exchange"); }

  // Runs workers 0..n-1 concurrently, worker 0 last to start when
  // `zero_last` (the others then wait for it); returns each one's result.
  static std::vector<absl::StatusOr<std::string>> RunWorkers(
      const std::string& table, int n, const std::string& id, bool zero_last) {
    std::vector<absl::StatusOr<std::string>> out(
        n, absl::UnknownError("not run"));
    std::vector<std::thread> threads;
    for (int w = zero_last ? 1 : 0; w < n; ++w) {
      threads.emplace_back([&, w] {
        auto client = Client();
        out[w] = ExchangeNcclId(client.get(), table, n, w,
                                [&]() -> absl::StatusOr<std::string> { return id; });
      });
    }
    if (zero_last) {
      auto client = Client();
      out[0] = ExchangeNcclId(client.get(), table, n, 0,
                              [&]() -> absl::StatusOr<std::string> { return id; });
    }
    for (std::thread& t : threads) t.join();
    return out;
  }

};
TEST_F(NcclIdExchangeTest, EveryWorkerGetsWorkerZerosIdRunAfterRun) {
  for (int run = 1; run <= 3; ++run) {
    SCOPED_TRACE(run);
    const auto got = RunWorkers("ids", 3, RunId(run), /*zero_last=*/run % 2 == 1);
    for (int w = 0; w < 3; ++w) {
      ASSERT_TRUE(got[w].ok()) << "worker " << w << ": " << got[w].status();
      EXPECT_EQ(*got[w], RunId(run)) << "worker " << w;
    }
  }
}

absl::StatusOr<std::string> Exchange(ps::PsClient* client,
                                     const std::string& table, int worker,
                                     int run, absl::Duration timeout) {
  NcclIdExchangeOptions o;
  o.timeout = timeout;
  return ExchangeNcclId(client, table, 2, worker,
                        [run]() -> absl::StatusOr<std::string> { return RunId(run); },
                        o);
}

TEST_F(NcclIdExchangeTest, AWorkerAheadOfWorkerZeroNeverTakesAnOldId) {
  auto client = Client();
  // Worker 1 takes part in a run worker 0 never reached (it failed early).
  absl::StatusOr<std::string> got =
      Exchange(client.get(), "ahead", 1, 0, absl::Milliseconds(300));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(got.status().message().find("generation 1 in table ahead"),
            std::string::npos)
      << got.status();
  // The next run: worker 0 publishes generation 1 ...
  got = Exchange(client.get(), "ahead", 0, 1, absl::Seconds(10));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, RunId(1));
  // ... which worker 1, at generation 2, does not take for its own.
  got = Exchange(client.get(), "ahead", 1, 0, absl::Milliseconds(300));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(got.status().message().find("(it holds generation 1)"),
            std::string::npos)
      << got.status();
}

TEST_F(NcclIdExchangeTest, AWorkerBehindWorkerZeroIsRefused) {
  auto client = Client();
  ASSERT_TRUE(Exchange(client.get(), "behind", 0, 1, absl::Seconds(10)).ok());
  ASSERT_TRUE(Exchange(client.get(), "behind", 0, 2, absl::Seconds(10)).ok());
  const absl::StatusOr<std::string> got =
      Exchange(client.get(), "behind", 1, 0, absl::Seconds(10));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(got.status().message().find(
                "holds generation 2 but worker 1 is at generation 1"),
            std::string::npos)
      << got.status();
}

TEST_F(NcclIdExchangeTest, BadArgumentsAreInvalid) {
  auto client = Client();
  auto make = []() -> absl::StatusOr<std::string> { return std::string(5, 'x'); };
  EXPECT_EQ(ExchangeNcclId(client.get(), "bad", 2, 2, make).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ExchangeNcclId(client.get(), "bad", 2, 0, make).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mim
